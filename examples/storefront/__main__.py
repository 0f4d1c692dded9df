"""The storefront demo: an order service calling payment (gRPC) and inventory (HTTP) under faults.

    python -m examples.storefront            # two runs of ~16 s: without, then with policies
    python -m examples.storefront --short    # two runs of ~10 s (CI)
    python -m examples.storefront --redis redis://127.0.0.1:6379/0   # 2 order workers, shared

Each service runs in its own process on loopback (spawned once, reused by both runs): grpc.aio
serves the payment service (a processor with a finite worker pool), uvicorn the inventory
service and the order service (Starlette + the toolkit's ASGI middlewares). This process is the
load generator: it posts orders with an ``Idempotency-Key`` and, like real clients, retries
timeouts and 5xx with the same key. The faults (``faults.TIMELINE``) are the same in both runs.

With ``--redis URL`` the order service runs as ``--workers N`` processes (default 2) behind a
round-robin balancer (the load generator sends each request to the next worker, so a retry
often lands on another worker than the first attempt); with several workers the balancer
also loses 3% of the answers (``--lost-answers``), so clients retry orders that were already
done, like after a reset connection. Each worker builds its own
``RedisStore`` with the same per-run key prefix and passes it to the entry rate limiter (one
fleet-wide limit), the circuit breakers (one circuit for the fleet) and the idempotency
middleware (a duplicate is replayed by whichever worker it reaches). Without ``--redis`` the
policies keep their state in memory (one worker unless ``--workers`` says otherwise).

After the runs, the payment service notifies the merchant of the charges it made through an
``rs.delivery.Outbox`` (``notifications.py``, in Redis with ``--redis``): delivered, then
retried and dead-lettered while the merchant is down, then requeued and delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import queue
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from . import notifications
from .faults import SHORT_TIMELINE, TIMELINE, Fault, FaultPlan
from .loadgen import Client, ClientError
from .workers import LoopLag, child_main

CLIENT_TIMEOUT = 2.0  # seconds a client waits for one answer
CLIENT_ATTEMPTS = 4
CLIENT_MAX_BACKOFF = 1.5  # seconds: the longest Retry-After a client honours
NOTIFICATIONS = 40  # charges notified to the merchant after the runs (examples/.../notifications)


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
    lost_answers: int = 0  # answers the balancer lost on the way back (the client retries)
    replays: int = 0  # 201 answers replayed from an idempotency record
    cross_worker_replays: int = 0  # ... by another worker than the one that ran the order
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


def merge_orders(workers: list[dict[str, Any]]) -> dict[str, Any]:
    """One view of the order service from its workers' snapshots (fleet-wide numbers)."""
    transitions = sorted(
        (*t, i) for i, w in enumerate(workers) for t in w.get("transitions", [])
    )  # (time, breaker, from, to, worker)
    # a breaker's state: the fleet's latest transition (the one shared circuit with Redis)
    breakers = {breaker: to for _, breaker, _, to, _ in transitions}
    return {
        "retries": sum(w.get("retries", 0) for w in workers),
        "transitions": transitions,
        "breakers": breakers,
        "degraded": sum(w.get("degraded", 0) for w in workers),
        "peak_queued": max((w.get("peak_queued", 0) for w in workers), default=0),
        "created": [w.get("created", 0) for w in workers],
        # orders whose handler ran to a 201 more than once (on any workers): the duplicates
        # that idempotency at the order service should have replayed instead
        "completed_twice": sum(
            n - 1 for n in Counter(k for w in workers for k in w.get("created_keys", ())).values()
        ),
        "store_errors": sum(w.get("store_errors", 0) for w in workers),
        "loop_lag_p99": max((w.get("loop_lag_p99", 0.0) for w in workers), default=0.0),
    }


