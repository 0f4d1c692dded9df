"""The service processes: payment, inventory and the order service each run in their own
process (and event loop), so one busy loop cannot slow the others down. The order service may
run as several worker processes (roles ``order-0``, ``order-1``, ...), sharing the policies'
state through Redis when the demo runs with ``--redis``.

Protocol (the parent's pipe in, a shared queue out):

* ``("setup", {...})`` -> the service starts on a fresh loopback port, answers
  ``("ready", role, port)``;
* ``("start", t0)`` -> the run's fault timeline starts at ``t0`` (``time.monotonic()``); the
  service reports ``("stats", role, snapshot)`` every 0.25 s;
* ``("stop",)`` -> ``("final", role, snapshot)``, then the server shuts down;
* ``("exit",)`` (or the pipe closing) ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

#: how often a service reports its counters
REPORT_EVERY = 0.25


def child_main(role: str, ctrl: Connection, out: Any) -> None:
    """Entry point of a service process (``multiprocessing`` target)."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # no GOAWAY chatter at shutdown
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_child(role, ctrl, out))


@dataclass
class LoopLag:
    """Measures how late the event loop wakes up (its responsiveness under CPU load)."""

    samples: list[float] = field(default_factory=list)
    every: float = 0.05

    async def run(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(self.every)
            self.samples.append(max(0.0, time.monotonic() - t0 - self.every))

    def p99(self) -> float:
        vals = sorted(self.samples)
        return vals[int(0.99 * (len(vals) - 1))] if vals else 0.0


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def serve_http(app: Any) -> tuple[Any, asyncio.Task[None], int]:
    """Serve an ASGI app with uvicorn on a fresh loopback port."""
    import uvicorn

    sock = _socket()
    config = uvicorn.Config(
        app,
        log_level="error",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
        timeout_keep_alive=60,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    return server, task, int(sock.getsockname()[1])


class _Service:
    """One run of one service: built on ``setup``, torn down on ``stop``."""

    port = 0

    def start(self, t0: float) -> None:
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any]:
        raise NotImplementedError

    def final(self) -> dict[str, Any]:
        return self.snapshot()

    async def stop(self) -> None:
        raise NotImplementedError


class _Payment(_Service):
    async def setup(self, resilient: bool, duration: float, timeline: Any) -> None:
        from .faults import FaultPlan
        from .services import PaymentStats, start_payment

        self.plan = FaultPlan(duration, seed=1, timeline=timeline)
        self.stats = PaymentStats()
        self.server, self.port = await start_payment(self.plan, self.stats, resilient)

    def start(self, t0: float) -> None:
        self.plan.started = t0

    def snapshot(self) -> dict[str, Any]:
        return self.stats.snapshot()

    def final(self) -> dict[str, Any]:
        return {**self.stats.snapshot(), "charged": self.stats.charged()}

    async def stop(self) -> None:
        await self.server.stop(None)


class _Inventory(_Service):
    async def setup(self, resilient: bool, duration: float, timeline: Any) -> None:
        from .faults import FaultPlan
        from .services import inventory_app

        self.plan = FaultPlan(duration, seed=2, timeline=timeline)
        self.server, self.task, self.port = await serve_http(inventory_app(self.plan))

    def start(self, t0: float) -> None:
        self.plan.started = t0

    def snapshot(self) -> dict[str, Any]:
        return {}

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


class _Order(_Service):
    async def setup(
        self,
        resilient: bool,
        duration: float,
        payment_port: int,
        inventory_port: int,
        rate: float,
        worker: int = 0,
        workers: int = 1,
        redis: str | None = None,
        prefix: str = "storefront",
    ) -> None:
        import resilience as rs

        from .services import OrderStats, order_app

        self.stats = OrderStats()
        self.lag = LoopLag()
        # one store per worker process, the same prefix in every worker: shared state
        self.store = None if redis is None else rs.RedisStore.from_url(redis, prefix=prefix)
        # the live dashboard of this worker's policies (with Redis: of every worker's, each
        # publishing its snapshot to the store)
        live = rs.instrumentation.Live(instance=f"order-{worker}") if resilient else None
        fleet = None
        self.publisher: Any = None
        if live is not None and self.store is not None:
            self.publisher = live.publish(self.store)
            fleet = rs.instrumentation.Fleet(self.store)
        app, self.close = order_app(
            payment_port=payment_port,
            inventory_url=f"http://127.0.0.1:{inventory_port}",
            stats=self.stats,
            resilient=resilient,
            entry_rate=rate * 2.5,
            store=self.store,
            worker=worker,
            workers=workers,
            live=live,
            dashboard=fleet,
        )
        self.server, self.task, self.port = await serve_http(app)
        self.lag_task = asyncio.ensure_future(self.lag.run())

    def start(self, t0: float) -> None:
        self.stats.started = t0
        self.lag.samples.clear()

    def snapshot(self) -> dict[str, Any]:
        return {**self.stats.snapshot(), "loop_lag_p99": self.lag.p99()}

    def final(self) -> dict[str, Any]:
        return {**self.snapshot(), "created_keys": list(self.stats.created)}

    async def stop(self) -> None:
        self.lag_task.cancel()
        self.server.should_exit = True
        await self.task
        await self.close()
        if self.publisher is not None:
            self.publisher.stop()
        if self.store is not None:
            await self.store.aclose()
            self.store.close()


_ROLES: dict[str, type[Any]] = {"payment": _Payment, "inventory": _Inventory, "order": _Order}


async def _child(role: str, ctrl: Connection, out: Any) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def read() -> None:  # a thread: Connection.recv blocks
        while True:
            try:
                msg = ctrl.recv()
            except (EOFError, OSError):
                msg = ("exit",)
            loop.call_soon_threadsafe(inbox.put_nowait, msg)
            if msg[0] == "exit":
                return

    threading.Thread(target=read, daemon=True).start()
    while True:
        msg = await inbox.get()
        if msg[0] == "exit":
            return
        if msg[0] != "setup":
            continue
        service = _ROLES[role.partition("-")[0]]()
        await service.setup(**msg[1])
        out.put(("ready", role, service.port))
        msg = await inbox.get()
        if msg[0] != "start":
            await service.stop()
            return
        service.start(msg[1])

        async def report(service: Any = service) -> None:
            while True:
                await asyncio.sleep(REPORT_EVERY)
                out.put(("stats", role, service.snapshot()))

        reporter = asyncio.ensure_future(report())
        msg = await inbox.get()
        reporter.cancel()
        out.put(("final", role, service.final()))
        await service.stop()
        out.put(("stopped", role, None))
        if msg[0] == "exit":
            return
