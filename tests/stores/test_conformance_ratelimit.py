"""Conformance of the rate-limiter ops: identical results on MemoryStore, Redis and Redis Cluster
(scripted and random sequences).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from resilience.ratelimit import Limit, LimitParams, RateLimiter, limit_params
from resilience.ratelimit._store import _RefundOp, _TakeOp
from resilience.ratelimit._windows import _RefundAllOp, _TakeAllOp
from resilience.stores.redis import RedisStore
from resilience.testing import FakeClock

from ..redis_servers import RedisServer
from .conformance import Step, StoreFactory, arun, expected, normalize, run

pytestmark = pytest.mark.redis


# -- rate limiting ----------------------------------------------------------------------------
BASIC = limit_params(rate=10, per=1.0, burst=3)
WARM = limit_params(rate=100, per=1.0, burst=1, warmup=2.0, cold_factor=3.0)
PACED = limit_params(rate=5, per=1.0, burst=1)
WARM_BURST = limit_params(rate=100, per=1.0, warmup=2.0, cold_factor=3.0)  # burst 100
ZERO = limit_params(rate=0)


def take(p: LimitParams, cost: float = 1, max_wait: float = 0.0, key: str = "rl:x") -> _TakeOp:
    return _TakeOp(key, cost, max_wait, p)


def give_back(p: LimitParams, cost_time: float, taken: float = 0.0, key: str = "rl:x") -> _RefundOp:
    return _RefundOp(key, cost_time, taken, p)


RATELIMIT_SCENARIOS: dict[str, list[Step]] = {
    "gcra-burst-deny-refill": [
        *[take(BASIC) for _ in range(4)],
        0.05,
        take(BASIC),
        0.05,
        take(BASIC),
        take(BASIC, cost=2),
        10,
        take(BASIC, cost=3),
        take(BASIC, cost=0),
        take(BASIC, cost=4),  # more than the burst: never admitted
    ],
    "warm-up-ramps-from-cold": [
        *[take(WARM) for _ in range(5)],
        0.03,
        *[take(WARM) for _ in range(3)],
        1,
        *[take(WARM, max_wait=0.5) for _ in range(5)],
        5,
        take(WARM),
    ],
    "warm-up-burst-scales-with-temperature": [
        *[take(WARM_BURST) for _ in range(3)],  # cold: one permit, no burst
        0.03,
        *[take(WARM_BURST) for _ in range(3)],
        *[x for _ in range(40) for x in (0.05, take(WARM_BURST, cost=2), take(WARM_BURST))],
        1.2,  # warm, drained, barely cooled
        *[take(WARM_BURST, cost=5) for _ in range(25)],
        take(WARM_BURST, cost=3, max_wait=0.5),
        0.6,
        take(WARM_BURST, cost=0.5),
    ],
    "pacing-reservations-and-refund": [
        take(PACED, max_wait=1.0),
        take(PACED, max_wait=1.0),
        take(PACED, max_wait=1.0),
        give_back(PACED, 0.2),
        take(PACED, max_wait=1.0),
        *[take(PACED, max_wait=1.0) for _ in range(5)],
        give_back(PACED, 0.2, key="rl:absent"),
    ],
    "rate-zero-rejects-everything": [take(ZERO), take(ZERO, cost=0), 100, take(ZERO)],
    "fractional-costs-and-keys": [
        take(BASIC, cost=0.5),
        take(BASIC, cost=2.5),
        take(BASIC, cost=0.25),
        take(BASIC, cost=1, key="rl:y"),
        0.125,
        take(BASIC, cost=0.5),
    ],
    # One key, two parameter sets: the second take sees whether the first state expired. It
    # expires exactly at its logical end (fresh_at), never before, on every store, even when the
    # end is a float like 1000.1 + 0.1 or 0.3 s and the clock gets there in several steps.
    "expiry-boundary-one-key-two-limits": [
        take(PACED, 0.5, key="rl:a"),
        0.1,  # exactly the end: a fresh (cold) bucket
        take(WARM, 0.5, key="rl:a"),
        take(PACED, 0.5, key="rl:b"),
        0.099999,  # 1 µs before the end: the live (warm) state
        take(WARM, 0.5, key="rl:b"),
        take(PACED, 0.5, key="rl:c"),
        0.05,
        0.05,
        take(WARM, 0.5, key="rl:c"),
        take(BASIC, 3, key="rl:d"),  # 0.3 s of backlog
        0.1,
        0.1,
        0.1,
        take(WARM, 0.5, key="rl:d"),
    ],
}


@pytest.mark.parametrize("name", sorted(RATELIMIT_SCENARIOS))
def test_ratelimit_ops_conform(make_store: StoreFactory, name: str) -> None:
    steps = RATELIMIT_SCENARIOS[name]
    clock = FakeClock(start=1000.0)
    assert run(make_store(clock), clock, steps) == expected(steps)


async def test_ratelimit_ops_conform_async(make_store: StoreFactory) -> None:
    for steps in RATELIMIT_SCENARIOS.values():
        clock = FakeClock(start=1000.0)
        store = make_store(clock)
        assert await arun(store, clock, steps) == expected(steps)
        if isinstance(store, RedisStore):
            await store.aclose()


def test_ratelimit_reference_is_meaningful() -> None:
    res = expected(RATELIMIT_SCENARIOS["gcra-burst-deny-refill"])
    assert [r[0] for r in res] == [True, True, True, False, False, True, False, True, True, False]
    assert res[3][1] == 0.1  # exact retry_after


def test_expiry_boundary_scenario_is_meaningful() -> None:
    res = expected(RATELIMIT_SCENARIOS["expiry-boundary-one-key-two-limits"])
    # the WARM takes: a fresh bucket is cold and spends half a stored token, a live one has none
    assert [res[i][3] for i in (1, 3, 5, 7)] == [0.5, 0.0, 0.5, 0.5]


def test_warm_up_burst_scenario_is_meaningful() -> None:
    res = expected(RATELIMIT_SCENARIOS["warm-up-burst-scales-with-temperature"])
    assert [r[0] for r in res[:6]] == [True, False, False, True, False, False]
    assert 5 < sum(r[0] for r in res[86:111]) < 20  # warm again: a burst, not a cold trickle


def test_warm_up_cold_start_on_redis(make_store: StoreFactory) -> None:
    """The limiter itself on every store: the first second is cold, then a monotonic ramp."""
    from ..helpers import assert_cold_start_ramp, saturated_per_second

    clock = FakeClock(start=1000.0)
    store = make_store(clock)
    rl = RateLimiter("warm", rate=100, warmup=4, cold_factor=3, store=store, clock=clock)
    assert_cold_start_ramp(saturated_per_second(rl, clock, 6, 0.01), 100, 3)


def test_bucket_keys_have_a_ttl_covering_the_state(redis_server: RedisServer) -> None:
    import redis

    prefix = f"rlttl{uuid.uuid4().hex[:8]}"
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    for _ in range(3):
        store.apply(take(BASIC))
    client = redis.Redis.from_url(redis_server.url)
    (key,) = client.scan_iter(f"{prefix}:*")
    assert 250 <= client.pttl(key) <= 300  # three permits at 10/s drain in 0.3 s
    client.close()
    store.close()


ratelimit_step = st.one_of(
    st.sampled_from([0, 0.01, 0.05, 0.1, 0.25, 1, 3]),
    st.builds(
        take,
        st.sampled_from([BASIC, WARM, PACED, WARM_BURST]),
        st.sampled_from([0, 0.5, 1, 2, 3, 5]),
        st.sampled_from([0.0, 0.2, 1.0]),
        st.sampled_from(["rl:a", "rl:b"]),
    ),
    st.builds(
        give_back,
        st.sampled_from([BASIC, WARM, PACED, WARM_BURST]),
        st.sampled_from([0.1, 0.2, 1.0]),
        st.sampled_from([0.0, 1.0]),
        st.sampled_from(["rl:a", "rl:b"]),
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(ratelimit_step, max_size=30))
@example(steps=[take(PACED, 0.5, key="rl:a"), 0.1, take(WARM, 0.5, key="rl:a")])
def test_random_ratelimit_sequences_conform(redis_server: RedisServer, steps: list[Step]) -> None:
    clock = FakeClock(start=1000.0)
    store = RedisStore.from_url(
        redis_server.url, prefix=f"prop{uuid.uuid4().hex[:12]}", clock=clock
    )
    try:
        assert run(store, clock, steps) == expected(steps)
    finally:
        store.close()


# -- several windows, one decision ------------------------------------------------------------
SECOND = limit_params(rate=3, per=1.0)
MINUTE = limit_params(rate=5, per=60.0)
WARM_MINUTE = limit_params(rate=60, per=60.0, burst=4, warmup=30.0)
TWO = (SECOND, MINUTE)
THREE = (SECOND, WARM_MINUTE, limit_params(rate=2, per=0.5, burst=1))
ONE = (PACED,)


def take_all(
    ps: tuple[LimitParams, ...], cost: float = 1, max_wait: float = 0.0, key: str = "rl:m"
) -> _TakeAllOp:
    return _TakeAllOp(key, cost, max_wait, ps)


def give_back_all(
    ps: tuple[LimitParams, ...], cost_time: float, taken: float = 0.0, key: str = "rl:m"
) -> _RefundAllOp:
    n = len(ps)
    return _RefundAllOp(key, (cost_time,) * n, (taken,) * n, ps)


MULTI_SCENARIOS: dict[str, list[Step]] = {
    "every-window-must-admit": [
        *[take_all(TWO) for _ in range(4)],  # the second window refuses the fourth
        1.0,
        take_all(TWO),
        take_all(TWO),  # the minute window is spent
        take_all(TWO),
        12.0,
        take_all(TWO, cost=2),
        give_back_all(TWO, 0.4),
        take_all(TWO, cost=3),
        take_all(TWO, cost=0),
    ],
    "warm-up-and-pacing-windows": [
        *[take_all(THREE, max_wait=0.6) for _ in range(6)],
        0.3,
        *[take_all(THREE, cost=0.5, max_wait=0.2) for _ in range(3)],
        give_back_all(THREE, 0.5, 0.5),
        31.0,
        *[take_all(THREE) for _ in range(3)],
    ],
    "tier-change-keeps-the-state": [
        take_all(ONE, max_wait=1.0),
        take_all(ONE, max_wait=1.0),
        take_all(TWO),  # the key gained a window: the first keeps its backlog
        take_all(TWO),
        take_all(THREE),
        0.2,
        take_all(ONE),  # back to one window: the others are dropped
        give_back_all(TWO, 0.1),
        0.5,
        take_all(TWO),
    ],
}


@pytest.mark.parametrize("name", sorted(MULTI_SCENARIOS))
def test_multi_window_ops_conform(make_store: StoreFactory, name: str) -> None:
    steps = MULTI_SCENARIOS[name]
    clock = FakeClock(start=1000.0)
    assert run(make_store(clock), clock, steps) == expected(steps)


async def test_multi_window_ops_conform_async(make_store: StoreFactory) -> None:
    for steps in MULTI_SCENARIOS.values():
        clock = FakeClock(start=1000.0)
        store = make_store(clock)
        assert await arun(store, clock, steps) == expected(steps)
        if isinstance(store, RedisStore):
            await store.aclose()


def test_multi_window_reference_is_meaningful() -> None:
    res = expected(MULTI_SCENARIOS["every-window-must-admit"])
    oks = [None if r is None else r[0] for r in res]
    assert oks == [True, True, True, False, True, True, False, False, None, False, True]
    assert res[3][1] == 0.333333  # the second window's retry_after
    assert res[3][4][0][2] > 0
    assert res[3][4][1][2] == 0
    assert res[6][1] == 11.0
    assert res[6][4][0][2] == 0
    assert res[6][4][0][0] == 1  # ... and the second window was not charged for it
    tiers = expected(MULTI_SCENARIOS["tier-change-keeps-the-state"])
    # the paced window's two permits (0.4 s at 5/s) carried over to the new tier's first window:
    # two permits at 3/s, plus this one, spend it all
    assert tiers[2][4][0][:2] == (0, 1.0)
    assert tiers[3][0] is False


def test_multi_window_state_is_one_key_with_a_ttl(redis_server: RedisServer) -> None:
    import redis

    prefix = f"rlmulti{uuid.uuid4().hex[:8]}"
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    store.apply(take_all(TWO))
    client = redis.Redis.from_url(redis_server.url)
    (key,) = client.scan_iter(f"{prefix}:*")
    assert len(client.get(key) or b"") == 8 * 7  # two (tat, stored, interval) and the expiry
    assert 11_900 <= client.pttl(key) <= 12_000  # the minute window drains in 12 s
    client.close()
    store.close()


multi_step = st.one_of(
    st.sampled_from([0, 0.01, 0.1, 0.25, 1, 3, 13]),
    st.builds(
        take_all,
        st.sampled_from([TWO, THREE, ONE]),
        st.sampled_from([0, 0.5, 1, 2]),
        st.sampled_from([0.0, 0.3, 1.0]),
        st.sampled_from(["rl:a", "rl:b"]),
    ),
    st.builds(
        give_back_all,
        st.sampled_from([TWO, THREE, ONE]),
        st.sampled_from([0.1, 0.5]),
        st.sampled_from([0.0, 1.0]),
        st.sampled_from(["rl:a", "rl:b"]),
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(multi_step, max_size=30))
def test_random_multi_window_sequences_conform(
    redis_server: RedisServer, steps: list[Step]
) -> None:
    clock = FakeClock(start=1000.0)
    store = RedisStore.from_url(
        redis_server.url, prefix=f"mprop{uuid.uuid4().hex[:12]}", clock=clock
    )
    try:
        assert run(store, clock, steps) == expected(steps)
    finally:
        store.close()


# -- the multi-window limiter itself: in process vs every store -------------------------------
LIMITS = [
    Limit(rate=4, per=1.0),
    Limit(rate=20, per=60.0, burst=6),
    Limit(rate=100, per=10.0, warmup=5.0, name="warm"),
]
limiter_step = st.one_of(
    st.sampled_from([0.05, 0.3, 1.0, 7.0]).map(lambda s: ("advance", s)),
    st.tuples(
        st.just("take"), st.sampled_from(["free:a", "pro:b", "pro:c"]), st.sampled_from([1, 2])
    ),
    st.just(("refund",)),
    st.tuples(st.just("upgrade"), st.sampled_from(["free:a", "pro:b"])),
)


def _tier(plans: dict[str, int]) -> Callable[[str], Sequence[Limit]]:
    return lambda key: LIMITS[: plans.get(key, 1 if key.startswith("free") else 3)]


def _play(make: StoreFactory | None, steps: list[Any]) -> list[Any]:
    clock = FakeClock(start=1000.0)
    store = None if make is None else make(clock)
    plans: dict[str, int] = {}
    limiter = RateLimiter("conf", limits=_tier(plans), store=store, clock=clock)
    fixed = RateLimiter("fixed", limits=LIMITS, store=store, clock=clock)
    out: list[Any] = []
    last: list[Any] = []
    for step in steps:
        if step[0] == "advance":
            clock.advance(step[1])
        elif step[0] == "take":
            d = limiter.try_acquire(key=step[1], cost=step[2])
            f = fixed.try_acquire(key=step[1], cost=step[2])
            last[:] = [d, f]
            out.append(normalize((*tuple(d[:6]), d.windows, tuple(f[:6]), f.windows)))
        elif step[0] == "refund":
            out.append(tuple(lim.refund(d) for lim, d in zip((limiter, fixed), last, strict=False)))
        else:
            plans[step[1]] = 2
            limiter.retier(step[1])
    return out


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(limiter_step, max_size=25))
def test_multi_window_limiter_conforms_on_every_store(
    make_store: StoreFactory, steps: list[Any]
) -> None:
    assert _play(make_store, steps) == _play(None, steps)