@dataclass
class Result:
    name: str
    outcomes: Outcomes
    payment: dict[str, Any]
    order: dict[str, Any]
    client_lag_p99: float
    store: str = "memory"
    workers: int = 1

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
            "store": self.store,
            "workers": self.workers,
            "orders_by_worker": self.order.get("created", []),
            "lost_answers": o.lost_answers,
            "replays": o.replays,
            "orders_completed_twice": self.order.get("completed_twice", 0),
            "cross_worker_replays": o.cross_worker_replays,
            "store_errors": self.order.get("store_errors", 0),
        }

    def rows(self) -> dict[str, str]:
        n = self.numbers()
        total = max(1, n["orders"])

        def share(k: str) -> str:
            return f"{n[k]} ({100 * n[k] / total:.1f}%)"

        rows = {
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
        if self.workers > 1:
            rows["orders run, per worker"] = " / ".join(map(str, n["orders_by_worker"]))
            rows["answers lost (LB)"] = str(n["lost_answers"])
            rows["replayed (201)"] = str(n["replays"])
            rows["  by another worker"] = str(n["cross_worker_replays"])
            rows["orders run twice"] = str(n["orders_completed_twice"])
            rows["store errors"] = str(n["store_errors"])
        return rows


class Balancer:
    """Round-robin over the order workers, per request (so retries move between workers)."""

    def __init__(self, ports: list[int], lose: float = 0.0, seed: int = 3) -> None:
        self.clients = [Client("127.0.0.1", port) for port in ports]
        self.turn = itertools.cycle(range(len(ports)))
        self.lose, self.rng = lose, random.Random(seed)

    def lost(self) -> bool:
        """Whether this answer is lost on its way back (a reset connection at the balancer)."""
        return self.lose > 0 and self.rng.random() < self.lose

    def pick(self) -> tuple[int, Client]:
        i = next(self.turn)
        return i, self.clients[i]

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


async def _client_order(lb: Balancer, out: Outcomes, rng: random.Random) -> None:
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
            worker, http = lb.pick()
            try:
                r = await http.post("/orders", body, headers, limit=CLIENT_TIMEOUT)
            except ClientError:
                await asyncio.sleep(0.1 * (attempt + 1))
                continue
            if lb.lost():  # the service answered (and may have charged); the client never knows
                out.lost_answers += 1
                await asyncio.sleep(0.1 * (attempt + 1))
                continue
            if r.status == 201:
                answer = r.json()
                status = "degraded" if answer.get("degraded") else "ok"
                if r.headers.get("idempotent-replayed") == "true":
                    out.replays += 1
                    out.cross_worker_replays += answer.get("worker", worker) != worker
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
    """The service processes (payment, inventory, the order workers) and their messages."""

    def __init__(self, workers: int = 1) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.out: Any = ctx.Queue()
        self.pipes: dict[str, Any] = {}
        self.procs: list[Any] = []
        self.orders = tuple(f"order-{i}" for i in range(workers))
        self.roles = ("payment", "inventory", *self.orders)
        for role in self.roles:
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=child_main, args=(role, child, self.out), name=role, daemon=True
            )
            proc.start()
            self.pipes[role] = parent
            self.procs.append(proc)
        self.latest: dict[str, dict[str, Any]] = {role: {} for role in self.roles}
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

    def order_view(self) -> dict[str, Any]:
        """The latest snapshots of the order workers, merged."""
        return merge_orders([self.latest[role] for role in self.orders])

    def close(self) -> None:
        for role in self.roles:
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
    order, payment = services.order_view(), services.latest["payment"]
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
    redis: str | None = None,
    prefix: str = "storefront",
    lose: float = 0.0,
) -> Result:
    for role in ("payment", "inventory"):
        services.send(
            role, "setup", {"resilient": resilient, "duration": duration, "timeline": timeline}
        )
    payment_port, inventory_port = await services.expect("ready", ("payment", "inventory"))
    workers = len(services.orders)
    for i, role in enumerate(services.orders):
        services.send(
            role,
            "setup",
            {
                "resilient": resilient,
                "duration": duration,
                "payment_port": payment_port,
                "inventory_port": inventory_port,
                "rate": rate,
                "worker": i,
                "workers": workers,
                "redis": redis,
                "prefix": prefix,
            },
        )
    order_ports = await services.expect("ready", services.orders)
    if resilient:  # the order service serves the live dashboard of its policies
        from .services import DASHBOARD_PATH

        shown = order_ports[:1] if redis else order_ports  # with Redis one shows the fleet
        for port in shown:
            print(
                f"  live dashboard (during this run): http://127.0.0.1:{port}{DASHBOARD_PATH}/",
                flush=True,
            )
    out = Outcomes()
    arrivals, orders = random.Random(42), random.Random(7)
    tasks: set[asyncio.Task[None]] = set()
    lag = LoopLag()
    lag_task = asyncio.ensure_future(lag.run())
    t0 = time.monotonic() + 0.1
    plan = FaultPlan(duration, started=t0, timeline=timeline)
    for role in services.roles:
        services.send(role, "start", t0)
    display: Any = None
    if live:
        from rich.live import Live

        display = Live(_view(name, plan, out, services), refresh_per_second=8, transient=False)
        display.start()
    last_view = last_print = 0.0
    lb = Balancer(order_ports, lose)
    try:
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        next_at = time.monotonic()
        while plan.elapsed() < duration:
            next_at += arrivals.expovariate(rate * plan.load_factor())
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            out.sent += 1
            task = asyncio.ensure_future(_client_order(lb, out, orders))
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
        await lb.aclose()
    lag_task.cancel()
    services.pump()
    if display is not None:
        display.update(_view(name, plan, out, services))
        display.stop()
    # late side effects: the naive order service keeps charging after its clients gave up
    await asyncio.sleep(0.5)
    for role in services.roles:
        services.send(role, "stop")
    payment, _, *order = await services.expect("final", services.roles)
    await services.expect("stopped", services.roles)
    store = ("redis" if redis is not None else "memory") if resilient else "none"
    return Result(name, out, payment, merge_orders(order), lag.p99(), store, workers)


