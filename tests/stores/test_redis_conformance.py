"""Conformance: every store op gives identical results on MemoryStore and RedisStore.

One suite drives the same op sequences (with an injected FakeClock) through the memory store,
a standalone Redis and a 3-master Redis Cluster, and asserts identical results; a Hypothesis
property test does the same over random sequences.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from resilience import backoff
from resilience.circuit import CircuitBreaker, CircuitState
from resilience.circuit._store import _AcquireOp, _ManualOp, _RecordOp
from resilience.errors import CircuitOpenError
from resilience.idempotency import ClaimOp, CompleteOp, ReleaseOp, RenewOp
from resilience.ratelimit import LimitParams, RateLimiter, limit_params
from resilience.ratelimit._store import _RefundOp, _TakeOp
from resilience.stores.memory import MemoryStore
from resilience.stores.redis import RedisStore
from resilience.testing import FakeClock

from ..redis_servers import RedisCluster, RedisServer

pytestmark = pytest.mark.redis

#: A step: an op to apply, or a number of seconds to advance the clock by.
Step = Any
StoreFactory = Callable[[FakeClock], Any]


def normalize(value: Any) -> Any:
    """Results compared across stores: floats to the microsecond (Lua works in integer µs)."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, tuple | list):
        return tuple(normalize(v) for v in value)
    return value


def run(store: Any, clock: FakeClock, steps: Sequence[Step]) -> list[Any]:
    out: list[Any] = []
    for step in steps:
        if isinstance(step, int | float):
            clock.advance(step)
        else:
            out.append(normalize(store.apply(step)))
    return out


async def arun(store: Any, clock: FakeClock, steps: Sequence[Step]) -> list[Any]:
    out: list[Any] = []
    for step in steps:
        if isinstance(step, int | float):
            clock.advance(step)
        else:
            out.append(normalize(await store.aapply(step)))
    return out


def expected(steps: Sequence[Step]) -> list[Any]:
    clock = FakeClock(start=1000.0)
    return run(MemoryStore(clock=clock), clock, steps)


@pytest.fixture(params=["memory", "redis", "cluster"])
def make_store(request: pytest.FixtureRequest) -> Iterator[StoreFactory]:
    """A factory of fresh stores (a new key prefix each) on one backend."""
    made: list[RedisStore] = []

    def factory(clock: FakeClock) -> Any:
        if request.param == "memory":
            return MemoryStore(clock=clock)
        prefix = f"conf{uuid.uuid4().hex[:12]}"
        if request.param == "redis":
            server: RedisServer = request.getfixturevalue("redis_server")
            store = RedisStore.from_url(server.url, prefix=prefix, clock=clock, socket_timeout=2.0)
        else:
            cluster: RedisCluster = request.getfixturevalue("redis_cluster")
            store = RedisStore.from_url(
                cluster.url, prefix=prefix, cluster=True, clock=clock, socket_timeout=2.0
            )
        made.append(store)
        return store

    yield factory
    for store in made:
        store.close()


# -- idempotency ------------------------------------------------------------------------------
LEASE, TTL = 30.0, 100.0


def claim(owner: str, fp: str = "fp", key: str = "k") -> ClaimOp:
    return ClaimOp(key, fp, owner, LEASE, TTL)


def renew(owner: str, fence: int, key: str = "k") -> RenewOp:
    return RenewOp(key, owner, fence, LEASE, TTL)


def complete(owner: str, fence: int, payload: str | None = "s42", key: str = "k") -> CompleteOp:
    return CompleteOp(key, owner, fence, payload, TTL)


def release(owner: str, fence: int, key: str = "k") -> ReleaseOp:
    return ReleaseOp(key, owner, fence)


