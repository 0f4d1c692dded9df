"""The Redis store's fault model, parts 3 and 4: the event loop never blocks on Redis, and any
event loop works.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
import warnings
from typing import Any

import pytest

import resilience as rs
from resilience.events import Event, StoreFailed
from resilience.stores.redis import RedisStore
from resilience.testing import FakeClock

from ..redis_servers import RedisServer
from .fault_support import open_store


# -- 3. the event loop never blocks on Redis ---------------------------------------------------
async def _max_loop_lag(during: Any) -> float:
    """Run ``during()`` while a ticker records the longest gap between its ticks."""
    lag = 0.0
    stop = asyncio.Event()
    tick = asyncio.Event()

    async def ticker() -> None:
        nonlocal lag
        last = time.monotonic()
        while not stop.is_set():
            tick.set()
            await asyncio.sleep(0.002)  # the tick being measured (a late wake-up is the lag)
            now = time.monotonic()
            lag = max(lag, now - last)
            last = now

    async def next_tick() -> None:
        tick.clear()
        await tick.wait()

    task = asyncio.create_task(ticker())
    await next_tick()  # the ticker runs before ``during`` starts
    try:
        await during()
    finally:
        for _ in range(2):  # one whole measured tick after ``during`` (its clean-up included)
            await next_tick()
        stop.set()
        await task
    return lag


@pytest.mark.redis
@pytest.mark.parametrize("policy", ["breaker-half-open", "limiter-waiting"])
async def test_cancelling_300_calls_on_a_stalled_redis_never_blocks_the_loop(
    own_redis_server: RedisServer, policy: str
) -> None:
    clock = FakeClock(start=1000.0)
    # a long socket timeout: one blocking give-back would stall the loop for 2 s, far above the
    # bound below, while a busy test machine's own scheduling delays stay far under it
    store = open_store(own_redis_server, socket_timeout=2.0, clock=clock)
    n = 300
    started = asyncio.Semaphore(0)
    hold = asyncio.Event()

    async def work() -> None:
        started.release()
        await hold.wait()

    if policy == "breaker-half-open":
        guarded: Any = rs.CircuitBreaker(
            "fm-lag", failure_count=1, open_for=5, half_open_calls=n, store=store, clock=clock
        )
        with pytest.raises(ZeroDivisionError):
            await guarded.acall(_fail)
        clock.advance(6)  # HALF_OPEN: n probes, each holding a permit on Redis
        tasks = [asyncio.create_task(guarded.acall(work)) for _ in range(n)]
        for _ in range(n):
            await started.acquire()
    else:
        waiting: list[Event] = []
        all_waiting = asyncio.Event()

        def waited(event: Event) -> None:
            waiting.append(event)
            if len(waiting) == n - 1:  # all but the first wait for their slot, reserved on Redis
                all_waiting.set()

        limiter = rs.RateLimiter(
            "fm-lag",
            rate=1,
            burst=1,
            max_wait=10_000,
            store=store,
            clock=rs.SystemClock(),
            listeners=[waited],
        )
        tasks = [asyncio.create_task(limiter.aacquire()) for _ in range(n)]
        await all_waiting.wait()

    async def cancel_all_on_a_stalled_redis() -> None:
        own_redis_server.pause()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        lag = await _max_loop_lag(cancel_all_on_a_stalled_redis)
    finally:
        own_redis_server.resume()
    # one blocking give-back alone would stall the loop for the 2 s socket timeout
    assert lag < 1.0, f"the event loop was blocked for {lag:.3f} s"
    await asyncio.gather(*store._background, return_exceptions=True)  # the give-backs finish
    await store.aclose()


async def _fail() -> None:
    raise ZeroDivisionError


# -- 4. any event loop -------------------------------------------------------------------------
@pytest.mark.redis
def test_one_store_serves_consecutive_event_loops(redis_server: RedisServer) -> None:
    store = open_store(redis_server)
    seen: list[Event] = []
    limiter = rs.RateLimiter("fm-loops", rate=3, per=3600, store=store, listeners=[seen.append])

    async def take() -> bool:
        return (await limiter.atry_acquire()).allowed

    # a second asyncio.run (a test suite, a CLI) with the same store: its own connections
    assert [asyncio.run(take()) for _ in range(4)] == [True, True, True, False]  # shared state
    assert not [e for e in seen if isinstance(e, StoreFailed)]  # never degraded
    assert not store._loops  # each loop's client was closed and forgotten when it shut down


@pytest.mark.redis
def test_a_given_async_client_on_another_loop_is_a_store_error(redis_server: RedisServer) -> None:
    import redis.asyncio

    seen: list[Event] = []

    def two_loops() -> list[bool]:
        client = redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=2)
        store = RedisStore(client, prefix=f"fm{uuid.uuid4().hex[:10]}")
        limiter = rs.RateLimiter("fm-given", rate=5, per=3600, store=store, listeners=[seen.append])

        async def take() -> bool:
            return (await limiter.atry_acquire()).allowed

        return [asyncio.run(take()), asyncio.run(take())]

    # the second loop cannot use the first one's connection: routed through on_store_error
    assert two_loops() == [True, True]
    assert [e.decision for e in seen if isinstance(e, StoreFailed)] == ["open"]
    # that connection cannot be closed any more (its loop is gone): the reason from_url keeps
    # one client per loop. Let it go quietly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
