"""The Redis store's fault model, part 2: slow is not down (fail-fast counts an outage, probes one
caller at a time, recovers at once).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis

import resilience as rs
from resilience.events import Event, StoreFailed
from resilience.stores.redis import RedisStore
from resilience.stores.redis._faults import Breaker as _Breaker
from resilience.testing import FakeClock

from ..redis_servers import RedisServer
from .fault_support import Ping, open_store


# -- 2. slow is not down -----------------------------------------------------------------------
def test_fail_fast_counts_an_outage_not_one_slow_moment() -> None:
    clock = FakeClock()
    b = _Breaker(threshold=3, interval=0.05, clock=clock)
    # 50 calls in flight when one slow moment makes them all time out: one piece of evidence
    began = [(b.epoch, b.check()) for _ in range(50)]
    for epoch, probe in began:
        b.failure(epoch, probe)
    assert b.failures == 1
    assert not b.check()  # not failing fast
    # a success clears it; three sequential failures (each call began after the previous
    # failure) are an outage
    b.success()
    for _ in range(3):
        epoch = b.epoch
        b.failure(epoch, b.check())
    with pytest.raises(rs.StoreError, match="failing fast"):
        b.check()


def test_fail_fast_probes_one_caller_at_a_time_and_recovers_at_once() -> None:
    clock = FakeClock()
    b = _Breaker(threshold=2, interval=0.05, clock=clock)
    for _ in range(2):
        b.failure(b.epoch, b.check())
    with pytest.raises(rs.StoreError):
        b.check()
    clock.advance(0.05)
    epoch = b.epoch
    assert b.check() is True  # the probe
    for _ in range(5):
        with pytest.raises(rs.StoreError):
            b.check()  # only one probe in flight
    b.failure(epoch, True)  # the probe failed: wait another interval
    with pytest.raises(rs.StoreError):
        b.check()
    clock.advance(0.05)
    assert b.check() is True
    b.abandon()  # a cancelled probe frees the slot
    assert b.check() is True
    b.success()  # the backend answered: used again by everybody
    assert b.failures == 0
    assert not b.check()


async def test_a_sync_call_on_an_async_only_store_leaves_the_probe_to_others() -> None:
    """``apply`` takes its client before the breaker admits a probe, like ``aapply``: a sync
    call on a store given only an async client is refused without taking the probe, so the
    store does not fail fast for good after the outage."""
    clock = FakeClock()
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.25)
    store = RedisStore(client, failure_threshold=1, probe_interval=0.05, clock=clock)
    with pytest.raises(rs.StoreError, match="redis store failed"):
        await store.aapply(Ping("k"))  # nothing listens: an outage, failing fast from here
    with pytest.raises(rs.StoreError, match="failing fast"):
        await store.aapply(Ping("k"))
    clock.advance(0.05)  # the next call is the probe
    with pytest.raises(rs.StoreError, match="was given an async client"):
        store.apply(Ping("k"))
    with pytest.raises(rs.StoreError, match="redis store failed"):  # the probe reached Redis
        await store.aapply(Ping("k"))
    await client.aclose()


def test_store_defaults_are_forgiving_and_recover_quickly() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0")
    assert store._client_kwargs["socket_timeout"] == 0.25
    assert store._client_kwargs["socket_connect_timeout"] == 0.25
    assert store._breaker.threshold == 3
    assert store._breaker.interval <= 0.1


@pytest.mark.redis
def test_concurrent_timeouts_in_one_stall_do_not_trip_fail_fast(
    own_redis_server: RedisServer,
) -> None:
    store = open_store(own_redis_server, socket_timeout=0.2, failure_threshold=3, probe_interval=60)
    assert store.apply(Ping("warm")) == 1
    n = 12
    barrier = threading.Barrier(n + 1)
    outcomes: list[str] = []

    def call() -> None:
        barrier.wait()
        try:
            store.apply(Ping("k"))
            outcomes.append("ok")
        except rs.StoreError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    own_redis_server.pause()  # one slow moment: every call in flight times out
    try:
        barrier.wait()
        for t in threads:
            t.join()
    finally:
        own_redis_server.resume()
    assert len(outcomes) == n
    assert all("Timeout" in o for o in outcomes)
    assert store.apply(Ping("k")) == 1  # used at once: not failing fast for 60 s


@pytest.mark.redis
def test_after_an_outage_the_store_is_used_again_within_100_ms(
    own_redis_server: RedisServer,
) -> None:
    store = open_store(own_redis_server)  # the defaults
    assert store.apply(Ping("k")) == 1
    own_redis_server.kill()
    for _ in range(5):
        with pytest.raises(rs.StoreError):
            store.apply(Ping("k"))
    with pytest.raises(rs.StoreError, match="failing fast"):
        store.apply(Ping("k"))
    port = own_redis_server.port
    own_redis_server.start()
    assert own_redis_server.port == port
    back = time.monotonic()  # from now on every call could reach it
    while True:
        try:
            store.apply(Ping("k"))
            break
        except rs.StoreError:
            time.sleep(0.002)
    assert time.monotonic() - back < 0.1


@pytest.mark.redis
async def test_a_burst_of_concurrent_async_decisions_is_not_an_outage(
    redis_server: RedisServer,
) -> None:
    # The point is queueing past max_connections instead of "Too many connections"; generous
    # socket timeouts keep a CPU-starved test machine (a busy loop delays the connects) from
    # turning this into a test of the timeouts.
    store = open_store(redis_server, socket_timeout=1.0, socket_connect_timeout=1.0)
    seen: list[Event] = []
    limiter = rs.RateLimiter("fm-burst", rate=10_000, store=store, listeners=[seen.append])
    decisions = await asyncio.gather(*[limiter.atry_acquire() for _ in range(300)])
    assert all(d.allowed for d in decisions)
    assert not [e for e in seen if isinstance(e, StoreFailed)]  # they queued for a connection
    await store.aclose()
