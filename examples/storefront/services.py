"""The three services: payment (gRPC), inventory (HTTP) and the order service (ASGI).

``resilient=False`` builds the naive versions (no timeouts, no retries, no breakers, no
idempotency); ``resilient=True`` the same code paths with the toolkit's policies.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import resilience as rs
from interceptors.asgi import (
    Dashboard,
    IdempotencyMiddleware,
    RateLimitMiddleware,
    ResilienceMiddleware,
)
from interceptors.grpc import AsyncResilienceClientInterceptor, AsyncResilienceServerInterceptor
from interceptors.httpx import AsyncResilientTransport, http_retry

from .faults import FaultPlan, ProcessorError, inventory_chaos, payment_chaos

CHARGE = "/shop.Payments/Charge"


class OrderStats:
    """What the order service saw (filled by the policies' events and the handlers)."""

    def __init__(self) -> None:
        self.retries = 0
        self.transitions: list[tuple[float, str, str, str]] = []
        self.breakers: dict[str, str] = {}
        self.degraded = 0
        self.queued = 0  # requests waiting for the service's capacity
        self.peak_queued = 0
        self.created: list[str] = []  # orders this worker's handler answered 201 (not replays)
        self.store_errors = 0  # shared-store failures the policies fell back from
        self.started = time.monotonic()

    def __call__(self, event: rs.events.Event) -> None:
        if isinstance(event, rs.events.RetryScheduled):
            self.retries += 1
        elif isinstance(event, rs.events.CircuitStateChanged):
            t = time.monotonic() - self.started
            self.transitions.append((t, event.policy, event.from_state, event.to_state))
            self.breakers[event.policy] = event.to_state
        elif isinstance(event, rs.events.StoreFailed):
            self.store_errors += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "retries": self.retries,
            "transitions": list(self.transitions),
            "breakers": dict(self.breakers),
            "degraded": self.degraded,
            "peak_queued": self.peak_queued,
            "created": len(self.created),
            "store_errors": self.store_errors,
        }


class PaymentStats:
    """The payment processor's books: who was charged how often, and its backlog."""

    def __init__(self) -> None:
        self.charges: Counter[str] = Counter()  # order id -> times charged
        self.duplicates = 0
        self.pending = 0  # calls inside the service (waiting for a worker, hung or working)
        self.peak_pending = 0
        self.abandoned = 0  # calls cancelled by their caller's deadline before they finished

    def charge(self, order_id: str) -> int:
        self.charges[order_id] += 1
        if self.charges[order_id] > 1:
            self.duplicates += 1
        return sum(self.charges.values())

    def snapshot(self) -> dict[str, Any]:
        return {
            "charges": sum(self.charges.values()),
            "duplicate_charges": self.duplicates,
            "pending": self.pending,
            "peak_pending": self.peak_pending,
            "abandoned": self.abandoned,
        }

    def charged(self) -> list[str]:
        return list(self.charges)


# -- payment: gRPC over raw bytes (generic handlers, no protoc) ----------------------------------
#: the processor's capacity: this many calls to the card network at once (~100 ms each when
#: healthy, so ~60 charges/s, twice the normal traffic); further calls queue for a free worker.
PAYMENT_WORKERS = 6


