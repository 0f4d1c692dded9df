"""The webhook recipe: a payment service notifies merchants through ``rs.delivery.Outbox``.

After a successful charge the payment service *puts* a notification in the outbox (keyed by the
charge's event id, so a retried charge request never notifies twice). A worker delivers each
notification to the merchant's endpoint over httpx, with an ``Idempotency-Key`` header equal to
the delivery key; a ``429`` / ``5xx`` answer fails the attempt (its ``Retry-After`` sets the next
one, capped by the schedule), a circuit breaker per merchant host fails fast while a merchant
is down, and after ``max_attempts`` the notification is a dead letter until it is requeued. The
merchant deduplicates by event id: delivery is at least once.

    python -m examples.storefront.notifications   # a merchant goes down, then is requeued

The pieces are importable (``merchant_app``, ``notify``, ``Notifier``) and tested against real
uvicorn servers in ``tests/tools/test_webhook_recipe.py``; the
storefront demo runs it after its two runs, for the orders it charged.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

import resilience as rs


# -- the merchant -----------------------------------------------------------------------------
@dataclass
class Merchant:
    """What a merchant's webhook endpoint saw: events by id (each once), duplicates, refusals."""

    down: bool = False
    retry_after: float | None = None  # the Retry-After it sends while down
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0
    refused: int = 0


def merchant_app(merchant: Merchant) -> Any:
    """A Starlette app: ``POST /webhooks`` records an event once per ``Idempotency-Key``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def webhook(request: Request) -> JSONResponse:
        if merchant.down:
            merchant.refused += 1
            headers = {}
            if merchant.retry_after is not None:
                headers["retry-after"] = f"{merchant.retry_after:g}"
            return JSONResponse({"error": "unavailable"}, status_code=503, headers=headers)
        event_id = request.headers.get("idempotency-key", "")
        if not event_id:
            return JSONResponse({"error": "Idempotency-Key required"}, status_code=400)
        if event_id in merchant.events:  # delivered before: acknowledge, do nothing again
            merchant.duplicates += 1
            return JSONResponse({"received": event_id, "duplicate": True})
        merchant.events[event_id] = await request.json()
        return JSONResponse({"received": event_id})

    return Starlette(routes=[Route("/webhooks", webhook, methods=["POST"])])


# -- the payment service ----------------------------------------------------------------------
def charge(outbox: rs.delivery.Outbox, charge_id: str, amount: int, webhook_url: str) -> str:
    """Charge (elided), then put the merchant's notification; returns its delivery key."""
    key = f"evt_charge_succeeded_{charge_id}"
    event = {"type": "charge.succeeded", "charge": charge_id, "amount": amount, "url": webhook_url}
    outbox.put(key, event)  # once per key: a retried charge request puts nothing new
    return key


# -- the worker -------------------------------------------------------------------------------
class MerchantError(Exception):
    """The merchant did not accept the notification (``status``; ``retry_after`` if it said)."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"merchant answered {status}")
        self.status = status
        self.retry_after = retry_after


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds: delta-seconds or an HTTP date (``None``: absent).

    Example:
        >>> retry_after_seconds("120"), retry_after_seconds(None), retry_after_seconds("soon")
        (120.0, None, None)
    """
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class Notifier:
    """The outbox's handler and its pipeline: POST each notification, a breaker per host."""

    def __init__(self, client: httpx.AsyncClient, *, clock: rs.Clock | None = None) -> None:
        self.client = client
        self.clock = clock
        self.breakers: dict[str, rs.CircuitBreaker] = {}

    def pipeline(self, delivery: rs.delivery.Delivery) -> rs.Policy:
        """The breaker of the delivery's merchant host (made on first use)."""
        host = urlsplit(delivery.payload["url"]).netloc
        breaker = self.breakers.get(host)
        if breaker is None:
            breaker = self.breakers[host] = rs.CircuitBreaker(
                f"merchant:{host}", failure_count=3, open_for=5.0, clock=self.clock
            )
        return breaker

    async def __call__(self, delivery: rs.delivery.Delivery) -> None:
        """Deliver one notification; raise unless the merchant accepted it."""
        response = await self.client.post(
            delivery.payload["url"],
            json=delivery.payload,
            headers={"Idempotency-Key": delivery.key},
        )
        if response.status_code >= 300:
            hint = retry_after_seconds(response.headers.get("retry-after"))
            raise MerchantError(response.status_code, hint)


