"""Conformance of the circuit-breaker ops: identical results on MemoryStore, Redis and Redis
Cluster (scripted and random sequences).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilience import backoff
from resilience.circuit import CircuitBreaker, CircuitState
from resilience.circuit._store import _AcquireOp, _ManualOp, _RecordOp
from resilience.errors import CircuitOpenError
from resilience.stores.memory import MemoryStore
from resilience.stores.redis import RedisStore
from resilience.testing import FakeClock

from ..redis_servers import RedisServer
from .conformance import Step, StoreFactory, normalize

pytestmark = pytest.mark.redis


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
    "consecutive": {
        "consecutive_failures": 3,
        "window": 4,
        "buckets": 2,
        "open_for": 2,
        "half_open_calls": 2,
    },
    "consecutive-slow": {
        "consecutive_failures": 2,
        "slow_call_ratio": 0.5,
        "slow_call_duration": 1.0,
        "min_calls": 3,
        "window": 4,
        "buckets": 4,
        "open_for": 3,
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
    "consecutive-streaks": (
        "consecutive",
        [
            *[A, rec(1)] * 2,
            A,
            rec(0),  # a success ends the streak of 2
            *[A, rec(1)] * 2,
            A,
            rec(-1),  # a release neither ends nor extends it
            TICK,
            30,  # far outside the window: the streak does not expire
            A,
            rec(1),  # the 3rd failure in a row: opens
            TICK,
            2,
            A,
            A,
            rec(0, -1),
            rec(1, -2),  # a probe failed: reopened
            2,
            A,
            A,
            rec(0, -1),
            rec(0, -2),  # closed: a new streak
            *[A, rec(1)] * 2,
            ("p", -1, 1, 0),
            A,  # a late success, flushed first, ended the streak
            rec(1, -1),
            TICK,
            ("m", 3),  # reset clears the streak
            A,
            rec(1),
            A,
            rec(1),
            TICK,
        ],
    ),
    "consecutive-and-slow": (
        "consecutive-slow",
        [
            A,
            rec(1),
            A,
            rec(2),  # a slow success ends the streak
            A,
            rec(1),
            TICK,  # 3 calls, 1 slow: below the slow ratio
            A,
            rec(3),  # slow and failed: 2 failures in a row
            TICK,
            3,
            A,
            rec(0),
            A,
            rec(2),
            A,
            rec(2),
            A,
            rec(0),  # 2 slow of 3 in the window: slow_call_ratio
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


def test_consecutive_reference_is_meaningful() -> None:
    res = breaker_expected(*BREAKER_SCENARIOS["consecutive-streaks"])
    assert res[12][1][:3] == (0, 5, 4)  # 4 failures of 5 calls, at most 2 in a row: closed
    assert res[14] == (0, 1, 9)  # 30 s later, the 3rd failure in a row: consecutive_failures
    assert res[19] == (2, 1, 4)  # a probe failed
    assert res[23] == (2, 0, 5)  # probes succeeded: closed
    assert res[30][1][:3] == (0, 4, 3)  # 3 failures after closing, a late success between
    assert res[36][1][:3] == (0, 2, 2)  # reset cleared the streak: 2 failures, closed
    slow = breaker_expected(*BREAKER_SCENARIOS["consecutive-and-slow"])
    assert slow[6][1][:4] == (0, 3, 2, 1)  # a slow success ended the streak
    assert slow[8] == (0, 1, 9)  # slow and failed: the 2nd failure in a row
    assert slow[17] == (0, 1, 3)  # 2 slow of 3: slow_call_ratio


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
    max_examples=100,
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