#: One line per row of the summary (the per-worker rows appear with --workers > 1).
ROW_NOTES = {
    "orders": "orders the clients placed (the same arrival schedule in both runs)",
    "success": "orders answered 201 with the stock checked live",
    "degraded (fallback)": "orders answered 201 on the inventory fallback (stock not checked)",
    "shed (429)": f"orders whose last answer, after {CLIENT_ATTEMPTS} attempts, was a 429",
    "429 answers": "every 429 sent, counting those a client retried into a success",
    "failed": f"orders with an error or no answer at all after {CLIENT_ATTEMPTS} attempts",
    "p50 latency": "per order, from its first attempt to its last answer, whatever it was",
    "p99 latency": "the same, 99th percentile",
    "duplicate charges": "charges of an order already charged (a retried payment)",
    "charged, told failed": "orders charged whose client was told shed or failed",
    "payment backlog peak": "most calls inside the payment service at once (hung included)",
    "order queue peak": "most requests waiting for the order service's capacity at once",
    "client retries": "attempts after an order's first one, by the clients",
    "service retries": "retries of payment or inventory calls by the order service",
    "breaker transitions": "state changes of the order service's breakers (listed below)",
    "loop lag p99 (order)": "how late the order service's event loop woke up (its CPU load)",
    "orders run, per worker": "orders each order-service worker ran",
    "answers lost (LB)": "answers the load balancer dropped after the service had replied",
    "replayed (201)": "201 answers replayed from an Idempotency-Key record",
    "  by another worker": "of which by a worker other than the one that ran the order",
    "orders run twice": "orders whose handler completed on two workers",
    "store errors": "shared-store failures the policies fell back from",
}


def summary(results: list[Result]) -> str:
    rows = [r.rows() for r in results]
    width = max(18, *(len(r.name) + 2 for r in results))
    lines = [" " * 22 + "".join(f"{r.name:>{width}}" for r in results)]
    lines.extend(
        f"{label:<22}" + "".join(f"{row[label]:>{width}}" for row in rows) for label in rows[0]
    )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[Result]:
    services = Services(args.workers)
    try:
        results = []
        for name, resilient in (("without policies", False), ("with policies", True)):
            print(
                f"\n=== run: {name} ({args.duration:.0f} s, {args.rate:.0f} orders/s) ===",
                flush=True,
            )
            results.append(
                await run_once(
                    services,
                    name,
                    resilient,
                    args.timeline,
                    args.duration,
                    args.rate,
                    args.live,
                    args.redis,
                    args.prefix,
                    args.lose,
                )
            )
        return results
    finally:
        services.close()