IDEMPOTENCY_SCENARIOS: dict[str, list[Step]] = {
    "claim-duplicate-complete-replay": [
        claim("a"),
        5,
        claim("b"),
        complete("a", 1, 's{"id": 7, "name": "caf\u00e9"}'),
        claim("c"),
        claim("d", fp="other"),
    ],
    "lease-expiry-takeover-and-fencing": [
        claim("a"),
        30,  # exactly at lease end: expired (lu > now is false)
        claim("b"),
        complete("a", 1),  # the zombie's late result is refused
        renew("a", 1),
        renew("b", 2),
        29,
        claim("c"),
        complete("b", 2, None),
        claim("c"),
    ],
    # float noise: 1000.1 + 0.2 + 29.9 + 0.1 is not exactly the lease end (1000.3 + 30) in
    # floats, but it is in whole µs, where both stores decide: the lease has ended
    "lease-ends-at-the-same-microsecond": [
        0.1,
        0.2,
        claim("a"),
        29.9,
        0.1,
        claim("b"),
    ],
    "release-then-rerun": [
        claim("a"),
        release("b", 1),
        release("a", 2),
        release("a", 1),
        claim("b"),
        release("b", 1),
    ],
    "record-expires-after-ttl": [
        claim("a"),
        complete("a", 1),
        99,
        claim("b"),
        1,
        claim("b"),  # the completed record expired: a fresh claim
    ],
    "renew-keeps-the-record-alive": [
        claim("a"),
        25,
        renew("a", 1),
        25,
        renew("a", 1),
        25,
        claim("b"),
        120,
        claim("b"),
    ],
    "a-retried-completion-is-idempotent-for-its-owner": [
        claim("a"),
        complete("a", 1, "s1"),
        complete("a", 1, "s1"),  # the reply of the first one was lost: stored
        complete("b", 1, "s2"),  # another owner: refused
        claim("c"),  # replays the first outcome
        complete("a", 2, "s3"),  # another fence: refused
    ],
    "keys-are-independent": [
        claim("a", key="k1"),
        claim("a", key="k2"),
        complete("a", 1, "s1", key="k1"),
        claim("b", key="k1"),
        claim("b", key="k2"),
    ],
}


@pytest.mark.parametrize("name", sorted(IDEMPOTENCY_SCENARIOS))
def test_idempotency_ops_conform(make_store: StoreFactory, name: str) -> None:
    steps = IDEMPOTENCY_SCENARIOS[name]
    clock = FakeClock(start=1000.0)
    assert run(make_store(clock), clock, steps) == expected(steps)


async def test_idempotency_ops_conform_async(make_store: StoreFactory) -> None:
    for steps in IDEMPOTENCY_SCENARIOS.values():
        clock = FakeClock(start=1000.0)
        store = make_store(clock)
        assert await arun(store, clock, steps) == expected(steps)
        if isinstance(store, RedisStore):
            await store.aclose()


def test_expected_results_are_meaningful() -> None:
    # the reference itself (so a conformance pass cannot hide a wrong state machine)
    res = expected(IDEMPOTENCY_SCENARIOS["lease-expiry-takeover-and-fencing"])
    assert res == [
        ("claimed", 1, 0),
        ("claimed", 2, 1),
        False,
        False,
        True,
        ("in_progress", 2, 1.0),
        True,
        ("replay", 2, None),
    ]
    boundary = expected(IDEMPOTENCY_SCENARIOS["lease-ends-at-the-same-microsecond"])
    assert boundary == [("claimed", 1, 0), ("claimed", 2, 1)]
    retried = expected(IDEMPOTENCY_SCENARIOS["a-retried-completion-is-idempotent-for-its-owner"])
    assert retried == [("claimed", 1, 0), True, True, False, ("replay", 1, "s1"), False]


def test_corrupt_records_fail_closed_on_redis(redis_server: RedisServer) -> None:
    import redis

    store = RedisStore.from_url(redis_server.url, prefix=f"corrupt{uuid.uuid4().hex[:8]}")
    client = redis.Redis.from_url(redis_server.url)
    client.set(store.redis_key("wrong-type"), "x", ex=60)
    client.hset(store.redis_key("bad-version"), mapping={"x": "9" * 16, "v": "2"})
    client.hset(store.redis_key("no-expiry"), mapping={"v": "1", "st": "p"})
    for key in ("wrong-type", "bad-version", "no-expiry"):
        assert store.apply(claim("a", key=key)) == ("corrupt", 0, 0)
        assert store.apply(renew("a", 1, key=key)) is False
    client.close()
    store.close()


