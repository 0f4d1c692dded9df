"""The storefront demo: an order service calling payment (gRPC) and inventory (HTTP) under faults.

    python -m examples.storefront            # two runs of ~16 s: without, then with policies
    python -m examples.storefront --short    # two runs of ~10 s (CI)

Each service runs in its own process on loopback (spawned once, reused by both runs): grpc.aio
serves the payment service (a processor with a finite worker pool), uvicorn the inventory
service and the order service (Starlette + the toolkit's ASGI middlewares). This process is the
load generator: it posts orders with an ``Idempotency-Key`` and, like real clients, retries
timeouts and 5xx with the same key. The faults (``faults.TIMELINE``) are the same in both runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import queue
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .faults import SHORT_TIMELINE, TIMELINE, Fault, FaultPlan
from .loadgen import Client, ClientError
from .workers import LoopLag, child_main

CLIENT_TIMEOUT = 2.0  # seconds a client waits for one answer
CLIENT_ATTEMPTS = 4
CLIENT_MAX_BACKOFF = 1.5  # seconds: the longest Retry-After a client honours
ROLES = ("payment", "inventory", "order")


@dataclass
class Outcomes:
    """What the load generator saw: one final outcome per order."""

    sent: int = 0
    ok: int = 0  # 201, full answer
    degraded: int = 0  # 201 on the inventory fallback (stock not checked live)
    shed: int = 0  # the last answer was a 429 from the entry rate limit
    failed: int = 0  # an error, or no answer, after every attempt
    client_retries: int = 0
    shed_responses: int = 0  # every 429 answer, retried or not
    outcome: dict[str, str] = field(default_factory=dict)  # idempotency key -> final outcome
    latencies: list[float] = field(default_factory=list)
    recent: list[tuple[float, float]] = field(default_factory=list)  # (end time, latency)

    @property
    def done(self) -> int:
        return self.ok + self.degraded + self.shed + self.failed

    def percentile(self, q: float, values: list[float] | None = None) -> float | None:
        vals = sorted(self.latencies if values is None else values)
        if not vals:
            return None
        return vals[min(len(vals) - 1, max(0, round(q / 100 * len(vals)) - 1))]


@dataclass
class Result:
    name: str
    outcomes: Outcomes
    payment: dict[str, Any]
    order: dict[str, Any]
    client_lag_p99: float

    def numbers(self) -> dict[str, Any]:
        o = self.outcomes
        return {
            "orders": o.sent,
            "success": o.ok,
            "degraded": o.degraded,
            "shed": o.shed,
            "shed_responses": o.shed_responses,
            "failed": o.failed,
            "p50_ms": round(1000 * (o.percentile(50) or 0)),
            "p99_ms": round(1000 * (o.percentile(99) or 0)),
            "duplicate_charges": self.payment.get("duplicate_charges", 0),
            "charged_but_failed": sum(
                o.outcome.get(k) in ("failed", "shed") for k in self.payment.get("charged", ())
            ),
            "charges": self.payment.get("charges", 0),
            "payment_backlog_peak": self.payment.get("peak_pending", 0),
            "order_queue_peak": self.order.get("peak_queued", 0),
            "client_retries": o.client_retries,
            "service_retries": self.order.get("retries", 0),
            "breaker_transitions": len(self.order.get("transitions", [])),
            "order_loop_lag_p99_ms": round(1000 * self.order.get("loop_lag_p99", 0.0)),
            "client_loop_lag_p99_ms": round(1000 * self.client_lag_p99),
        }

    def rows(self) -> dict[str, str]:
        n = self.numbers()
        total = max(1, n["orders"])

        def share(k: str) -> str:
            return f"{n[k]} ({100 * n[k] / total:.1f}%)"

        return {
            "orders": str(n["orders"]),
            "success": share("success"),
            "degraded (fallback)": share("degraded"),
            "shed (429)": share("shed"),
            "429 answers": str(n["shed_responses"]),
            "failed": share("failed"),
            "p50 latency": f"{n['p50_ms']} ms",
            "p99 latency": f"{n['p99_ms']} ms",
            "duplicate charges": str(n["duplicate_charges"]),
            "charged, told failed": str(n["charged_but_failed"]),
            "payment backlog peak": str(n["payment_backlog_peak"]),
            "order queue peak": str(n["order_queue_peak"]),
            "client retries": str(n["client_retries"]),
            "service retries": str(n["service_retries"]),
            "breaker transitions": str(n["breaker_transitions"]),
            "loop lag p99 (order)": f"{n['order_loop_lag_p99_ms']} ms",
        }


async def _client_order(http: Client, out: Outcomes, rng: random.Random) -> None:
    key = str(uuid.UUID(int=rng.getrandbits(128)))
    order = {"sku": rng.choice(["pear", "plum", "fig"]), "amount": rng.randint(5, 90)}
    body = json.dumps(order).encode()
    headers = {"idempotency-key": key, "request-timeout": str(CLIENT_TIMEOUT)}
    t0 = time.monotonic()
    status = "failed"
    try:
        for attempt in range(CLIENT_ATTEMPTS):
            if attempt:
                out.client_retries += 1
            try:
                r = await http.post("/orders", body, headers, limit=CLIENT_TIMEOUT)
            except ClientError:
                await asyncio.sleep(0.1 * (attempt + 1))
                continue
            if r.status == 201:
                status = "degraded" if r.json().get("degraded") else "ok"
                break
            if r.status in (409, 425, 429) or r.status >= 500:
                # like real clients: honour Retry-After (capped), else a short backoff
                status = "shed" if r.status == 429 else "failed"
                out.shed_responses += r.status == 429
                delay = float(r.headers.get("retry-after", 0.1 * (attempt + 1)))
                await asyncio.sleep(min(delay, CLIENT_MAX_BACKOFF))
                continue
            status = "failed"
            break
    finally:  # cancelled at the end of the run: counted as failed (no answer)
        latency = time.monotonic() - t0
        setattr(out, status, getattr(out, status) + 1)
        out.outcome[key] = status
        out.latencies.append(latency)
        out.recent.append((time.monotonic(), latency))


class Services:
    """The three service processes and the messages they send back."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.out: Any = ctx.Queue()
        self.pipes: dict[str, Any] = {}
        self.procs: list[Any] = []
        for role in ROLES:
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=child_main, args=(role, child, self.out), name=role, daemon=True
            )
            proc.start()
            self.pipes[role] = parent
            self.procs.append(proc)
        self.latest: dict[str, dict[str, Any]] = {role: {} for role in ROLES}
        self.got: dict[tuple[str, str], Any] = {}

    def send(self, role: str, *msg: Any) -> None:
        self.pipes[role].send(msg)

    def pump(self) -> None:
        while True:
            try:
                kind, role, data = self.out.get_nowait()
            except queue.Empty:
                return
            if kind in ("stats", "final"):
                self.latest[role] = data
            self.got[(kind, role)] = data

    async def expect(self, kind: str, roles: tuple[str, ...], within: float = 60.0) -> list[Any]:
        deadline = time.monotonic() + within
        while not all((kind, r) in self.got for r in roles):
            if time.monotonic() > deadline or not all(p.is_alive() for p in self.procs):
                raise RuntimeError(f"the {', '.join(roles)} service(s) did not answer {kind!r}")
            await asyncio.sleep(0.02)
            self.pump()
        return [self.got.pop((kind, r)) for r in roles]

    def close(self) -> None:
        for role in ROLES:
            with contextlib.suppress(OSError):
                self.send(role, "exit")
        for proc in self.procs:
            proc.join(timeout=3)
            if proc.is_alive():
                proc.terminate()


