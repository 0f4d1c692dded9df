"""The storefront demo: an order service calling payment (gRPC) and inventory (HTTP) under faults.

    python -m examples.storefront            # two runs of ~17 s: without, then with policies
    python -m examples.storefront --short    # two runs of ~7 s (CI)

Everything runs in this process on loopback: uvicorn serves the order service (Starlette + the
toolkit's ASGI middlewares) and the inventory service, grpc.aio the payment service. A load
generator posts orders with an ``Idempotency-Key`` and, like real clients, retries timeouts and
5xx with the same key. The faults (``faults.TIMELINE``) are the same in both runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from .faults import TIMELINE, FaultPlan
from .services import Stats, inventory_app, order_app, start_payment

CLIENT_TIMEOUT = 2.0  # seconds a client waits for one answer
CLIENT_ATTEMPTS = 4


@dataclass
class Outcomes:
    """What the load generator saw."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    shed: int = 0
    degraded: int = 0
    client_retries: int = 0
    latencies: list[float] = field(default_factory=list)
    recent: list[tuple[float, float]] = field(default_factory=list)  # (end time, latency)

    def percentile(self, q: float, values: list[float] | None = None) -> float | None:
        vals = sorted(self.latencies if values is None else values)
        if not vals:
            return None
        return vals[min(len(vals) - 1, max(0, round(q / 100 * len(vals)) - 1))]


