"""``RateLimiter.remaining()`` / ``aremaining()``: the permits a check would get now, read without
charging, on every store (memory, standalone Redis, Redis Cluster) and in process.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import resilience as rs
from resilience.stores import MemoryStore
from resilience.stores.redis import RedisStore
from resilience.testing import FakeClock, RecordingListener

from ..helpers import BrokenStore
from ..redis_servers import RedisServer
from .conformance import StoreFactory

pytestmark = pytest.mark.redis

CONFIGS: dict[str, dict[str, Any]] = {
    "gcra": {"rate": 10, "burst": 4},
    "warm-up": {"rate": 100, "burst": 20, "warmup": 2.0},
    "windows": {"limits": [rs.Limit(5), rs.Limit(8, per=60)]},
}
# (seconds to advance, cost of a check) of one run; a peek precedes every check
SCRIPT = [(0, 1), (0, 2), (0, 3), (0.05, 1), (0.3, 1), (0, 4), (2.0, 1), (0, 1), (61, 2)]


def _decisions(limiter: rs.RateLimiter, clock: FakeClock, peek: bool) -> list[Any]:
    out = []
    fresh = 1 if limiter.warmup else limiter.quota  # a cold bucket admits one permit
    for advance, cost in SCRIPT:
        clock.advance(advance)
        if peek:
            before = limiter.remaining(key="k")
            assert limiter.remaining(key="k") == before  # a peek changes nothing
            assert limiter.remaining(key="never-seen") == fresh
        d = limiter.try_acquire(key="k", cost=cost)
        if peek:
            # a check of 1 is admitted exactly when a peek saw a permit
            assert (before >= cost) == d.allowed or cost > 1, (before, cost, d)
        out.append((d.allowed, d.remaining, d.retry_after, d.reset_after))
    return out


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_a_peek_does_not_change_later_decisions(make_store: StoreFactory, config: str) -> None:
    runs = []
    for peek in (False, True):
        clock = FakeClock(start=1000.0)
        store = make_store(clock)
        rec = RecordingListener()
        limiter = rs.RateLimiter(
            "peek", store=store, clock=clock, listeners=[rec], **CONFIGS[config]
        )
        runs.append(_decisions(limiter, clock, peek))
        assert rec.kinds().count("rejected") == sum(not d[0] for d in runs[-1])
    assert runs[0] == runs[1]
    assert any(not d[0] for d in runs[0])  # the script does reach the limit


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_in_process_peeks_do_not_change_later_decisions(config: str) -> None:
    runs = []
    for peek in (False, True):
        clock = FakeClock(start=1000.0)
        limiter = rs.RateLimiter("peek", clock=clock, **CONFIGS[config])
        runs.append(_decisions(limiter, clock, peek))
    assert runs[0] == runs[1]


def test_remaining_is_what_a_check_reports() -> None:
    clock = FakeClock()
    limiter = rs.RateLimiter("api", rate=5, per=60, clock=clock)
    assert limiter.remaining() == 5
    assert limiter.try_acquire(cost=2).remaining == limiter.remaining() == 3
    clock.advance(12)  # one permit back
    assert limiter.remaining() == 4
    assert limiter.try_acquire(key="k", cost=5).remaining == limiter.remaining(key="k") == 0
    assert not limiter.try_acquire(key="k").allowed


def test_a_peek_creates_no_bucket() -> None:
    clock = FakeClock()
    limiter = rs.RateLimiter("api", rate=5, max_keys=2, clock=clock)
    for i in range(100):
        assert limiter.remaining(key=f"visitor-{i}") == 5
    assert limiter._buckets == {}
    store = MemoryStore(clock=clock)
    stored = rs.RateLimiter("api", rate=5, store=store, clock=clock)
    assert stored.remaining(key="visitor") == 5
    assert store._data == {}


def test_a_peek_writes_nothing_to_redis(redis_server: RedisServer) -> None:
    import redis

    prefix = f"peek{uuid.uuid4().hex[:8]}"
    clock = FakeClock(start=1000.0)
    store = RedisStore.from_url(redis_server.url, prefix=prefix, clock=clock)
    client = redis.Redis.from_url(redis_server.url)
    try:
        for limits in ({"rate": 5}, {"limits": [rs.Limit(5), rs.Limit(8, per=60)]}):
            limiter = rs.RateLimiter(f"api{len(limits)}", store=store, clock=clock, **limits)
            assert limiter.remaining(key="new") == 5
            assert list(client.scan_iter(f"{prefix}:*")) == []
        limiter = rs.RateLimiter("api", rate=5, per=60, store=store, clock=clock)
        limiter.try_acquire(key="old", cost=2)
        (key,) = client.scan_iter(f"{prefix}:*")
        value, ttl = client.get(key), client.pttl(key)
        assert limiter.remaining(key="old") == 3
        assert client.get(key) == value
        assert ttl - 5 <= client.pttl(key) <= ttl  # the expiry is left as it was
    finally:
        client.close()
        store.close()


async def test_aremaining_on_redis(redis_server: RedisServer) -> None:
    clock = FakeClock(start=1000.0)
    store = RedisStore.from_url(
        redis_server.url, prefix=f"apeek{uuid.uuid4().hex[:8]}", clock=clock
    )
    try:
        limiter = rs.RateLimiter("api", rate=5, per=60, store=store, clock=clock)
        assert await limiter.aremaining(key="k") == 5
        assert (await limiter.atry_acquire(key="k", cost=4)).remaining == 1
        assert await limiter.aremaining(key="k") == await limiter.aremaining(key="k") == 1
        assert (await limiter.atry_acquire(key="k")).allowed
        assert await limiter.aremaining(key="k") == 0
    finally:
        store.close()


@pytest.mark.parametrize(("mode", "expected"), [("open", 5), ("closed", 0), ("local", 2)])
def test_a_failed_store_answers_per_on_store_error(mode: Any, expected: int) -> None:
    rec = RecordingListener()
    limiter = rs.RateLimiter(
        "api",
        rate=5,
        per=60,
        store=BrokenStore(),
        on_store_error=mode,
        instances=2,
        clock=FakeClock(),
        listeners=[rec],
    )
    assert limiter.remaining(key="k") == expected
    assert rec.events == []  # a peek decides nothing, so it reports nothing either