def _view(name: str, plan: FaultPlan, out: Outcomes, services: Services) -> Any:
    from rich.table import Table

    now = time.monotonic()
    window = [lat for end, lat in out.recent if end > now - 2.0]
    p99 = out.percentile(99, window)
    order, payment = services.latest["order"], services.latest["payment"]
    table = Table(title=f"storefront: {name}", min_width=72)
    for col in (
        "elapsed",
        "faults now",
        "orders",
        "ok",
        "degraded",
        "shed",
        "failed",
        "p99 (2 s)",
        "breakers",
        "payment backlog",
        "dup. charges",
    ):
        table.add_column(col)
    faults = ", ".join(f.label for f in plan.active()) or "none"
    breakers = ", ".join(f"{k}:{v}" for k, v in sorted(order.get("breakers", {}).items())) or "-"
    table.add_row(
        f"{max(0.0, plan.elapsed()):4.1f}/{plan.duration:.0f}s",
        faults,
        str(out.sent),
        str(out.ok),
        str(out.degraded),
        str(out.shed),
        str(out.failed),
        "-" if p99 is None else f"{p99 * 1000:.0f} ms",
        breakers,
        str(payment.get("pending", 0)),
        str(payment.get("duplicate_charges", 0)),
    )
    return table


async def run_once(
    services: Services,
    name: str,
    resilient: bool,
    timeline: tuple[Fault, ...],
    duration: float,
    rate: float,
    live: bool,
) -> Result:
    for role in ("payment", "inventory"):
        services.send(
            role, "setup", {"resilient": resilient, "duration": duration, "timeline": timeline}
        )
    payment_port, inventory_port = await services.expect("ready", ("payment", "inventory"))
    services.send(
        "order",
        "setup",
        {
            "resilient": resilient,
            "duration": duration,
            "payment_port": payment_port,
            "inventory_port": inventory_port,
            "rate": rate,
        },
    )
    (order_port,) = await services.expect("ready", ("order",))
    out = Outcomes()
    arrivals, orders = random.Random(42), random.Random(7)
    tasks: set[asyncio.Task[None]] = set()
    lag = LoopLag()
    lag_task = asyncio.ensure_future(lag.run())
    t0 = time.monotonic() + 0.1
    plan = FaultPlan(duration, started=t0, timeline=timeline)
    for role in ROLES:
        services.send(role, "start", t0)
    display: Any = None
    if live:
        from rich.live import Live

        display = Live(_view(name, plan, out, services), refresh_per_second=8, transient=False)
        display.start()
    last_view = last_print = 0.0
    http = Client("127.0.0.1", order_port)
    try:
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        next_at = time.monotonic()
        while plan.elapsed() < duration:
            next_at += arrivals.expovariate(rate * plan.load_factor())
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            out.sent += 1
            task = asyncio.ensure_future(_client_order(http, out, orders))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            now = plan.elapsed()
            if display is not None:
                if now - last_view >= 0.125:
                    last_view = now
                    services.pump()
                    display.update(_view(name, plan, out, services))
            elif now - last_print >= max(1.0, duration / 8):
                last_print = now
                faults = ", ".join(f.label for f in plan.active()) or "no faults"
                print(
                    f"  [{name}] {now:5.1f}s  sent={out.sent} ok={out.ok} "
                    f"degraded={out.degraded} shed={out.shed} failed={out.failed}  ({faults})",
                    flush=True,
                )
        # the clients still waiting get the time one order may take, then count as failed
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLIENT_TIMEOUT * CLIENT_ATTEMPTS + 1)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    finally:
        await http.aclose()
    lag_task.cancel()
    services.pump()
    if display is not None:
        display.update(_view(name, plan, out, services))
        display.stop()
    # late side effects: the naive order service keeps charging after its clients gave up
    await asyncio.sleep(0.5)
    for role in ROLES:
        services.send(role, "stop")
    payment, _, order = await services.expect("final", ROLES)
    await services.expect("stopped", ROLES)
    return Result(name, out, payment, order, lag.p99())