@dataclass
class Result:
    name: str
    outcomes: Outcomes
    stats: Stats

    def rows(self) -> dict[str, str]:
        o, s = self.outcomes, self.stats
        done = o.ok + o.failed + o.shed
        p50, p99 = o.percentile(50), o.percentile(99)
        return {
            "orders": str(o.sent),
            "success rate": f"{100 * o.ok / done:.1f}%" if done else "-",
            "p50 latency": f"{p50 * 1000:.0f} ms" if p50 is not None else "-",
            "p99 latency": f"{p99 * 1000:.0f} ms" if p99 is not None else "-",
            "duplicate charges": str(s.duplicate_charges),
            "client retries": str(o.client_retries),
            "service retries": str(s.retries),
            "breaker transitions": str(len(s.transitions)),
            "shed load (429)": str(o.shed),
            "degraded (fallback)": str(s.degraded),
            "failed": str(o.failed),
        }


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def _serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    sock = _socket()
    config = uvicorn.Config(app, log_level="error", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    host, port = sock.getsockname()[:2]
    return server, task, f"http://{host}:{port}"


async def _client_order(
    http: httpx.AsyncClient, url: str, out: Outcomes, rng: random.Random
) -> None:
    key = str(uuid.UUID(int=rng.getrandbits(128)))
    body = {"sku": rng.choice(["pear", "plum", "fig"]), "amount": rng.randint(5, 90)}
    headers = {"idempotency-key": key, "request-timeout": str(CLIENT_TIMEOUT)}
    t0 = time.monotonic()
    status = "failed"
    for attempt in range(CLIENT_ATTEMPTS):
        if attempt:
            out.client_retries += 1
        try:
            r = await http.post(url, json=body, headers=headers, timeout=CLIENT_TIMEOUT)
        except httpx.HTTPError:
            await asyncio.sleep(0.1 * (attempt + 1))
            continue
        if r.status_code == 201:
            status = "ok"
            out.degraded += bool(r.json().get("degraded"))
            break
        if r.status_code == 429:
            status = "shed"
            break
        if r.status_code in (409, 425) or r.status_code >= 500:
            delay = float(r.headers.get("retry-after", 0.1 * (attempt + 1)))
            await asyncio.sleep(min(delay, 1.0))
            continue
        break
    latency = time.monotonic() - t0
    setattr(out, status, getattr(out, status) + 1)
    out.latencies.append(latency)
    out.recent.append((time.monotonic(), latency))


def _view(name: str, plan: FaultPlan, out: Outcomes, stats: Stats) -> Any:
    from rich.table import Table

    now = time.monotonic()
    window = [lat for end, lat in out.recent if end > now - 2.0]
    p99 = out.percentile(99, window)
    table = Table(title=f"storefront: {name}", min_width=72)
    table.add_column("elapsed")
    table.add_column("faults now")
    table.add_column("orders")
    table.add_column("ok")
    table.add_column("failed")
    table.add_column("shed")
    table.add_column("p99 (2 s)")
    table.add_column("breakers")
    table.add_column("dup. charges")
    faults = ", ".join(f.label for f in plan.active()) or "none"
    breakers = ", ".join(f"{k}:{v}" for k, v in sorted(stats.breakers.items())) or "-"
    table.add_row(
        f"{plan.elapsed():4.1f}/{plan.duration:.0f}s",
        faults,
        str(out.sent),
        str(out.ok),
        str(out.failed),
        str(out.shed),
        "-" if p99 is None else f"{p99 * 1000:.0f} ms",
        breakers,
        str(stats.duplicate_charges),
    )
    return table


async def run_once(name: str, resilient: bool, duration: float, rate: float, live: bool) -> Result:
    plan = FaultPlan(duration)
    stats = Stats()
    payment, payment_port = await start_payment(plan, stats, resilient)
    inv_server, inv_task, inv_url = await _serve(inventory_app(plan))
    app, close_app = order_app(
        payment_port=payment_port,
        inventory_url=inv_url,
        stats=stats,
        resilient=resilient,
        entry_rate=rate * 2.5,
    )
    order_server, order_task, order_url = await _serve(app)
    out = Outcomes()
    rng = random.Random(42)
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    tasks: set[asyncio.Task[None]] = set()
    plan.restart()
    stats.started = plan.started
    display: Any = None
    if live:
        from rich.live import Live

        display = Live(_view(name, plan, out, stats), refresh_per_second=8, transient=False)
        display.start()
    last_print = 0.0
    async with httpx.AsyncClient(limits=limits) as http:
        next_at = time.monotonic()
        while plan.elapsed() < duration:
            next_at += rng.expovariate(rate * plan.load_factor())
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            out.sent += 1
            task = asyncio.ensure_future(_client_order(http, f"{order_url}/orders", out, rng))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if display is not None:
                display.update(_view(name, plan, out, stats))
            elif plan.elapsed() - last_print >= max(1.0, duration / 8):
                last_print = plan.elapsed()
                faults = ", ".join(f.label for f in plan.active()) or "no faults"
                print(
                    f"  [{name}] {last_print:5.1f}s  sent={out.sent} ok={out.ok} "
                    f"failed={out.failed} shed={out.shed}  ({faults})",
                    flush=True,
                )
        if tasks:
            await asyncio.wait(tasks, timeout=CLIENT_TIMEOUT * CLIENT_ATTEMPTS + 2)
    if display is not None:
        display.update(_view(name, plan, out, stats))
        display.stop()
    # late side effects: the naive order service keeps charging after its clients gave up
    await asyncio.sleep(0.5)
    for server in (order_server, inv_server):
        server.should_exit = True
    await asyncio.gather(order_task, inv_task)
    await close_app()
    await payment.stop(None)
    return Result(name, out, stats)


def summary(results: list[Result]) -> str:
    rows = [r.rows() for r in results]
    width = max(16, *(len(r.name) + 2 for r in results))
    lines = [" " * 22 + "".join(f"{r.name:>{width}}" for r in results)]
    lines.extend(
        f"{label:<22}" + "".join(f"{row[label]:>{width}}" for row in rows) for label in rows[0]
    )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[Result]:
    results = []
    for name, resilient in (("without policies", False), ("with policies", True)):
        print(
            f"\n=== run: {name} ({args.duration:.0f} s, {args.rate:.0f} orders/s) ===", flush=True
        )
        results.append(await run_once(name, resilient, args.duration, args.rate, args.live))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="storefront", description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="two 7 s runs (CI)")
    parser.add_argument("--duration", type=float, help="seconds per run (default 17)")
    parser.add_argument("--rate", type=float, default=30.0, help="orders per second")
    parser.add_argument("--no-live", dest="live", action="store_false", help="plain output")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 7.0 if args.short else 17.0
    if args.live and not sys.stdout.isatty():
        args.live = False
    print("fault timeline (same for both runs):")
    for f in TIMELINE:
        print(f"  {f.start * args.duration:5.1f}-{f.end * args.duration:5.1f} s  {f.label}")
    started = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        results = asyncio.run(main_async(args))
        print(f"\n=== summary ({time.monotonic() - started:.0f} s) ===")
        print(summary(results))
        transitions = results[-1].stats.transitions
        if transitions:
            print("\nbreaker transitions (with policies):")
            for t, breaker, frm, to in transitions:
                print(f"  {t:6.2f} s  {breaker}: {frm} -> {to}")
        return 0
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
