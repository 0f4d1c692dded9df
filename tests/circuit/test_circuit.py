"""Circuit breaker behaviour; every scenario against a sync and an async function, FakeClock."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

import resilience as rs
from resilience.events import CallRejected, CircuitStateChanged
from resilience.testing import FakeClock, RecordingListener

from ..conftest import Runner, Step
from ..helpers import Boom, BrokenStore


def cb(clock: FakeClock, **kw: Any) -> rs.CircuitBreaker:
    kw.setdefault("open_for", 10.0)
    return rs.CircuitBreaker("cb", clock=clock, **kw)


def feed(runner: Runner, breaker: rs.CircuitBreaker, outcomes: list[Any]) -> None:
    """Run one call per outcome (an exception type/instance raises, anything else returns)."""
    for outcome in outcomes:
        fn = runner.scripted([outcome if isinstance(outcome, Step) else Step(outcome)])
        try:
            runner.run(breaker, fn)
        except (Boom, KeyError, rs.CircuitOpenError):
            pass


def st(breaker: rs.CircuitBreaker) -> rs.CircuitState:
    """The breaker's state (a function call, so the type checker does not narrow it)."""
    return breaker.state


def transitions(rec: RecordingListener) -> list[tuple[str, str, str]]:
    return [(e.from_state, e.to_state, e.reason) for e in rec.of(CircuitStateChanged)]