def summary(results: list[Result]) -> str:
    rows = [r.rows() for r in results]
    width = max(18, *(len(r.name) + 2 for r in results))
    lines = [" " * 22 + "".join(f"{r.name:>{width}}" for r in results)]
    lines.extend(
        f"{label:<22}" + "".join(f"{row[label]:>{width}}" for row in rows) for label in rows[0]
    )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[Result]:
    services = Services()
    try:
        results = []
        for name, resilient in (("without policies", False), ("with policies", True)):
            print(
                f"\n=== run: {name} ({args.duration:.0f} s, {args.rate:.0f} orders/s) ===",
                flush=True,
            )
            results.append(
                await run_once(
                    services, name, resilient, args.timeline, args.duration, args.rate, args.live
                )
            )
        return results
    finally:
        services.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="storefront", description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="two 10 s runs (CI)")
    parser.add_argument("--duration", type=float, help="seconds per run (default 16)")
    parser.add_argument("--rate", type=float, default=30.0, help="orders per second")
    parser.add_argument("--no-live", dest="live", action="store_false", help="plain output")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    args.timeline = SHORT_TIMELINE if args.short else TIMELINE
    if args.duration is None:
        args.duration = 10.0 if args.short else 16.0
    if args.live and not sys.stdout.isatty():
        args.live = False
    print("fault timeline (same for both runs):")
    for f in args.timeline:
        print(f"  {f.start:5.1f}-{f.end:5.1f} s  {f.label}")
    started = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        results = asyncio.run(main_async(args))
        print(f"\n=== summary ({time.monotonic() - started:.0f} s) ===")
        print(summary(results))
        print(
            "\nsuccess: a full answer; degraded: an answer on the inventory fallback (stock not "
            "checked live);\nshed: refused at once with 429; failed: an error or no answer after "
            f"{CLIENT_ATTEMPTS} attempts.\nLatencies are per order, over every order (all "
            "attempts, whatever the outcome)."
        )
        transitions = results[-1].order.get("transitions", [])
        if transitions:
            print("\nbreaker transitions (with policies):")
            for t, breaker, frm, to in transitions:
                print(f"  {t:6.2f} s  {breaker}: {frm} -> {to}")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({r.name: r.numbers() for r in results}, fh, indent=2)
        return 0
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