def _redis_check(url: str) -> str | None:
    """``None`` if Redis answers PING at ``url``, else why not."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _redis_cleanup(url: str, prefix: str) -> int:
    """Delete this demo run's keys (every key the store wrote also has a TTL)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        return len(keys)
    except redis.RedisError:
        return 0
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="storefront", description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="two 10 s runs (CI)")
    parser.add_argument("--duration", type=float, help="seconds per run (default 16)")
    parser.add_argument("--rate", type=float, default=30.0, help="orders per second")
    parser.add_argument("--no-live", dest="live", action="store_false", help="plain output")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="share the policies' state through Redis (e.g. redis://127.0.0.1:6379/0)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="order-service worker processes (default: 2 with --redis, else 1)",
    )
    parser.add_argument(
        "--lost-answers",
        dest="lose",
        type=float,
        metavar="FRACTION",
        help="answers the balancer loses on the way back, so the client retries an order that "
        "was done (default: 0.03 with several workers, else 0)",
    )
    args = parser.parse_args(argv)
    if args.workers is None:
        args.workers = 2 if args.redis else 1
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if args.lose is None:
        args.lose = 0.03 if args.workers > 1 else 0.0
    if not 0 <= args.lose < 1:
        parser.error(f"--lost-answers must be in [0, 1), got {args.lose}")
    # a key prefix unique to this demo run: runs never see each other's limits or records
    args.prefix = f"storefront-{uuid.uuid4().hex[:12]}"
    if args.redis:
        if not args.redis.startswith(("redis://", "rediss://", "unix://")):
            parser.error(f"--redis must be a redis:// URL, got {args.redis!r}")
        problem = _redis_check(args.redis)
        if problem:
            print(f"storefront: cannot reach Redis at {args.redis}: {problem}", file=sys.stderr)
            return 2
        store = f"redis ({args.redis}, key prefix {args.prefix})"
    else:
        store = "in-memory (each process its own)"
    setup = f"store: {store}; order-service workers: {args.workers}"
    args.timeline = SHORT_TIMELINE if args.short else TIMELINE
    if args.duration is None:
        args.duration = 10.0 if args.short else 16.0
    if args.live and not sys.stdout.isatty():
        args.live = False
    print(setup)
    print("fault timeline (same for both runs):")
    for f in args.timeline:
        print(f"  {f.start:5.1f}-{f.end:5.1f} s  {f.label}")
    if args.lose:
        print(f"  whole run     balancer loses {100 * args.lose:g}% of answers (client retries)")
    started = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        try:
            results = asyncio.run(main_async(args))
            # the payment service notifies the merchant of each charge it made (with policies)
            charged = sorted(results[-1].payment.get("charged", ()))[:NOTIFICATIONS]
            print(f"\n=== merchant notifications: {len(charged)} charges, rs.delivery.Outbox ===")
            notified = notifications.run(charged, redis=args.redis, prefix=args.prefix)
        finally:
            if args.redis:
                _redis_cleanup(args.redis, args.prefix)
        print(f"\n=== summary ({time.monotonic() - started:.0f} s) ===")
        print(setup)
        print(summary(results))
        print("\nwhat the rows count:")
        for label, text in ROW_NOTES.items():
            if label in results[0].rows():
                print(f"  {label:<22}{text}")
        print(
            "\nmerchant notifications (the merchant down for the second half: retried, "
            "dead-lettered, requeued):"
        )
        for label, value in notified.items():
            print(f"  {label:28} {value}")
        transitions = results[-1].order.get("transitions", [])
        if transitions:
            print("\nbreaker transitions (with policies):")
            for t, breaker, frm, to, worker in transitions:
                by = f"  (worker {worker})" if args.workers > 1 else ""
                print(f"  {t:6.2f} s  {breaker}: {frm} -> {to}{by}")
        if args.json:
            with open(args.json, "w") as fh:
                numbers = {r.name: r.numbers() for r in results}
                json.dump({**numbers, "merchant notifications": notified}, fh, indent=2)
        return 0
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
