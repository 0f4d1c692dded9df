"""Idempotent on a real redis-server that stalls (SIGSTOP / SIGCONT) while an outcome is stored."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import resilience as rs
from resilience.stores.redis import RedisStore
from resilience.testing import FakeClock

from .redis_servers import RedisServer

pytestmark = pytest.mark.redis

STALL = 1.5  # seconds the server is stopped, starting as the function returns


class Stall:
    """``start()`` stops the server now and resumes it ``STALL`` seconds later."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.resumed = threading.Event()
        self.timers: list[threading.Timer] = []

    def start(self) -> None:
        self.server.pause()
        timer = threading.Timer(STALL, self._resume)
        self.timers.append(timer)
        timer.start()

    def _resume(self) -> None:
        self.server.resume()
        self.resumed.set()


@pytest.fixture
def stall(own_redis_server: RedisServer) -> Iterator[Stall]:
    s = Stall(own_redis_server)
    yield s
    for timer in s.timers:
        timer.join()


def _store(server: RedisServer, clock: FakeClock) -> RedisStore:
    # the scripts read "now" from the fake clock, so the lease can be expired without waiting;
    # the store's own breaker runs on that clock too (it would never reopen): keep it closed
    return RedisStore.from_url(
        server.url, prefix=f"s{uuid.uuid4().hex[:10]}", clock=clock, failure_threshold=10**6
    )


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_redis_stall_at_completion_runs_the_function_once(
    own_redis_server: RedisServer, stall: Stall, mode: str
) -> None:
    """Redis stops for 1.5 s exactly when the result is stored: the completion is retried while
    the lease is ours, so the retry after the lease replays instead of charging again."""
    clock = FakeClock(start=1000.0)
    store = _store(own_redis_server, clock)
    policy = rs.Idempotent(key=lambda k: k, store=store, lease=30)
    charges: list[str] = []

    def charge_body(k: str) -> dict[str, int]:
        charges.append(k)
        stall.start()  # the store stalls right as the outcome is about to be recorded
        return {"charge": len(charges)}

    if mode == "sync":
        charge = policy(charge_body)
        try:
            first = charge("order-1")  # told success: and it was recorded
            assert stall.resumed.wait(10)
            clock.advance(31)  # past the lease: an in-progress record would be taken over
            again = charge("order-1")
        finally:
            store.close()
    else:

        @policy
        async def acharge(k: str) -> dict[str, int]:
            return charge_body(k)

        async def main() -> tuple[Any, Any]:
            try:
                first = await acharge("order-1")
                await asyncio.to_thread(stall.resumed.wait, 10)
                clock.advance(31)
                return first, await acharge("order-1")
            finally:
                await store.aclose()

        first, again = asyncio.run(main())
    assert first == {"charge": 1}
    assert again == {"charge": 1}  # a replay
    assert charges == ["order-1"]  # one execution in total (was two)


def test_a_stall_longer_than_the_lease_is_reported(own_redis_server: RedisServer) -> None:
    """When the outcome still cannot be recorded while the lease is held, the caller is told
    (with the result), instead of a success that a later retry would repeat."""
    store = RedisStore.from_url(own_redis_server.url, prefix=f"l{uuid.uuid4().hex[:10]}")
    policy = rs.Idempotent(key=lambda k: k, store=store, lease=1)
    charges: list[str] = []

    @policy
    def charge(k: str) -> str:
        charges.append(k)
        own_redis_server.pause()
        return "charged"

    try:
        with pytest.raises(rs.IdempotencyOutcomeUnrecordedError) as info:
            charge("order-2")
        assert info.value.result == "charged"
        assert charges == ["order-2"]
    finally:
        own_redis_server.resume()
        store.close()