def test_every_key_has_a_ttl_and_one_slot(redis_server: RedisServer) -> None:
    import redis

    prefix = f"ttl{uuid.uuid4().hex[:8]}"
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    store.apply(claim("a", key="t1"))
    store.apply(claim("a", key="t2"))
    store.apply(complete("a", 1, key="t2"))
    client = redis.Redis.from_url(redis_server.url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    assert len(keys) == 2
    assert all(0 < client.pttl(k) <= (TTL + LEASE) * 1000 for k in keys)
    client.close()
    store.close()


# -- property: random op sequences ------------------------------------------------------------
owners = st.sampled_from(["a", "b", "c"])
fences = st.integers(min_value=1, max_value=3)
idempotency_step = st.one_of(
    st.integers(min_value=0, max_value=60),
    st.builds(claim, owners, st.sampled_from(["fp", "fp2"])),
    st.builds(renew, owners, fences),
    st.builds(complete, owners, fences, st.sampled_from([None, "s1", "b" + "QUJD"])),
    st.builds(release, owners, fences),
)
#: fractional clock steps: a whole number of seconds ``n`` taken as ``f`` then ``n - f``, so
#: the clock lands on a lease end or an expiry by a different float path than ``now + lease``
split_advance = st.builds(
    lambda n, f, first: [f, n - f] if first else [n - f, f],
    st.sampled_from([LEASE, TTL, TTL + LEASE, 10]),
    st.sampled_from([0.3, 1.3, 0.1, 0.9, 0.7]),
    st.booleans(),
)
idempotency_item = st.one_of(
    idempotency_step.map(lambda step: [step]),
    split_advance,
    # a claim, then a duplicate probing the lease end (or the record's expiry) reached by a
    # noisy float path
    st.builds(
        lambda c, a, d: [c, *a, d],
        st.builds(claim, owners),
        split_advance,
        st.builds(claim, owners),
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(items=st.lists(idempotency_item, max_size=20))
@example(items=[[claim("a")], [29.9], [0.1], [claim("b")]])
@example(items=[[claim("a")], [9.9, 0.1], [renew("a", 1)], [29.9, 0.1], [claim("b")]])
def test_random_idempotency_sequences_conform(
    redis_server: RedisServer, items: list[list[Step]]
) -> None:
    # the clock starts at a fractional instant with float noise (1000.1 + 0.2 != 1000.3)
    steps: list[Step] = [0.1, 0.2, *(step for item in items for step in item)]
    clock = FakeClock(start=1000.0)
    store = RedisStore.from_url(
        redis_server.url, prefix=f"prop{uuid.uuid4().hex[:12]}", clock=clock
    )
    try:
        assert run(store, clock, steps) == expected(steps)
    finally:
        store.close()


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


# -- circuit breaker --------------------------------------------------------------------------
# A breaker step: ("a",) acquire; ("r", outcome, j) record the j-th permit granted so far (mod
# their number; 0 before any) with outcome bits (0 success, 1 failure, 2 slow, -1 release);
# ("m", action) manual action (0: tick + snapshot, 1 open, 2 close, 3 reset); ("p", j, n, s):
# the next operation also reports n late successes of the j-th permit and s stale ones
# (core.flush); or seconds.
BREAKERS = {
    "ratio": {
        "failure_ratio": 0.5,
        "min_calls": 4,
        "window": 10,
        "buckets": 5,
        "open_for": 5,
        "half_open_calls": 2,
    },
    "count-backoff": {
        "failure_count": 3,
        "window": 6,
        "buckets": 3,
        "open_for": backoff.exponential(initial=2, maximum=20, jitter="none"),
        "half_open_calls": 1,
        "half_open_timeout": 3,
    },
    "slow": {
        "slow_call_ratio": 0.5,
        "slow_call_duration": 1.0,
        "failure_count": 4,
        "min_calls": 2,
        "window": 4,
        "buckets": 4,
        "open_for": 2,
        "half_open_calls": 3,
    },
}


def breaker_of(kind: str) -> CircuitBreaker:
    return CircuitBreaker(f"conf-{kind}", **BREAKERS[kind])  # type: ignore[arg-type]


def run_breaker(store: Any, clock: FakeClock, kind: str, steps: Sequence[Step]) -> list[Any]:
    b = breaker_of(kind)
    key = f"cb:conf-{kind}"
    permits: list[int] = []
    out: list[Any] = []
    pending = (-1, 0, 0)
    for step in steps:
        if isinstance(step, int | float):
            clock.advance(step)
            continue
        if step[0] == "p":
            pending = (permits[step[1] % len(permits)] if permits else 0, step[2], step[3])
            continue
        if step[0] == "a":
            res = store.apply(_AcquireOp(key, b, pending))
            if res[0] >= 0:
                permits.append(res[0])
        elif step[0] == "r":
            permit = permits[step[2] % len(permits)] if permits else 0
            res = store.apply(_RecordOp(key, b, permit, step[1], pending))
        else:
            res = store.apply(_ManualOp(key, b, step[1], pending))
        pending = (-1, 0, 0)
        out.append(normalize(res))
    return out


async def arun_breaker(store: Any, clock: FakeClock, kind: str, steps: Sequence[Step]) -> list[Any]:
    b = breaker_of(kind)
    key = f"cb:conf-{kind}"
    permits: list[int] = []
    out: list[Any] = []
    pending = (-1, 0, 0)
    for step in steps:
        if isinstance(step, int | float):
            clock.advance(step)
            continue
        if step[0] == "p":
            pending = (permits[step[1] % len(permits)] if permits else 0, step[2], step[3])
            continue
        if step[0] == "a":
            res = await store.aapply(_AcquireOp(key, b, pending))
            if res[0] >= 0:
                permits.append(res[0])
        elif step[0] == "r":
            permit = permits[step[2] % len(permits)] if permits else 0
            res = await store.aapply(_RecordOp(key, b, permit, step[1], pending))
        else:
            res = await store.aapply(_ManualOp(key, b, step[1], pending))
        pending = (-1, 0, 0)
        out.append(normalize(res))
    return out


def breaker_expected(kind: str, steps: Sequence[Step]) -> list[Any]:
    clock = FakeClock(start=1000.0)
    return run_breaker(MemoryStore(clock=clock), clock, kind, steps)


A, TICK = ("a",), ("m", 0)


def rec(outcome: int, j: int = -1) -> tuple[str, int, int]:
    return ("r", outcome, j)


BREAKER_SCENARIOS: dict[str, tuple[str, list[Step]]] = {
    "ratio-opens-probes-close": (
        "ratio",
        [
            *[A, rec(0)] * 2,
            *[A, rec(1)] * 2,  # 2/4 failed: opens
            A,
            TICK,
            4.999999,
            A,
            0.000001,
            A,  # half-open: probe 1
            A,  # probe 2
            A,  # refused
            rec(0, -1),
            rec(0, -2),  # both succeed: closed, empty window
            TICK,
            A,
            rec(1),
            TICK,
        ],
    ),
    "window-slides-out": (
        "ratio",
        [
            *[A, rec(1)] * 3,
            1.5,
            *[A, rec(0)] * 4,
            TICK,
            8.5,
            TICK,  # the first bucket left the window
            A,
            rec(1),
            A,
            rec(1),
            TICK,
            30,
            TICK,
        ],
    ),
    "stale-outcomes-and-release": (
        "ratio",
        [
            A,
            A,
            ("m", 1),  # held open: the two permits are stale now
            rec(1, 0),
            rec(-1, 1),
            A,
            100,
            A,
            ("m", 2),
            A,
            rec(-1),
            rec(1, 0),
            TICK,
            ("m", 3),
            TICK,
        ],
    ),
    "backoff-and-half-open-timeout": (
        "count-backoff",
        [
            *[A, rec(1)] * 3,
            2,
            A,  # probe
            A,
            2.999999,
            A,
            0.000001,
            A,  # the probe never reported: reopened for 4 s
            TICK,
            4,
            A,
            rec(1),  # probe failed: 8 s
            TICK,
            8,
            A,
            rec(-1),  # released: a fresh probe may start
            A,
            rec(0),
            TICK,
        ],
    ),
    "late-successes": (
        "ratio",
        [
            A,
            rec(1),
            A,
            rec(1),
            A,
            ("p", -1, 1, 0),
            A,  # one late success: 3 calls, 2 failed (below min_calls)
            ("p", -1, 1, 2),
            TICK,  # the 4th call (a success) reaches min_calls: 2/4 failed, opens
            ("p", 0, 3, 0),
            A,  # late successes of an older generation are stale
            5,
            A,
            ("p", 0, 1, 0),
            A,  # a success of generation 0 is stale now; probe 2 granted
            rec(0, -2),
            rec(0, -1),  # both probes succeeded: closed
            A,
            ("p", -1, 2, 1),
            rec(1),
            ("p", -1, 1, 0),
            ("m", 3),  # reset: the pending success is dropped by the breaker, recorded here
            TICK,
        ],
    ),
    "slow-calls": (
        "slow",
        [
            A,
            rec(2),
            A,
            rec(0),
            TICK,
            2,
            A,
            A,
            A,
            A,
            rec(0, -3),
            rec(2, -2),
            TICK,
            2,
            *[A, rec(0)] * 3,
            A,
            rec(3),
            TICK,
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(BREAKER_SCENARIOS))
def test_breaker_ops_conform(make_store: StoreFactory, name: str) -> None:
    kind, steps = BREAKER_SCENARIOS[name]
    clock = FakeClock(start=1000.0)
    assert run_breaker(make_store(clock), clock, kind, steps) == breaker_expected(kind, steps)


async def test_breaker_ops_conform_async(make_store: StoreFactory) -> None:
    for kind, steps in BREAKER_SCENARIOS.values():
        clock = FakeClock(start=1000.0)
        store = make_store(clock)
        assert await arun_breaker(store, clock, kind, steps) == breaker_expected(kind, steps)
        if isinstance(store, RedisStore):
            await store.aclose()


def test_late_successes_reference_is_meaningful() -> None:
    res = breaker_expected(*BREAKER_SCENARIOS["late-successes"])
    transition, snap = res[6]
    assert transition == (0, 1, 1)  # a late success brought the window to min_calls: opens
    assert snap[1:3] == (4, 2)  # 4 calls, 2 failed
    assert snap[5] == 2  # 2 stale successes
    assert res[7][0] == -1  # open: refused
    assert res[11] == (2, 0, 5)  # probes succeeded: closed


def test_breaker_reference_is_meaningful() -> None:
    res = breaker_expected(*BREAKER_SCENARIOS["ratio-opens-probes-close"])
    assert res[7] == (0, 1, 1)  # 2 of 4 failed: CLOSED -> OPEN, failure_ratio
    assert res[8] == (-1, 5_000_000, None)  # refused, retry after 5 s
    assert res[10] == (-1, 1, None)  # 1 µs early
    assert res[11] == (10, 0, (1, 2, 6))  # OPEN -> HALF_OPEN; probe 1 (generation 2)
    assert res[12][0] == 10
    assert res[13][0] == -1
    assert res[15] == (2, 0, 5)  # HALF_OPEN -> CLOSED, probes succeeded


def test_breaker_state_is_one_string_with_a_ttl(redis_server: RedisServer) -> None:
    import redis

    prefix = f"cbttl{uuid.uuid4().hex[:8]}"
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    b = CircuitBreaker("ttl", failure_count=1, window=10, open_for=5, store=store)
    with pytest.raises(ZeroDivisionError):
        b.call(lambda: 1 / 0)
    assert b.metrics.state is CircuitState.OPEN
    client = redis.Redis.from_url(redis_server.url)
    (key,) = client.scan_iter(f"{prefix}:*")
    assert client.type(key) == b"string"
    assert 0 < client.pttl(key) <= (10 + 5 + 5 + 60) * 1000
    b.open()
    assert client.pttl(key) == -1  # forced open: no TTL (it lasts until close() or reset())
    b.close()
    assert 0 < client.pttl(key) <= (10 + 5 + 5 + 60) * 1000  # an ordinary state again
    client.set(key, b"garbage")  # corrupt: the breaker starts over (closed)
    assert b.state is CircuitState.CLOSED
    client.close()
    store.close()


def test_forced_open_survives_any_idle_period(make_store: StoreFactory) -> None:
    clock = FakeClock(start=1000.0)
    store = make_store(clock)
    a = CircuitBreaker("forced", failure_count=1, open_for=5, store=store, clock=clock)
    a.open()
    clock.advance(30 * 86_400.0)  # a month with nobody touching it (the old TTL was 7 days)
    b = CircuitBreaker("forced", failure_count=1, open_for=5, store=store, clock=clock)
    assert b.state is CircuitState.OPEN
    m = b.metrics
    assert (m.state, m.forced, m.retry_after) == (CircuitState.OPEN, True, None)
    with pytest.raises(CircuitOpenError) as info:
        b.call(lambda: "never")
    assert (info.value.forced, info.value.retry_after) == (True, None)
    a.close()
    assert b.call(lambda: "ok") == "ok"


breaker_step = st.one_of(
    st.sampled_from([0, 0.5, 1, 2, 3, 5, 20]),
    st.just(A),
    st.just(A),
    st.builds(rec, st.sampled_from([0, 0, 1, 1, 2, 3, -1]), st.integers(-3, 3)),
    st.builds(lambda a: ("m", a), st.sampled_from([0, 0, 0, 1, 2, 3])),
    st.builds(
        lambda j, n, s: ("p", j, n, s), st.integers(-3, 3), st.integers(0, 3), st.integers(0, 2)
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(kind=st.sampled_from(sorted(BREAKERS)), steps=st.lists(breaker_step, max_size=40))
def test_random_breaker_sequences_conform(
    redis_server: RedisServer, kind: str, steps: list[Step]
) -> None:
    clock = FakeClock(start=1000.0)
    store = RedisStore.from_url(
        redis_server.url, prefix=f"prop{uuid.uuid4().hex[:12]}", clock=clock
    )
    try:
        assert run_breaker(store, clock, kind, steps) == breaker_expected(kind, steps)
    finally:
        store.close()