# -- configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({}, "at least one threshold"),
        ({"failure_ratio": 0}, "failure_ratio must be in (0, 1]"),
        ({"failure_ratio": 1.5}, "failure_ratio must be in (0, 1]"),
        ({"failure_count": 0}, "failure_count must be an integer >= 1"),
        ({"slow_call_ratio": 0.5}, "slow_call_ratio needs slow_call_duration"),
        ({"failure_ratio": 0.5, "slow_call_duration": 1}, "no effect without slow_call_ratio"),
        ({"failure_ratio": 0.5, "min_calls": 0}, "min_calls must be an integer >= 1"),
        ({"failure_ratio": 0.5, "window": 0}, "window must be > 0 seconds"),
        ({"failure_ratio": 0.5, "window": 1, "buckets": 7}, "whole microseconds"),
        ({"failure_ratio": 0.5, "open_for": 0}, "open_for must be > 0 seconds"),
        ({"failure_ratio": 0.5, "open_for": "x"}, "open_for must be a number of seconds"),
        ({"failure_ratio": 0.5, "half_open_calls": 0}, "half_open_calls must be"),
        ({"failure_ratio": 0.5, "on_store_error": "maybe"}, "on_store_error must be"),
        ({"failure_ratio": 0.5, "store": object()}, "store must be"),
    ],
)
def test_configuration_errors(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(rs.ConfigurationError) as info:
        rs.CircuitBreaker("cb", **kw)
    assert message in str(info.value)


def test_defaults_and_describe() -> None:
    b = rs.CircuitBreaker("db", failure_ratio=0.5)
    d = b.describe()
    assert d["min_calls"] == 10
    assert d["window"] == 60.0
    assert d["buckets"] == 10
    assert d["open_for"] == 30.0
    assert d["half_open_calls"] == 1
    assert d["half_open_timeout"] == 30.0
    assert rs.CircuitBreaker("db", failure_count=3).min_calls == 1
    t = rs.CircuitBreaker("db", failure_count=3, window=timedelta(seconds=6), open_for=2)
    assert t.window == 6.0
    assert t.half_open_timeout == 2.0
    assert "CircuitBreaker(name='db'" in repr(t)


# -- thresholds (B-1, B-2, B-4) ----------------------------------------------------------------
def test_below_min_calls_never_trips(runner: Runner, clock: FakeClock) -> None:
    b = cb(clock, failure_ratio=0.5, min_calls=5)
    feed(runner, b, [Boom] * 4)
    assert st(b) is rs.CircuitState.CLOSED
    assert b.metrics.failure_ratio == 1.0
    feed(runner, b, ["ok"])  # the 5th call, a success, brings the window to min_calls: 4/5
    assert st(b) is rs.CircuitState.OPEN


@pytest.mark.parametrize(("fails", "tripped"), [(1, False), (2, True)])
def test_failure_ratio_trips_at_exactly_the_threshold(
    runner: Runner, clock: FakeClock, fails: int, tripped: bool
) -> None:
    rec = RecordingListener()
    b = cb(clock, failure_ratio=0.5, min_calls=4, listeners=[rec])
    feed(runner, b, ["ok"] * (4 - fails) + [Boom] * fails)
    assert (st(b) is rs.CircuitState.OPEN) is tripped
    assert transitions(rec) == ([("closed", "open", "failure_ratio")] if tripped else [])


def test_failure_ratio_with_inexact_decimal_threshold(runner: Runner, clock: FakeClock) -> None:
    b = cb(clock, failure_ratio=0.3, min_calls=10)
    feed(runner, b, ["ok"] * 7 + [Boom] * 3)  # 3/10 == 0.3 exactly (no float drift)
    assert st(b) is rs.CircuitState.OPEN


@pytest.mark.parametrize(("fails", "tripped"), [(2, False), (3, True)])
def test_failure_count_boundary(
    runner: Runner, clock: FakeClock, fails: int, tripped: bool
) -> None:
    rec = RecordingListener()
    b = cb(clock, failure_count=3, listeners=[rec])
    feed(runner, b, [Boom, "ok"] * fails)
    assert (st(b) is rs.CircuitState.OPEN) is tripped
    if tripped:
        assert transitions(rec) == [("closed", "open", "failure_count")]


def test_failure_count_respects_explicit_min_calls(runner: Runner, clock: FakeClock) -> None:
    b = cb(clock, failure_count=2, min_calls=3)
    feed(runner, b, [Boom, Boom])
    assert st(b) is rs.CircuitState.CLOSED
    feed(runner, b, ["ok"])
    assert st(b) is rs.CircuitState.OPEN


# -- slow calls (B-3) --------------------------------------------------------------------------
@pytest.mark.parametrize(("duration", "slow"), [(2.0, False), (2.000001, True)])
def test_slow_call_is_strictly_longer_than_the_duration(
    runner: Runner, clock: FakeClock, duration: float, slow: bool
) -> None:
    b = cb(clock, slow_call_ratio=1.0, slow_call_duration=2.0, min_calls=1)
    feed(runner, b, [Step("ok", duration)])
    assert b.metrics.slow_calls == int(slow)
    assert (st(b) is rs.CircuitState.OPEN) is slow


def test_slow_failures_count_as_slow_and_as_failures(runner: Runner, clock: FakeClock) -> None:
    rec = RecordingListener()
    b = cb(clock, slow_call_ratio=0.5, slow_call_duration=1.0, min_calls=2, listeners=[rec])
    feed(runner, b, ["ok", Step(Boom(), 1.5)])
    assert transitions(rec) == [("closed", "open", "slow_call_ratio")]


def test_failure_ratio_reported_before_slow_ratio(runner: Runner, clock: FakeClock) -> None:
    rec = RecordingListener()
    b = cb(
        clock,
        failure_ratio=1.0,
        slow_call_ratio=1.0,
        slow_call_duration=1.0,
        min_calls=1,
        listeners=[rec],
    )
    feed(runner, b, [Step(Boom(), 5)])
    assert transitions(rec) == [("closed", "open", "failure_ratio")]


# -- the sliding window ------------------------------------------------------------------------
def test_window_expires_whole_buckets_exactly(runner: Runner, clock: FakeClock) -> None:
    b = cb(clock, failure_count=3, window=10, buckets=10)  # 1 s buckets
    clock.set(0.5)
    feed(runner, b, [Boom])  # bucket 0
    clock.set(1.0)
    feed(runner, b, [Boom])  # bucket 1
    clock.set(9.999999)
    assert b.metrics.failures == 2
    clock.set(10.0)  # bucket 10 starts: bucket 0 leaves the window
    assert b.metrics.failures == 1
    feed(runner, b, [Boom])
    assert st(b) is rs.CircuitState.CLOSED  # only 2 failures in the window
    clock.set(10.999999)
    feed(runner, b, [Boom])
    assert st(b) is rs.CircuitState.OPEN


def test_idle_longer_than_window_clears_everything(runner: Runner, clock: FakeClock) -> None:
    b = cb(clock, failure_ratio=0.5, min_calls=2, window=4, buckets=4)
    feed(runner, b, [Boom])
    clock.advance(100)
    feed(runner, b, ["ok", "ok"])
    m = b.metrics
    assert (m.calls, m.failures, m.state) == (2, 0, rs.CircuitState.CLOSED)


def test_fast_path_respects_bucket_boundaries(runner: Runner, clock: FakeClock) -> None:
    b = cb(clock, failure_count=1, window=2, buckets=2)
    feed(runner, b, ["ok"] * 3)
    clock.set(1.0)
    feed(runner, b, ["ok"])
    clock.set(2.0)
    assert b.metrics.calls == 1  # the 3 calls of bucket 0 expired, the one of bucket 1 stays
    clock.set(3.0)
    assert b.metrics.calls == 0


# -- open and half-open ------------------------------------------------------------------------
def test_open_rejects_without_calling_then_admits_a_probe(runner: Runner, clock: FakeClock) -> None:
    rec = RecordingListener()
    b = cb(clock, failure_count=1, open_for=10, listeners=[rec])
    feed(runner, b, [Boom])
    clock.advance(9.999999)
    fn = runner.scripted(["ok"])
    with pytest.raises(rs.CircuitOpenError) as info:
        runner.run(b, fn)
    assert info.value.retry_after == pytest.approx(0.000001)
    assert info.value.policy == "cb"
    assert len(runner.calls) == 1  # only the failure: the rejected call never ran
    rejected = rec.of(CallRejected)
    assert len(rejected) == 1
    assert isinstance(rejected[0], CallRejected)
    assert rejected[0].reason == "circuit_open"
    clock.advance(0.000001)
    assert runner.run(b, fn) == "ok"
    assert st(b) is rs.CircuitState.CLOSED
    assert transitions(rec) == [
        ("closed", "open", "failure_count"),
        ("open", "half_open", "open_for_elapsed"),
        ("half_open", "closed", "probes_succeeded"),
    ]
    assert b.metrics.rejected == 1


def test_failed_probe_reopens_for_another_open_for(runner: Runner, clock: FakeClock) -> None:
    rec = RecordingListener()
    b = cb(clock, failure_count=1, open_for=10, listeners=[rec])
    feed(runner, b, [Boom])
    clock.advance(10)
    feed(runner, b, [Boom])
    assert st(b) is rs.CircuitState.OPEN
    assert b.metrics.retry_after == 10.0
    assert transitions(rec)[-1] == ("half_open", "open", "probe_failed")


def test_closing_starts_with_an_empty_window(runner: Runner, clock: FakeClock) -> None:
    b = cb(clock, failure_count=2, open_for=5)
    feed(runner, b, [Boom, Boom])
    clock.advance(5)
    feed(runner, b, ["ok"])
    assert st(b) is rs.CircuitState.CLOSED
    feed(runner, b, [Boom])  # one failure: the two before the opening are forgotten
    assert st(b) is rs.CircuitState.CLOSED
    assert b.metrics.failures == 1


def test_half_open_needs_every_probe_to_succeed(runner: Runner, clock: FakeClock) -> None:
    b = cb(clock, failure_count=1, half_open_calls=3)
    feed(runner, b, [Boom])
    clock.advance(10)
    feed(runner, b, ["ok", "ok"])
    assert st(b) is rs.CircuitState.HALF_OPEN
    feed(runner, b, ["ok"])
    assert st(b) is rs.CircuitState.CLOSED


def test_slow_probe_reopens(runner: Runner, clock: FakeClock) -> None:
    b = cb(clock, slow_call_ratio=1.0, slow_call_duration=1.0, min_calls=1)
    feed(runner, b, [Step("ok", 2)])
    clock.advance(10)
    feed(runner, b, [Step("ok", 2)])
    assert st(b) is rs.CircuitState.OPEN


def test_failure_probe_does_not_reopen_a_slow_only_breaker(
    runner: Runner, clock: FakeClock
) -> None:
    b = cb(clock, slow_call_ratio=1.0, slow_call_duration=1.0, min_calls=1)
    feed(runner, b, [Step("ok", 2)])
    clock.advance(10)
    feed(runner, b, [Boom])  # fast failure: slow calls are what this breaker watches
    assert st(b) is rs.CircuitState.CLOSED


# -- what counts (B-5) -------------------------------------------------------------------------
def test_ignored_exceptions_are_not_recorded(runner: Runner, clock: FakeClock) -> None:
    b = cb(clock, failure_count=1, on=Boom)
    fn = runner.scripted([KeyError("x")])
    with pytest.raises(KeyError):
        runner.run(b, fn)
    assert b.metrics.calls == 0
    assert st(b) is rs.CircuitState.CLOSED


def test_ignored_exception_releases_the_half_open_permit(runner: Runner, clock: FakeClock) -> None:
    b = cb(clock, failure_count=1, on=Boom)
    feed(runner, b, [Boom])
    clock.advance(10)
    feed(runner, b, [KeyError("validation")])  # the probe raised something not counted
    assert st(b) is rs.CircuitState.HALF_OPEN
    feed(runner, b, ["ok"])  # the permit came back: a new probe runs
    assert st(b) is rs.CircuitState.CLOSED


def test_on_result_predicate_counts_results_as_failures(runner: Runner, clock: FakeClock) -> None:
    b = cb(clock, failure_count=2, on_result=lambda r: r == 503)
    feed(runner, b, [200, 503])
    assert st(b) is rs.CircuitState.CLOSED
    fn = runner.scripted([503])
    assert runner.run(b, fn) == 503  # the result is returned, and recorded as a failure
    assert st(b) is rs.CircuitState.OPEN


def test_on_predicate(runner: Runner, clock: FakeClock) -> None:
    b = cb(clock, failure_count=1, on=lambda e: "fatal" in str(e))
    feed(runner, b, [Boom("benign")])
    assert st(b) is rs.CircuitState.CLOSED
    feed(runner, b, [Boom("fatal")])
    assert st(b) is rs.CircuitState.OPEN


# -- generations (CC-2) ------------------------------------------------------------------------
def test_outcome_of_a_call_started_before_a_transition_is_stale(
    runner: Runner, clock: FakeClock
) -> None:
    b = cb(clock, failure_count=1)

    def body() -> str:
        b.open()
        b.close()  # two transitions happen while this call runs
        raise Boom("late")

    with pytest.raises(Boom):
        runner.run(b, runner.wrap(body))
    m = b.metrics
    assert (m.state, m.calls, m.failures, m.stale) == (rs.CircuitState.CLOSED, 0, 0, 1)


def test_late_success_of_a_closed_call_does_not_close_half_open(clock: FakeClock) -> None:
    b = cb(clock, failure_count=1)
    em = rs._policy.Emitter((), None, "op")
    old = b._acquire_local(em)  # a slow call admitted while CLOSED
    b._record_local(b._acquire_local(em), 1, em)  # another call fails: OPEN
    clock.advance(10)
    assert st(b) is rs.CircuitState.HALF_OPEN
    b._record_local(old, 0, em)  # the old call finally succeeds
    assert st(b) is rs.CircuitState.HALF_OPEN
    assert b.metrics.stale == 1


# -- never stuck (CC-3) ------------------------------------------------------------------------
def test_cancelled_probe_gives_its_permit_back(clock: FakeClock) -> None:
    b = cb(clock, failure_count=1)
    b.open()
    b.close()
    feed(Runner("sync", clock), b, [Boom])
    clock.advance(10)

    async def main() -> None:
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await asyncio.Event().wait()

        task = asyncio.ensure_future(b.acall(hang))
        await started.wait()
        with pytest.raises(rs.CircuitOpenError):
            await b.acall(asyncio.sleep, 0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await b.acall(asyncio.sleep, 0)  # the permit was returned: this probe runs

    asyncio.run(main())
    assert st(b) is rs.CircuitState.CLOSED


def test_sync_base_exception_releases_the_permit(clock: FakeClock) -> None:
    class Interrupt(BaseException):
        pass

    b = cb(clock, failure_count=1)
    b._record_local(b._acquire_local(rs._policy.Emitter((), None, "")), 1, b._emitter(None, b))
    clock.advance(10)

    def interrupted() -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        b.call(interrupted)
    assert b.call(lambda: "probe") == "probe"
    assert st(b) is rs.CircuitState.CLOSED


def test_hung_probe_cannot_wedge_the_breaker(clock: FakeClock) -> None:
    rec = RecordingListener()
    b = cb(clock, failure_count=1, open_for=10, half_open_timeout=3, listeners=[rec])
    em = b._emitter(None, b)
    b._record_local(b._acquire_local(em), 1, em)
    clock.advance(10)
    hung = b._acquire_local(em)  # a probe that will never report (swallowed, hung)
    clock.advance(2.999999)
    with pytest.raises(rs.CircuitOpenError) as info:
        b.call(lambda: None)
    assert info.value.retry_after == pytest.approx(0.000001)
    clock.advance(0.000001)
    assert st(b) is rs.CircuitState.OPEN  # half-open timeout: reopened and re-armed
    clock.advance(10)
    assert b.call(lambda: "fresh probe") == "fresh probe"
    assert st(b) is rs.CircuitState.CLOSED
    b._record_local(hung, 1, em)  # the hung probe finally fails: stale, decides nothing
    assert st(b) is rs.CircuitState.CLOSED
    assert transitions(rec)[1:] == [
        ("open", "half_open", "open_for_elapsed"),
        ("half_open", "open", "half_open_timeout"),
        ("open", "half_open", "open_for_elapsed"),
        ("half_open", "closed", "probes_succeeded"),
    ]


def test_half_open_timeout_is_armed_only_by_a_probe(clock: FakeClock) -> None:
    b = cb(clock, failure_count=1, open_for=10, half_open_timeout=3)
    b.call(lambda: None)
    with pytest.raises(Boom):
        b.call(Runner("sync", clock).scripted([Boom]))
    clock.advance(10)
    assert st(b) is rs.CircuitState.HALF_OPEN
    clock.advance(1000)  # nobody called: no probe outstanding, no timeout
    assert st(b) is rs.CircuitState.HALF_OPEN
    assert b.call(lambda: "probe") == "probe"


# -- manual control, metrics, events (B-7) -----------------------------------------------------
def test_manual_open_holds_until_close(runner: Runner, clock: FakeClock) -> None:
    rec = RecordingListener()
    b = cb(clock, failure_ratio=0.5, listeners=[rec])
    b.open()
    b.open()  # idempotent: one event
    clock.advance(10_000)
    assert st(b) is rs.CircuitState.OPEN
    fn = runner.scripted(["ok"])
    with pytest.raises(rs.CircuitOpenError) as info:
        runner.run(b, fn)
    assert info.value.retry_after is None
    b.close()
    b.close()
    assert runner.run(b, fn) == "ok"
    assert transitions(rec) == [("closed", "open", "manual"), ("open", "closed", "manual")]


def test_forced_open_says_so_and_has_no_timer(runner: Runner, clock: FakeClock) -> None:
    b = cb(clock, failure_count=1, open_for=5)
    fn = runner.scripted([Boom, "ok"])
    with pytest.raises(Boom):
        runner.run(b, fn)
    with pytest.raises(rs.CircuitOpenError) as tripped:
        runner.run(b, fn)
    assert (tripped.value.forced, tripped.value.retry_after) == (False, 5.0)
    assert b.metrics.forced is False
    b.open()  # forced open over a tripped one: the timer is gone
    clock.advance(5)
    with pytest.raises(rs.CircuitOpenError) as forced:
        runner.run(b, fn)
    assert (forced.value.forced, forced.value.retry_after) == (True, None)
    assert "forced open" in str(forced.value)
    m = b.metrics
    assert (m.state, m.forced, m.retry_after) == (rs.CircuitState.OPEN, True, None)
    b.close()
    assert b.metrics.forced is False


def test_forced_open_in_a_store_never_expires(clock: FakeClock) -> None:
    store = rs.MemoryStore(clock=clock)
    a = cb(clock, failure_count=1, store=store)
    a.open()
    clock.advance(timedelta(days=365).total_seconds())  # far past any TTL the state had
    b = cb(clock, failure_count=1, store=store)
    assert st(b) is rs.CircuitState.OPEN
    assert b.metrics.forced is True
    with pytest.raises(rs.CircuitOpenError) as info:
        b.call(lambda: "never")
    assert info.value.forced is True
    b.close()
    assert a.call(lambda: "ok") == "ok"


def test_reset_clears_window_and_counters(runner: Runner, clock: FakeClock) -> None:
    b = cb(clock, failure_count=1)
    feed(runner, b, [Boom, "ok"])
    assert b.metrics.rejected == 1
    b.reset()
    m = b.metrics
    assert (m.state, m.calls, m.rejected, m.consecutive_opens) == (rs.CircuitState.CLOSED, 0, 0, 0)
    assert (m.failure_ratio, m.slow_call_ratio, m.retry_after) == (None, None, None)


def test_metrics_snapshot_is_read_only(clock: FakeClock) -> None:
    b = cb(clock, failure_ratio=0.5, slow_call_ratio=0.5, slow_call_duration=1)
    b.call(lambda: None)
    m = b.metrics
    with pytest.raises(AttributeError):
        m.calls = 5  # type: ignore[misc]
    assert (m.calls, m.failures, m.slow_calls, m.slow_call_ratio) == (1, 0, 0, 0.0)


def test_raising_listener_never_breaks_the_call_or_the_transition(
    runner: Runner, clock: FakeClock
) -> None:
    def bad(event: object) -> None:
        raise RuntimeError("listener bug")

    b = cb(clock, failure_count=1, listeners=[bad])
    feed(runner, b, [Boom])
    assert st(b) is rs.CircuitState.OPEN


def test_events_carry_pipeline_and_operation(runner: Runner, clock: FakeClock) -> None:
    rec = RecordingListener()
    b = cb(clock, failure_count=1)
    pipeline = rs.Pipeline(b, name="checkout", listeners=[rec])
    fn = runner.scripted([Boom])
    with pytest.raises(Boom):
        runner.run(pipeline, fn)
    (event,) = rec.of(CircuitStateChanged)
    assert event.pipeline == "checkout"
    assert event.policy == "cb"
    assert event.operation


# -- dynamic open duration ---------------------------------------------------------------------
def test_exponential_open_duration_on_repeated_opens(runner: Runner, clock: FakeClock) -> None:
    b = cb(
        clock,
        failure_count=1,
        open_for=rs.backoff.exponential(initial=10, maximum=30, jitter="none"),
    )
    feed(runner, b, [Boom])
    seen = []
    for _ in range(4):
        seen.append(b.metrics.retry_after)
        clock.advance(b.metrics.retry_after or 0)
        feed(runner, b, [Boom])  # the probe fails: open again, for longer
    assert seen == [10.0, 20.0, 30.0, 30.0]
    assert b.metrics.consecutive_opens == 5
    clock.advance(30)
    feed(runner, b, ["ok"])
    feed(runner, b, [Boom])
    assert b.metrics.retry_after == 10.0  # closing reset the sequence


# -- stores ------------------------------------------------------------------------------------
def test_store_backed_breakers_share_state(runner: Runner, clock: FakeClock) -> None:
    store = rs.MemoryStore(clock=clock)
    a = cb(clock, failure_count=2, store=store)
    feed(runner, a, [Boom])
    b = cb(clock, failure_count=2, store=store)  # constructing never resets shared state
    feed(runner, b, [Boom])
    assert st(a) is rs.CircuitState.OPEN
    fn = runner.scripted(["ok"])
    with pytest.raises(rs.CircuitOpenError):
        runner.run(a, fn)
    clock.advance(10)
    assert runner.run(b, fn) == "ok"
    assert st(a) is rs.CircuitState.CLOSED
    assert store.get("cb:cb") is not None


def test_store_and_in_process_follow_the_same_rules(runner: Runner, clock: FakeClock) -> None:
    store = rs.MemoryStore(clock=clock)
    plan: list[Any] = ["ok", Boom, Step("ok", 3), Boom, "ok", Boom, Boom, "ok", Boom]
    local = cb(clock, failure_ratio=0.5, slow_call_ratio=0.5, slow_call_duration=2, min_calls=4)
    shared = cb(
        clock,
        failure_ratio=0.5,
        slow_call_ratio=0.5,
        slow_call_duration=2,
        min_calls=4,
        store=store,
    )
    for step in plan:
        clock.advance(1)
        feed(runner, local, [step])
        feed(runner, shared, [step])
        assert local.metrics == shared.metrics


@pytest.mark.parametrize("mode", ["local", "open", "closed"])
def test_on_store_error(runner: Runner, clock: FakeClock, mode: Any) -> None:
    rec = RecordingListener()
    b = cb(clock, failure_count=1, store=BrokenStore(), on_store_error=mode, listeners=[rec])
    fn = runner.scripted(["ok"])
    if mode == "closed":
        with pytest.raises(rs.CircuitOpenError):
            runner.run(b, fn)
    else:
        assert runner.run(b, fn) == "ok"
    failed = [e for e in rec.events if e.kind == "store_error"]
    assert failed
    assert getattr(failed[0], "decision", None) == mode
    if mode == "local":
        feed(runner, b, [Boom])
        assert st(b) is rs.CircuitState.OPEN  # the local state machine took over
        feed(runner, b, ["ok"])
        assert b.metrics.rejected == 1