async def start_payment(plan: FaultPlan, stats: PaymentStats, resilient: bool) -> tuple[Any, int]:
    """The payment service: a finite worker pool in front of the (faulty) card network.

    The faults are ``rs.chaos`` policies around the steps of a charge (see
    :func:`.faults.payment_chaos`): network congestion before the call reaches a worker, an
    outage that hangs the worker, a warming-up card network that is slow and fails."""
    workers = asyncio.Semaphore(PAYMENT_WORKERS)
    chaos = payment_chaos(plan)

    async def idle() -> None:
        return None

    async def charge_card(order_id: str) -> int:
        return stats.charge(order_id)  # the side effect

    congestion = chaos.congestion.wrap(idle, operation="payment transit")
    outage = chaos.outage.wrap(idle, operation="payment processor")
    card_network = chaos.card_network.wrap(charge_card, operation="card network")

    async def charge(request: bytes, context: Any) -> bytes:
        stats.pending += 1
        stats.peak_pending = max(stats.peak_pending, stats.pending)
        try:
            await congestion()
            async with workers:
                # outage: the call hangs (holding its worker) until the network is back, then
                # runs; the caller's deadline (published by the interceptor) ends it first
                await outage()
                await asyncio.sleep(plan.service_time("payment"))
                order = json.loads(request)
                try:
                    n = await card_network(order["order_id"])
                except ProcessorError:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "payment processor error")
                return json.dumps({"charge_id": f"ch-{n}"}).encode()
        except asyncio.CancelledError:
            stats.abandoned += 1
            raise
        finally:
            stats.pending -= 1

    interceptors = []
    if resilient:
        # the payment team's own protection: at most one charge per idempotency-key
        interceptors.append(
            AsyncResilienceServerInterceptor(pipeline=None, idempotency=rs.IdempotencyRecords())
        )
    server = grpc.aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "shop.Payments", {"Charge": grpc.unary_unary_rpc_method_handler(charge)}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


# -- inventory: plain HTTP (raw ASGI) -------------------------------------------------------------
def inventory_app(plan: FaultPlan) -> Callable[..., Awaitable[None]]:
    """The inventory service; its error bursts are ``rs.chaos.Outcome`` policies that answer a
    503 instead of the stock lookup (see :func:`.faults.inventory_chaos`)."""

    async def stock(sku: str) -> tuple[int, bytes]:
        return 200, json.dumps({"sku": sku, "available": 12}).encode()

    lookup = inventory_chaos(plan).wrap(stock, operation="inventory lookup")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await asyncio.sleep(plan.service_time("inventory"))
        status, body = await lookup(scope["path"].rsplit("/", 1)[-1])
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


# -- the order service ---------------------------------------------------------------------------
#: the order service's capacity: requests handled at once (like a worker or connection pool)
ORDER_CAPACITY = 64


class Capacity:
    """A server's finite capacity: at most ``limit`` requests run at once, the rest queue.

    Like a thread pool behind a listen backlog, a queued request does not notice that its
    client gave up: it runs when its turn comes."""

    def __init__(self, app: Any, limit: int, stats: OrderStats) -> None:
        self.app, self.slots, self.stats = app, asyncio.Semaphore(limit), stats

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.stats.queued += 1
        self.stats.peak_queued = max(self.stats.peak_queued, self.stats.queued)
        waiting = True
        try:
            async with self.slots:
                waiting = False
                self.stats.queued -= 1
                await self.app(scope, receive, send)
        finally:
            if waiting:
                self.stats.queued -= 1


class InventoryDown(Exception):
    """The inventory answered with an error status."""


#: Where the order service serves the live dashboard of its policies.
DASHBOARD_PATH = "/_resilience"


def with_dashboard(app: Any, dashboard: Dashboard, prefix: str = DASHBOARD_PATH) -> Any:
    """``app`` with ``dashboard`` mounted at ``prefix`` (outside every middleware: the
    dashboard's requests are neither rate limited nor counted)."""

    async def dispatch(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == prefix or path.startswith(prefix + "/")):
            root = scope.get("root_path", "") + prefix
            inner = {**scope, "root_path": root, "path": root + path[len(prefix) :]}
            await dashboard(inner, receive, send)
        else:
            await app(scope, receive, send)

    return dispatch


