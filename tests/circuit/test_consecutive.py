"""consecutive_failures: a breaker that opens on a streak of failures, like pybreaker's fail_max."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pybreaker
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import resilience as rs
from resilience.events import CircuitStateChanged
from resilience.stores.memory import MemoryStore
from resilience.testing import FakeClock, RecordingListener

from ..conftest import Runner
from ..helpers import Boom
from ..redis_servers import RedisServer


def transitions(rec: RecordingListener) -> list[tuple[str, str, str]]:
    return [(e.from_state, e.to_state, e.reason) for e in rec.of(CircuitStateChanged)]


def state(breaker: rs.CircuitBreaker) -> rs.CircuitState:
    """The breaker's state (a function call, so the type checker does not narrow it)."""
    return breaker.state


def feed(runner: Runner, breaker: rs.CircuitBreaker, outcomes: list[Any]) -> None:
    for outcome in outcomes:
        try:
            runner.run(breaker, runner.scripted([outcome]))
        except (Boom, KeyError, rs.CircuitOpenError):
            pass


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"consecutive_failures": 0}, "consecutive_failures must be an integer >= 1"),
        ({"consecutive_failures": 2.5}, "consecutive_failures must be an integer"),
        ({"consecutive_failures": 3, "failure_count": 3}, "cannot be combined"),
        ({"consecutive_failures": 3, "failure_ratio": 0.5}, "cannot be combined"),
        ({"consecutive_failures": 3, "min_calls": 5}, "min_calls has no effect"),
    ],
)
def test_conflicting_or_invalid_options_are_refused(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(rs.ConfigurationError, match=re.escape(message)):
        rs.CircuitBreaker("cb", **kw)


def test_combines_with_the_slow_call_ratio() -> None:
    b = rs.CircuitBreaker(
        "cb", consecutive_failures=3, slow_call_ratio=0.5, slow_call_duration=1, min_calls=4
    )
    d = b.describe()
    assert (d["consecutive_failures"], d["min_calls"], d["failure_count"]) == (3, 4, None)
    assert rs.CircuitBreaker("cb", consecutive_failures=3).min_calls == 1


def test_a_success_ends_the_streak(runner: Runner, clock: FakeClock) -> None:
    rec = RecordingListener()
    b = rs.CircuitBreaker("cb", consecutive_failures=3, clock=clock, listeners=[rec])
    feed(runner, b, [Boom, Boom, "ok", Boom, Boom])
    assert state(b) is rs.CircuitState.CLOSED
    assert b.metrics.failures == 4  # the window still counts every failure
    clock.advance(86_000)  # far outside the window: a streak does not expire
    feed(runner, b, [Boom])
    assert state(b) is rs.CircuitState.OPEN
    assert transitions(rec) == [("closed", "open", "consecutive_failures")]
    clock.advance(30)
    feed(runner, b, ["ok"])  # the probe
    feed(runner, b, [Boom, Boom])  # closing started a new streak
    assert state(b) is rs.CircuitState.CLOSED
    assert transitions(rec)[1:] == [
        ("open", "half_open", "open_for_elapsed"),
        ("half_open", "closed", "probes_succeeded"),
    ]


def test_an_ignored_exception_neither_ends_nor_extends_the_streak(
    runner: Runner, clock: FakeClock
) -> None:
    b = rs.CircuitBreaker("cb", consecutive_failures=2, on=Boom, clock=clock)
    feed(runner, b, [Boom, KeyError, KeyError])
    assert state(b) is rs.CircuitState.CLOSED
    feed(runner, b, [Boom])
    assert state(b) is rs.CircuitState.OPEN


def test_reset_clears_the_streak(runner: Runner, clock: FakeClock) -> None:
    b = rs.CircuitBreaker("cb", consecutive_failures=2, clock=clock)
    feed(runner, b, [Boom])
    b.reset()
    feed(runner, b, [Boom])
    assert state(b) is rs.CircuitState.CLOSED
    feed(runner, b, [Boom])
    assert state(b) is rs.CircuitState.OPEN


def test_failures_in_the_window_keep_the_fast_path_once_the_streak_ended(
    runner: Runner, clock: FakeClock
) -> None:
    # with no windowed threshold a success can only end a streak: once it has, successes take
    # the lock-free fast path again although the window still holds failures
    b = rs.CircuitBreaker("cb", consecutive_failures=3, clock=clock)
    feed(runner, b, [Boom, Boom])
    assert b._edge[0] == float("-inf")  # a streak is running: the next success must end it
    feed(runner, b, ["ok"])
    assert b._edge[0] > clock.monotonic()
    feed(runner, b, ["ok", "ok", Boom, Boom])
    assert (b.state, b.metrics.calls, b.metrics.failures) == (rs.CircuitState.CLOSED, 7, 4)
    feed(runner, b, [Boom])
    assert state(b) is rs.CircuitState.OPEN


def boom() -> None:
    raise Boom("down")


def test_a_shared_breaker_counts_late_successes_before_the_next_failure(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    a = rs.CircuitBreaker("shared", consecutive_failures=2, store=store, clock=clock)
    b = rs.CircuitBreaker("shared", consecutive_failures=2, store=store, clock=clock)
    with pytest.raises(Boom):
        a.call(boom)
    assert b.call(lambda: "ok") == "ok"  # reported with b's next operation
    with pytest.raises(Boom):
        b.call(boom)  # the late success ended a's streak first
    assert state(a) is rs.CircuitState.CLOSED
    with pytest.raises(Boom):
        a.call(boom)
    assert state(b) is rs.CircuitState.OPEN


def test_a_stored_streak_outlives_the_window(redis_server: RedisServer) -> None:
    import redis

    prefix = f"cbstreak{uuid.uuid4().hex[:8]}"
    store = rs.RedisStore.from_url(redis_server.url, prefix=prefix)
    b = rs.CircuitBreaker("s", consecutive_failures=3, window=10, store=store)
    with pytest.raises(ZeroDivisionError):
        b.call(lambda: 1 / 0)
    client = redis.Redis.from_url(redis_server.url)
    (key,) = client.scan_iter(f"{prefix}:*")
    assert 86_000_000 < client.pttl(key) <= 86_400_000
    client.close()
    store.close()


# -- the same states as pybreaker, call after call ----------------------------------------------
class _FakeTimeStorage(pybreaker.CircuitMemoryStorage):
    """pybreaker's memory storage with ``opened_at`` on a FakeClock (no real waiting)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(pybreaker.STATE_CLOSED)
        self._clock = clock
        self._opened_fake: float | None = None

    @property
    def opened_at(self) -> datetime | None:
        if self._opened_fake is None:
            return None
        return datetime.now(UTC) - timedelta(seconds=self._clock.monotonic() - self._opened_fake)

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        self._opened_fake = self._clock.monotonic()


_PY_STATES = {"closed": "closed", "open": "open", "half-open": "half_open"}
_steps = st.lists(st.sampled_from(["ok", "fail", "fail", 4.0, 11.0]), max_size=40)


@settings(max_examples=150, deadline=None)
@given(
    fail_max=st.integers(1, 4),
    steps=_steps,
    mode=st.sampled_from(["sync", "async", "memory-store"]),
)
def test_the_same_state_as_pybreaker_after_every_call(
    fail_max: int, steps: list[Any], mode: str
) -> None:
    clock = FakeClock()
    legacy = pybreaker.CircuitBreaker(
        fail_max=fail_max, reset_timeout=10, state_storage=_FakeTimeStorage(clock)
    )
    ours = rs.CircuitBreaker(
        "cb",
        consecutive_failures=fail_max,
        open_for=10,
        clock=clock,
        store=MemoryStore(clock=clock) if mode == "memory-store" else None,
    )

    ran: list[str] = []

    def work(step: str) -> str:
        ran.append(step)
        if step == "fail":
            raise Boom(step)
        return step

    async def awork(step: str) -> str:
        return work(step)

    for step in steps:
        if isinstance(step, float):
            clock.advance(step)
            continue
        # pybreaker raises CircuitBreakerError for a refusal and on the call that trips it
        with contextlib.suppress(Boom, pybreaker.CircuitBreakerError):
            legacy.call(work, step)
        with contextlib.suppress(Boom, rs.CircuitOpenError):
            if mode == "async":
                asyncio.run(ours.acall(awork, step))
            else:
                ours.call(work, step)
        assert len(ran) % 2 == 0, steps  # both ran the call, or both refused it
        assert ours.state.value == _PY_STATES[legacy.current_state], steps


# -- the streak in the metrics and the dashboard's data -----------------------------------------
def streaks_of(runner: Runner, b: rs.CircuitBreaker) -> list[int | None]:
    seen = []
    for outcome in (Boom, Boom, "ok", Boom, Boom, Boom):
        feed(runner, b, [outcome])
        seen.append(b.metrics.consecutive_failures)
    return seen


def test_the_metrics_show_the_streak(runner: Runner, clock: FakeClock) -> None:
    b = rs.CircuitBreaker("cb", consecutive_failures=3, open_for=10, clock=clock)
    assert b.metrics.consecutive_failures == 0
    # a success ends it; the third in a row opens, and an open breaker has no streak
    assert streaks_of(runner, b) == [1, 2, 0, 1, 2, 0]
    assert state(b) is rs.CircuitState.OPEN
    clock.advance(10)
    feed(runner, b, ["ok", Boom])  # the probe closes it: a new streak
    assert b.metrics.consecutive_failures == 1
    b.reset()
    assert b.metrics.consecutive_failures == 0
    windowed = rs.CircuitBreaker("w", failure_count=3, clock=clock)
    feed(runner, windowed, [Boom])
    assert windowed.metrics.consecutive_failures is None  # it does not count streaks


def test_a_stored_breaker_shows_the_streak(runner: Runner, redis_server: RedisServer) -> None:
    prefix = f"cbmetrics{uuid.uuid4().hex[:8]}"
    store = rs.RedisStore.from_url(redis_server.url, prefix=prefix)
    try:
        b = rs.CircuitBreaker("s", consecutive_failures=3, open_for=60, store=store)
        other = rs.CircuitBreaker("s", consecutive_failures=3, open_for=60, store=store)
        assert streaks_of(runner, b) == [1, 2, 0, 1, 2, 0]
        assert other.metrics.consecutive_failures == 0  # the store's state: open, no streak
        assert other.metrics.state is rs.CircuitState.OPEN
    finally:
        store.close()


def test_the_dashboard_data_shows_the_streak(runner: Runner, clock: FakeClock) -> None:
    from resilience.instrumentation import Live
    from resilience.instrumentation._fleet import merge

    live = Live(clock=clock, instance="a")
    b = rs.CircuitBreaker("ledger", consecutive_failures=3, clock=clock, listeners=[live])
    plain = rs.CircuitBreaker("plain", failure_count=3, clock=clock, listeners=[live])
    live.watch(b, plain)

    def shown() -> dict[str, Any]:
        return {p["name"]: p["consecutive_failures"] for p in live.snapshot()["policies"]}

    assert shown() == {"ledger": 0, "plain": None}
    feed(runner, b, [Boom, Boom])
    assert shown()["ledger"] == 2
    other = {**live.snapshot(), "instances": ["b"]}
    other["policies"] = [{**p, "consecutive_failures": 1} for p in other["policies"]]
    merged = {
        p["name"]: p["consecutive_failures"] for p in merge([other, live.snapshot()])["policies"]
    }
    assert merged == {"ledger": 2, "plain": 1}  # the longest streak of the instances
    feed(runner, b, ["ok"])
    assert shown()["ledger"] == 0
