"""The webhook recipe (examples/storefront/notifications.py) against real uvicorn merchants."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import httpx
import pytest

import resilience as rs
from resilience.events import DeliveryDelivered, DeliveryRescheduled
from resilience.testing import FakeClock, RecordingListener

from .._server import serve

#: examples/ is not a package of the type check's (its storefront is): imported by name here
webhooks: Any = importlib.import_module("examples.storefront.notifications")


def _outbox(notifier: Any, clock: FakeClock, **kw: Any) -> tuple[Any, Any]:
    seen = RecordingListener()
    outbox = webhooks.notification_outbox(notifier, clock=clock, listeners=[seen], **kw)
    return outbox, seen


def test_notifications_reach_the_merchant_once_with_the_delivery_key(clock: FakeClock) -> None:
    merchant = webhooks.Merchant()
    with serve(webhooks.merchant_app(merchant)) as base:
        url = f"{base}/webhooks"

        async def main() -> None:
            async with httpx.AsyncClient(timeout=5) as client:
                notifier = webhooks.Notifier(client, clock=clock)
                outbox, seen = _outbox(notifier, clock)
                key = webhooks.charge(outbox, "ch_1", 4200, url)
                assert webhooks.charge(outbox, "ch_1", 4200, url) == key  # a retried charge
                assert await outbox.arun_once(notifier) == 1
                assert [e.key for e in seen.of(DeliveryDelivered)] == [key]

        asyncio.run(main())
    assert list(merchant.events) == ["evt_charge_succeeded_ch_1"]
    assert merchant.events["evt_charge_succeeded_ch_1"]["amount"] == 4200


def test_retry_after_is_honoured_and_the_merchant_dedups_a_redelivery(clock: FakeClock) -> None:
    merchant = webhooks.Merchant(down=True, retry_after=7)
    with serve(webhooks.merchant_app(merchant)) as base:
        url = f"{base}/webhooks"

        async def main() -> None:
            async with httpx.AsyncClient(timeout=5) as client:
                notifier = webhooks.Notifier(client, clock=clock)
                outbox, seen = _outbox(notifier, clock, lease=10)
                key = webhooks.charge(outbox, "ch_2", 100, url)
                assert await outbox.arun_once(notifier) == 1
                (resched,) = seen.of(DeliveryRescheduled)
                assert resched.delay == 7.0  # the merchant's Retry-After, not the 1 s step
                status = await outbox.astatus(key)
                assert status is not None
                assert status.last_error == "MerchantError: merchant answered 503"
                merchant.down = False
                clock.advance(7)

                # the merchant gets it, but the acknowledgement is lost (the worker dies)
                async def crashes_after_sending(delivery: rs.delivery.Delivery) -> None:
                    await notifier(delivery)
                    raise KeyboardInterrupt  # stands in for kill -9 after the POST

                with pytest.raises(KeyboardInterrupt):
                    await outbox.arun_once(crashes_after_sending)
                assert await outbox.arun_once(notifier) == 1  # delivered again
                status = await outbox.astatus(key)
                assert status is not None
                assert status.state == "delivered"

        asyncio.run(main())
    assert merchant.refused == 1
    assert list(merchant.events) == ["evt_charge_succeeded_ch_2"]
    assert merchant.duplicates == 1  # the redelivery was recognised by its event id


def test_a_breaker_per_merchant_host_and_dead_letters_requeued(clock: FakeClock) -> None:
    down, up = webhooks.Merchant(down=True), webhooks.Merchant()
    with serve(webhooks.merchant_app(down)) as down_url, serve(webhooks.merchant_app(up)) as up_url:

        async def main() -> None:
            async with httpx.AsyncClient(timeout=5) as client:
                notifier = webhooks.Notifier(client, clock=clock)
                outbox, _ = _outbox(notifier, clock, max_attempts=2)
                for i in range(4):
                    webhooks.charge(outbox, f"d{i}", 1, f"{down_url}/webhooks")
                webhooks.charge(outbox, "u0", 1, f"{up_url}/webhooks")
                assert await outbox.arun_once(notifier) == 5
                assert down.refused == 3  # the breaker opened after 3 failures: d3 failed fast
                assert list(up.events) == ["evt_charge_succeeded_u0"]  # not held up
                clock.advance(5)
                await outbox.arun_once(notifier)  # a half-open probe fails: all four die
                dead = [letter.key async for letter in outbox.adead()]
                assert sorted(dead) == [f"evt_charge_succeeded_d{i}" for i in range(4)]
                down.down = False
                clock.advance(5)
                for key in dead:
                    assert await outbox.arequeue(key)
                for _ in range(4):
                    await outbox.arun_once(notifier)
                    clock.advance(5)
                for key in dead:
                    status = await outbox.astatus(key)
                    assert status is not None
                    assert status.state == "delivered"

        asyncio.run(main())
    assert len(down.events) == 4
    assert down.duplicates == 0


def test_the_demo_runs() -> None:
    merchant = webhooks.Merchant()
    with serve(webhooks.merchant_app(merchant)) as base:
        numbers = asyncio.run(webhooks.demo(f"{base}/webhooks", merchant))
    assert numbers["all delivered"] is True
    assert numbers["dead while down"] == 3
    assert numbers["events at the merchant"] == 6


def test_retry_after_parsing() -> None:
    assert webhooks.retry_after_seconds("3") == 3.0
    assert webhooks.retry_after_seconds("-3") == 0.0
    when = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert webhooks.retry_after_seconds(when, now=1445412470.0) == 10.0
    assert webhooks.retry_after_seconds("garbage") is None
