"""The accepted extremes (longest TTLs and durations, shortest windows, extreme rates) work on a
real redis-server: no StoreError, no silent misbehaviour.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import resilience as rs
from resilience.testing import FakeClock

from ..redis_servers import RedisServer
from .validation_support import MAX_SECONDS, MIN_SECONDS

# -- the accepted extremes work on Redis: no StoreError, no silent misbehaviour ---------------


@pytest.fixture
def redis_store(redis_server: RedisServer) -> Iterator[tuple[rs.RedisStore, FakeClock]]:
    clock = FakeClock(start=1000.0)
    store = rs.RedisStore.from_url(
        redis_server.url, prefix=f"val{uuid.uuid4().hex[:10]}", clock=clock, socket_timeout=2.0
    )
    yield store, clock
    store.close()


@pytest.fixture
def real_clock_store(redis_server: RedisServer) -> Iterator[rs.RedisStore]:
    """Server TIME (now ≈ 1.8e15 µs), the clock that makes ``now + duration`` large."""
    store = rs.RedisStore.from_url(
        redis_server.url, prefix=f"valt{uuid.uuid4().hex[:10]}", socket_timeout=2.0
    )
    yield store
    store.close()


@pytest.mark.redis
def test_idempotent_at_the_longest_ttl_and_lease_works_on_redis(
    real_clock_store: rs.RedisStore,
) -> None:
    calls: list[int] = []

    @rs.Idempotent(
        key=lambda n: f"order-{n}",
        ttl=MAX_SECONDS,
        lease=MAX_SECONDS,
        store=real_clock_store,
        heartbeat=False,
    )
    def charge(n: int) -> int:
        calls.append(n)
        return n * 10

    assert charge(7) == 70
    assert charge(7) == 70  # replayed: ran once
    assert calls == [7]


@pytest.mark.redis
@pytest.mark.parametrize(
    "kw",
    [
        {"rate": 1e6},  # 1 µs apart
        {"rate": 1, "per": MAX_SECONDS},  # one per 1e9 s
        {"rate": 2, "per": 1e9, "burst": 1},
        {"rate": 1, "per": 1e6, "warmup": 1e8, "cold_factor": 100},
    ],
    ids=["fastest", "slowest", "slow-burst-1", "warm-up-extremes"],
)
def test_limiter_at_the_extremes_enforces_on_redis(
    real_clock_store: rs.RedisStore, kw: dict[str, Any]
) -> None:
    rl = rs.RateLimiter("extreme", store=real_clock_store, on_store_error="closed", **kw)
    burst = int(rl.params.burst)
    if burst > 1000:
        first = rl.try_acquire(cost=burst)
    else:
        first = rl.try_acquire()
        for _ in range(burst - 1):
            first = rl.try_acquire()
    assert first.allowed  # not refused by a store error ("closed" would deny)
    # half a burst more at once (the server clock moves: at 1e6/s a permit comes back every µs)
    over = rl.try_acquire(cost=max(1, burst // 2))
    assert not over.allowed  # enforced, not failing open
    assert 0 < over.retry_after < math.inf  # a real, finite retry_after


@pytest.mark.redis
def test_breaker_at_the_longest_durations_opens_and_stays_open_on_redis(
    real_clock_store: rs.RedisStore,
) -> None:
    b = rs.CircuitBreaker(
        "extreme",
        failure_count=1,
        window=MAX_SECONDS,
        open_for=MAX_SECONDS,
        half_open_timeout=MAX_SECONDS,
        store=real_clock_store,
        on_store_error="open",  # a store error would let the call through: detectable
    )
    with pytest.raises(ZeroDivisionError):
        b.call(lambda: 1 / 0)
    with pytest.raises(rs.CircuitOpenError) as info:
        b.call(lambda: "never")
    assert info.value.retry_after == pytest.approx(MAX_SECONDS, rel=1e-6)


@pytest.mark.redis
def test_breaker_with_the_shortest_window_works_on_redis(
    redis_store: tuple[rs.RedisStore, FakeClock],
) -> None:
    store, clock = redis_store
    b = rs.CircuitBreaker(
        "tiny",
        failure_count=1,
        window=MIN_SECONDS,
        buckets=1,
        open_for=MIN_SECONDS,
        store=store,
        clock=clock,
        on_store_error="open",
    )
    with pytest.raises(ZeroDivisionError):
        b.call(lambda: 1 / 0)
    assert b.state is rs.CircuitState.OPEN
    clock.advance(MIN_SECONDS)
    assert b.call(lambda: "probe") == "probe"
    assert b.metrics.state is rs.CircuitState.CLOSED