def notification_outbox(
    notifier: Notifier, *, store: Any = None, clock: rs.Clock | None = None, **kw: Any
) -> rs.delivery.Outbox:
    """The payment service's outbox: the recipe's schedule, a breaker per merchant host."""
    options: dict[str, Any] = {
        "schedule": rs.backoff.schedule([1, 5, 30, 300, 1800]),
        "max_attempts": 5,
        "lease": 30,
        **kw,
    }
    return rs.delivery.Outbox(
        "merchant-webhooks", store=store, pipeline=notifier.pipeline, clock=clock, **options
    )


# -- the demo ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _serve(app: Any) -> Iterator[str]:
    import socket
    import threading

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve([sock])), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/webhooks"
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


async def demo(
    url: str,
    merchant: Merchant,
    *,
    charge_ids: Sequence[str] = ("ch_1", "ch_2", "ch_3", "ch_4", "ch_5", "ch_6"),
    redis: str | None = None,
    prefix: str = "webhooks",
) -> dict[str, Any]:
    """Notify the charges while the merchant is up (the first half), then down (the second:
    retries, dead letters), then up again (the dead letters requeued and delivered).

    The schedule runs on a fake clock (its 1 s and 5 s steps pass at once; the HTTP calls are
    real), so it takes about a second. ``redis``: keep the outbox in Redis (key ``prefix``)."""
    clock = rs.testing.FakeClock()
    seen = rs.testing.RecordingListener()
    store = None if redis is None else rs.RedisStore.from_url(redis, prefix=prefix, clock=clock)
    half = len(charge_ids) // 2
    async with httpx.AsyncClient(timeout=2.0) as client:
        notifier = Notifier(client, clock=clock)
        outbox = notification_outbox(
            notifier,
            store=store,
            clock=clock,
            schedule=rs.backoff.schedule([1, 5]),
            max_attempts=3,
            listeners=[seen],
        )
        keys = [charge(outbox, c, 100 * (i + 1), url) for i, c in enumerate(charge_ids[:half])]
        delivered_up = await outbox.arun_once(notifier, concurrency=8)
        merchant.down, merchant.retry_after = True, 2
        down = [charge(outbox, c, 100, url) for c in charge_ids[half:]]
        keys += down
        for _ in range(10):  # Retry-After 2 s wins over the 1 s step, an open breaker's too
            await outbox.arun_once(notifier, concurrency=8)
            dead = [letter.key async for letter in outbox.adead()]
            if len(dead) == len(down):  # every attempt failed: all dead letters
                break
            clock.advance(5)
        merchant.down = False
        clock.advance(5)  # the breaker's open_for: a probe goes through again
        for key in dead:
            await outbox.arequeue(key)
        before = len(seen.of(rs.events.DeliveryDelivered))
        for _ in range(5):  # the half-open breaker lets one probe through, then closes
            if not await outbox.arun_once(notifier, concurrency=8):
                break
            clock.advance(5)
        requeued = len(seen.of(rs.events.DeliveryDelivered)) - before
        states = [await outbox.astatus(k) for k in keys]
    if store is not None:
        await store.aclose()
        store.close()
    return {
        "notifications": len(keys),
        "delivered while up": delivered_up,
        "dead while down": len(dead),
        "delivered after requeue": requeued,
        "merchant refusals (503)": merchant.refused,
        "events at the merchant": len(merchant.events),
        "duplicates at the merchant": merchant.duplicates,
        "rescheduled": len(seen.of(rs.events.DeliveryRescheduled)),
        "all delivered": all(s is not None and s.state == "delivered" for s in states),
    }


def run(
    charge_ids: Sequence[str], redis: str | None = None, prefix: str = "webhooks"
) -> dict[str, Any]:
    """Serve a merchant on loopback and run :func:`demo` for ``charge_ids``."""
    merchant = Merchant()
    with _serve(merchant_app(merchant)) as url:
        return asyncio.run(demo(url, merchant, charge_ids=charge_ids, redis=redis, prefix=prefix))


def main() -> int:
    numbers = run([f"ch_{i}" for i in range(1, 7)])
    for label, value in numbers.items():
        print(f"  {label:28} {value}")
    return 0 if numbers["all delivered"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