def order_app(
    *,
    payment_port: int,
    inventory_url: str,
    stats: OrderStats,
    resilient: bool,
    entry_rate: float,
    store: rs.stores.Store | None = None,
    worker: int = 0,
    workers: int = 1,
    live: rs.instrumentation.Live | None = None,
    dashboard: rs.instrumentation.Fleet | None = None,
) -> tuple[Any, Callable[[], Awaitable[None]]]:
    """The order service (an ASGI app) and its cleanup: check stock over HTTP, charge over
    gRPC, answer 201.

    Without policies it is the code most services start with: no timeouts, no retries, no
    idempotency. With policies: an entry rate limit (sheds what it cannot serve), the
    ``Idempotency-Key`` honoured end to end, a deadline from the client's ``Request-Timeout``,
    and per-dependency pipelines (retry with a shared budget, breaker, bulkhead, timeout).

    ``worker`` of ``workers`` order-service processes: with a shared ``store`` (Redis) the
    entry limit, the breakers and the idempotency records are fleet-wide (one limit, one
    circuit, a duplicate replayed by whichever worker it reaches); without one each worker
    keeps its own, with its share of the entry limit. The retry budget and the bulkhead are
    per process either way (the bulkhead holds this worker's share of the payment calls).

    With ``live`` (a :class:`resilience.instrumentation.Live`) the policies report to it and
    the live dashboard is served under ``DASHBOARD_PATH``, showing ``live`` or, when given, the
    ``dashboard`` fleet view (every worker publishing to the Redis store)."""
    shared: dict[str, Any] = {} if store is None else {"store": store}
    listeners: list[rs.events.Listener] = [stats] if live is None else [stats, live]

    def attempts(name: str) -> list[rs.Policy]:
        # innermost: count the attempts that reached the dependency, and their latencies
        return [] if live is None else [live.meter(name)]

    if resilient:
        retry_budget = rs.RetryBudget(ratio=0.2, min_per_second=5)
        inventory_policies = rs.Pipeline(
            http_retry(attempts=3, budget=retry_budget, name="inventory-retry"),
            rs.CircuitBreaker(
                "inventory",
                failure_ratio=0.5,
                min_calls=10,
                window=5,
                open_for=1.5,
                on_result=lambda r: r.status_code >= 500,
                **shared,
            ),
            rs.Timeout(0.3, name="inventory-attempt"),
            *attempts("inventory-meter"),
            name="inventory",
            listeners=listeners,
        )

        def payment_retryable(exc: BaseException) -> bool:
            # an open breaker too: its retry_after (the time to its next probe) is the delay,
            # and Retry never sleeps past the request's deadline
            if isinstance(exc, (rs.TimeoutExceededError, rs.CircuitOpenError)):
                return True
            codes = (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.ABORTED,  # the same key still in flight at the processor
            )
            return isinstance(exc, grpc.RpcError) and exc.code() in codes

        payment_policies = rs.Pipeline(
            # at most this many orders wait on the payment service at once
            rs.Bulkhead(
                "payment-calls", max_concurrent=-(-2 * PAYMENT_WORKERS // workers), max_wait=0.2
            ),
            rs.Retry(
                on=payment_retryable,
                attempts=3,
                backoff=rs.backoff.exponential(initial=0.05, maximum=0.4, jitter="full"),
                budget=retry_budget,
                name="payment-retry",
            ),
            rs.CircuitBreaker(
                "payment",
                failure_ratio=0.5,
                slow_call_ratio=0.6,
                slow_call_duration=0.35,
                min_calls=10,
                window=1,
                open_for=0.5,
                half_open_calls=3,
                **shared,
            ),
            rs.Timeout(0.4, name="payment-attempt"),
            *attempts("payment-meter"),
            name="payment",
            listeners=listeners,
        )
        watched = [*inventory_policies.policies, *payment_policies.policies]
        inventory_pipeline: rs.Policy | None = inventory_policies
        payment_pipeline: rs.Policy | None = payment_policies
    else:
        inventory_pipeline = payment_pipeline = None
        watched = []

    transport: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport()
    if inventory_pipeline is not None:
        transport = AsyncResilientTransport(inventory_pipeline, transport=transport)
    inventory = httpx.AsyncClient(base_url=inventory_url, transport=transport, timeout=None)
    channel_interceptors: list[Any] = []
    if payment_pipeline is not None:
        client = AsyncResilienceClientInterceptor(pipeline=payment_pipeline)
        channel_interceptors.extend(client.channel_interceptors())
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{payment_port}", interceptors=channel_interceptors
    )
    charge = channel.unary_unary(CHARGE, None, None)  # raw bytes both ways
    last_stock: dict[str, int] = {}

    async def fetch_stock(sku: str) -> dict[str, Any]:
        r = await inventory.get(f"/stock/{sku}")
        if r.status_code != 200:
            raise InventoryDown(r.status_code)
        data: dict[str, Any] = r.json()
        last_stock[sku] = int(data["available"])
        return data

    def cached_stock(exc: BaseException) -> dict[str, Any]:
        # degraded: accept the order on the last known stock level and reconcile later
        stats.degraded += 1
        return {"available": 1, "degraded": True}

    stock_lookup = fetch_stock
    if resilient:
        stock_lookup = rs.Fallback(
            on=(InventoryDown, httpx.HTTPError, rs.RejectedError, rs.TimeoutExceededError),
            handler=cached_stock,
            name="inventory-fallback",
            listeners=listeners[1:],
        )(fetch_stock)

    async def create_order(request: Request) -> Response:
        try:
            order = await request.json()
        except ClientDisconnect:  # queued so long that its client gave up
            return Response(status_code=499)
        key = request.headers.get("idempotency-key", "")
        try:
            stock = await stock_lookup(order["sku"])
            if stock["available"] < 1:
                return JSONResponse({"error": "out of stock"}, status_code=409)
            metadata = (("idempotency-key", key),) if resilient and key else None
            payload = json.dumps({"order_id": key, "amount": order["amount"]}).encode()
            reply = await charge(payload, metadata=metadata)
        except rs.RejectedError as exc:  # breaker open, bulkhead full
            retry_after = str(max(1, round(exc.retry_after or 1)))
            return JSONResponse(
                {"error": "payment unavailable"}, 503, headers={"retry-after": retry_after}
            )
        except (TimeoutError, rs.TimeoutExceededError):
            return JSONResponse({"error": "timed out"}, status_code=504)
        except (grpc.RpcError, InventoryDown, httpx.HTTPError) as exc:
            return JSONResponse({"error": type(exc).__name__}, status_code=502)
        stats.created.append(key)
        return JSONResponse(
            {
                "order_id": key,
                **json.loads(reply),
                "degraded": bool(stock.get("degraded")),
                "worker": worker,
            },
            status_code=201,
        )

    app: Any = Starlette(routes=[Route("/orders", create_order, methods=["POST"])])
    app = Capacity(app, ORDER_CAPACITY, stats)
    if resilient:
        # innermost first: the request deadline, then Idempotency-Key (5xx released: the
        # payment service deduplicates the charge, so a retried order is safe to run again),
        # then the entry rate limit, sized at 2.5x the normal traffic (fleet-wide with a store;
        # without one, each worker enforces its share)
        app = ResilienceMiddleware(app, pipeline=rs.Timeout(2.5, name="order-deadline"))
        app = IdempotencyMiddleware(
            app, wait=1.5, store_errors="never", listeners=listeners[1:], **shared
        )
        if store is None:
            entry_rate /= workers
        else:  # Redis down: each worker enforces its share of the limit on its own
            shared.update(on_store_error="local", instances=workers)
        limiter = rs.RateLimiter(
            "entry",
            rate=entry_rate,
            burst=max(1.0, entry_rate / 5),
            listeners=listeners,
            **shared,
        )
        app = RateLimitMiddleware(app, limiter=limiter, key=lambda scope: "all")
        if live is not None:
            live.watch(limiter, *watched)
            app = with_dashboard(
                app, Dashboard(dashboard or live, allowed_hosts=["127.0.0.1", "localhost"])
            )

    async def close() -> None:
        await inventory.aclose()
        await channel.close(None)

    return app, close
