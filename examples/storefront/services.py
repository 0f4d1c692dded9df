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
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import resilience as rs
from interceptors.asgi import IdempotencyMiddleware, RateLimitMiddleware, ResilienceMiddleware
from interceptors.grpc import (
    AsyncResilienceClientInterceptor,
    AsyncResilienceServerInterceptor,
    idempotency_key,
)
from interceptors.httpx import AsyncResilientTransport, http_retry

from .faults import FaultPlan

CHARGE = "/shop.Payments/Charge"


class Stats:
    """Counters the live view and the summary read (filled by events and the services)."""

    def __init__(self) -> None:
        self.charges: Counter[str] = Counter()  # order id -> times charged
        self.retries = 0
        self.transitions: list[tuple[float, str, str, str]] = []
        self.breakers: dict[str, str] = {}
        self.degraded = 0
        self.started = time.monotonic()

    def __call__(self, event: rs.events.Event) -> None:
        if isinstance(event, rs.events.RetryScheduled):
            self.retries += 1
        elif isinstance(event, rs.events.CircuitStateChanged):
            t = time.monotonic() - self.started
            self.transitions.append((t, event.policy, event.from_state, event.to_state))
            self.breakers[event.policy] = event.to_state

    @property
    def duplicate_charges(self) -> int:
        return sum(n - 1 for n in self.charges.values() if n > 1)


# -- payment: gRPC over raw bytes (generic handlers, no protoc) ----------------------------------
class _RawBytes:
    def encode(self, value: bytes) -> bytes:
        return value

    def decode(self, data: str | bytes) -> bytes:
        return data if isinstance(data, bytes) else data.encode()


async def start_payment(plan: FaultPlan, stats: Stats, resilient: bool) -> tuple[Any, int]:
    async def charge(request: bytes, context: Any) -> bytes:
        effect = plan.effect("payment")
        if effect.hang_until is not None:
            # outage: the call hangs until the processor is back, then runs (a backlog).
            # A caller's deadline cancels it first (grpc cancels the handler), if there is one.
            await asyncio.sleep(max(0.0, effect.hang_until - time.monotonic()))
        await asyncio.sleep(effect.delay)
        if effect.fail:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "payment processor error")
        order = json.loads(request)
        stats.charges[order["order_id"]] += 1  # the side effect
        return json.dumps({"charge_id": f"ch-{sum(stats.charges.values())}"}).encode()

    interceptors = []
    if resilient:
        # the payment team's own protection: charge once per idempotency-key
        idem = rs.Idempotent(
            key=lambda request, context: idempotency_key(),
            fingerprint=lambda request, context: request,
            codec=_RawBytes(),
            name="payments",
        )
        interceptors.append(AsyncResilienceServerInterceptor(pipeline=None, idempotency=idem))
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
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        effect = plan.effect("inventory")
        await asyncio.sleep(effect.delay)
        status, body = (503, b'{"error": "overloaded"}') if effect.fail else (200, b"")
        if not effect.fail:
            sku = scope["path"].rsplit("/", 1)[-1]
            body = json.dumps({"sku": sku, "available": 12}).encode()
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
class InventoryDown(Exception):
    """The inventory answered with an error status."""


def order_app(
    *,
    payment_port: int,
    inventory_url: str,
    stats: Stats,
    resilient: bool,
    entry_rate: float,
) -> tuple[Any, Callable[[], Awaitable[None]]]:
    """The order service (an ASGI app) and its cleanup: check stock over HTTP, charge over
    gRPC, answer 201."""
    if resilient:
        retry_budget = rs.RetryBudget(ratio=0.2, min_per_second=5)
        inventory_pipeline: rs.Policy | None = rs.Pipeline(
            http_retry(attempts=3, budget=retry_budget, name="inventory-retry"),
            rs.CircuitBreaker(
                "inventory",
                failure_ratio=0.5,
                min_calls=10,
                window=5,
                open_for=1.5,
                on_result=lambda r: r.status_code >= 500,
            ),
            rs.Timeout(0.3, name="inventory-attempt"),
            name="inventory",
            listeners=[stats],
        )

        def payment_retryable(exc: BaseException) -> bool:
            if isinstance(exc, rs.TimeoutExceededError):
                return True
            codes = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            return isinstance(exc, grpc.RpcError) and exc.code() in codes

        payment_pipeline: rs.Policy | None = rs.Pipeline(
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
                slow_call_ratio=0.5,
                slow_call_duration=0.4,
                min_calls=10,
                window=5,
                open_for=1.5,
                half_open_calls=3,
            ),
            rs.Timeout(0.6, name="payment-attempt"),
            name="payment",
            listeners=[stats],
        )
    else:
        inventory_pipeline = payment_pipeline = None

    transport: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport()
    if inventory_pipeline is not None:
        transport = AsyncResilientTransport(inventory_pipeline, transport=transport)
    inventory = httpx.AsyncClient(base_url=inventory_url, transport=transport, timeout=None)
    channel_interceptors: list[Any] = []
    if payment_pipeline is not None:
        channel_interceptors.append(AsyncResilienceClientInterceptor(pipeline=payment_pipeline))
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
        stats.degraded += 1
        return {"available": 1, "degraded": True}  # accept the order, reconcile later

    stock_lookup = fetch_stock
    if resilient:
        stock_lookup = rs.Fallback(
            on=(InventoryDown, httpx.HTTPError, rs.RejectedError, rs.TimeoutExceededError),
            handler=cached_stock,
            name="inventory-fallback",
        )(fetch_stock)

    async def create_order(request: Request) -> JSONResponse:
        order = await request.json()
        key = request.headers.get("idempotency-key", "")
        try:
            stock = await stock_lookup(order["sku"])
            if stock["available"] < 1:
                return JSONResponse({"error": "out of stock"}, status_code=409)
            metadata = (("idempotency-key", key),) if resilient and key else None
            payload = json.dumps({"order_id": key, "amount": order["amount"]}).encode()
            reply = await charge(payload, metadata=metadata)
        except rs.CircuitOpenError as exc:
            retry_after = str(max(1, round(exc.retry_after or 1)))
            return JSONResponse(
                {"error": "payment unavailable"}, 503, headers={"retry-after": retry_after}
            )
        except (TimeoutError, rs.TimeoutExceededError):
            return JSONResponse({"error": "timed out"}, status_code=504)
        except (grpc.RpcError, InventoryDown, httpx.HTTPError) as exc:
            return JSONResponse({"error": type(exc).__name__}, status_code=502)
        return JSONResponse(
            {"order_id": key, **json.loads(reply), "degraded": bool(stock.get("degraded"))},
            status_code=201,
        )

    app: Any = Starlette(routes=[Route("/orders", create_order, methods=["POST"])])
    if resilient:
        # innermost first: deadline propagation, idempotency keys, warm-up rate limit at entry
        app = ResilienceMiddleware(app, pipeline=rs.Timeout(2.5, name="order-deadline"))
        app = IdempotencyMiddleware(app, wait=1.5)
        limiter = rs.RateLimiter(
            "entry", rate=entry_rate, burst=max(1.0, entry_rate / 5), warmup=2.0, cold_factor=2.0
        )
        app = RateLimitMiddleware(app, limiter=limiter, key=lambda scope: "all")

    async def close() -> None:
        await inventory.aclose()
        await channel.close(None)

    return app, close
