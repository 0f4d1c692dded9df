"""Timeout: async cancellation, sync honesty, deadline publication."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest

import resilience as rs
from resilience.events import TimeoutElapsed
from resilience.testing import FakeClock, RecordingListener

from ..conftest import Runner, Step


def test_fast_call_returns_its_result(runner: Runner, clock: FakeClock) -> None:
    fn = runner.scripted([Step("done", duration=0.4)])
    assert runner.run(rs.Timeout(0.5, clock=clock), fn) == "done"


def test_slow_call_raises_timeout_exceeded(runner: Runner, clock: FakeClock) -> None:
    rec = RecordingListener()
    fn = runner.scripted([Step("late", duration=2.0)])
    with pytest.raises(rs.TimeoutExceededError) as info:
        runner.run(rs.Timeout(0.5, clock=clock, listeners=[rec], name="t"), fn)
    assert isinstance(info.value, TimeoutError)
    assert info.value.timeout == 0.5
    assert info.value.policy == "t"
    assert [type(e) for e in rec.events] == [TimeoutElapsed]
    if runner.is_async:
        assert clock.monotonic() == 0.5  # cancelled exactly at the deadline
    else:
        assert clock.monotonic() == 2.0  # sync code cannot be interrupted: raised on return


def test_deadline_is_visible_to_inner_code(runner: Runner, clock: FakeClock) -> None:
    seen: list[float | None] = []

    def body() -> str:
        clock.advance(0.25)
        seen.append(rs.remaining())
        d = rs.deadline()
        assert d is not None
        seen.append(d.at)
        return "ok"

    assert runner.run(rs.Timeout(2, clock=clock), runner.wrap(body)) == "ok"
    assert seen == [1.75, 2.0]
    assert rs.deadline() is None  # reset after the call


def test_nested_deadlines_only_tighten(runner: Runner, clock: FakeClock) -> None:
    seen: list[float | None] = []
    fn = runner.wrap(lambda: seen.append(rs.remaining()))
    runner.run(rs.Pipeline(rs.Timeout(1, clock=clock), rs.Timeout(5, clock=clock)), fn)
    runner.run(rs.Pipeline(rs.Timeout(5, clock=clock), rs.Timeout(1, clock=clock)), fn)
    assert seen == [1.0, 1.0]


def test_inner_error_after_deadline_becomes_timeout(runner: Runner, clock: FakeClock) -> None:
    fn = runner.scripted([Step(ConnectionError("read timed out"), duration=0.5)])
    if runner.is_async:
        # async: cancelled at the deadline before the inner error happens
        with pytest.raises(rs.TimeoutExceededError):
            runner.run(rs.Timeout(0.5, clock=clock), fn)
    else:
        with pytest.raises(rs.TimeoutExceededError) as info:
            runner.run(rs.Timeout(0.5, clock=clock), fn)
        assert isinstance(info.value.__cause__, ConnectionError)


def test_inner_error_before_deadline_propagates(runner: Runner, clock: FakeClock) -> None:
    fn = runner.scripted([Step(KeyError("k"), duration=0.1)])
    with pytest.raises(KeyError):
        runner.run(rs.Timeout(0.5, clock=clock), fn)


async def test_async_inner_cleanup_runs_and_no_task_leaks(clock: FakeClock) -> None:
    cleaned: list[float] = []

    async def work() -> None:
        try:
            await clock.asleep(10)
        finally:
            cleaned.append(clock.monotonic())

    before = len(asyncio.all_tasks())
    with pytest.raises(rs.TimeoutExceededError):
        await rs.Timeout(1.5, clock=clock).acall(work)
    assert cleaned == [1.5]
    assert len(asyncio.all_tasks()) == before


async def test_async_outer_cancellation_is_not_turned_into_timeout(clock: FakeClock) -> None:
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(rs.Timeout(100, clock=clock).acall(work))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_async_timeout_with_real_clock() -> None:
    loop = asyncio.get_running_loop()

    async def work() -> None:
        await asyncio.sleep(5)

    t0 = loop.time()
    with pytest.raises(rs.TimeoutExceededError):
        await rs.Timeout(0.05).acall(work)
    assert loop.time() - t0 < 1.0


def test_retry_inside_timeout_with_per_attempt_timeout(runner: Runner, clock: FakeClock) -> None:
    # attempt 1 hangs (cut at 1 s by the per-attempt timeout), attempt 2 succeeds
    fn = runner.scripted([Step("slow", duration=5.0), Step("fast", duration=0.1)])
    policy = rs.Pipeline(
        rs.Timeout(10, clock=clock, name="total"),
        rs.Retry(
            on=rs.TimeoutExceededError, attempts=3, backoff=rs.backoff.constant(0), clock=clock
        ),
        rs.Timeout(1, clock=clock, name="attempt"),
    )
    assert runner.run(policy, fn) == "fast"
    assert len(runner.calls) == 2


class TestThreadMode:
    def test_blocked_worker_times_out_on_time(self, clock: FakeClock) -> None:
        gate = threading.Event()
        policy = rs.Timeout(2, sync="thread", max_workers=2, clock=clock)

        def stuck() -> None:  # two fake seconds of work, then blocked for good
            clock.advance(2)
            gate.wait()

        try:
            with pytest.raises(rs.TimeoutExceededError):
                policy.call(stuck)
            assert clock.monotonic() == 2.0
        finally:
            gate.set()

    def test_result_and_deadline_in_worker(self, clock: FakeClock) -> None:
        policy = rs.Timeout(3, sync="thread", clock=clock)
        assert policy.call(lambda: rs.remaining()) == 3.0

    def test_worker_slower_than_the_limit_times_out(self, clock: FakeClock) -> None:
        # the worker finishes, but 5 fake seconds after a 2 s limit: a late result is discarded
        policy = rs.Timeout(2, sync="thread", clock=clock)
        with pytest.raises(rs.TimeoutExceededError):
            policy.call(lambda: clock.sleep(5))
        assert clock.monotonic() == 5.0

    def test_worker_exception_propagates(self, clock: FakeClock) -> None:
        policy = rs.Timeout(3, sync="thread", clock=clock)
        with pytest.raises(ZeroDivisionError):
            policy.call(lambda: 1 / 0)

    def test_over_subscription_is_rejected_at_once(self, clock: FakeClock) -> None:
        gate = threading.Event()
        policy = rs.Timeout(2, sync="thread", max_workers=1, clock=clock)

        def stuck() -> None:
            clock.advance(2)
            gate.wait()

        try:
            with pytest.raises(rs.TimeoutExceededError):
                policy.call(stuck)  # occupies the only worker
            t = clock.monotonic()
            with pytest.raises(rs.TimeoutExceededError, match="workers are busy"):
                policy.call(lambda: None)
            assert clock.monotonic() == t  # no waiting at all
        finally:
            gate.set()


def test_deadline_scope_publishes_and_tightens(clock: FakeClock) -> None:
    with rs.deadline_scope(5, clock=clock):
        with rs.deadline_scope(timedelta(seconds=10), clock=clock) as inner:
            assert inner.at == 5.0
        clock.advance(1)
        assert rs.remaining() == 4.0
    assert rs.remaining() is None


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0,), {}, "seconds must be > 0"),
        ((-1,), {}, "seconds must be > 0"),
        (("5",), {}, "seconds must be a number"),
        ((float("inf"),), {}, "seconds must be finite"),
        ((1,), {"sync": "kill"}, "sync must be 'cooperative' or 'thread'"),
        ((1,), {"max_workers": 0}, "max_workers must be an integer >= 1"),
        ((1,), {"clock": object()}, "clock must provide"),
    ],
)
def test_invalid_configuration(args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(rs.ConfigurationError, match=message):
        rs.Timeout(*args, **kwargs)


def test_timedelta_and_keyword() -> None:
    assert rs.Timeout(timedelta(milliseconds=250)).seconds == 0.25
    assert rs.Timeout(seconds=2).seconds == 2.0


class TestSystemClockWheel:
    """The system clock's async path: one shared timer per loop over a lazy deadline heap."""

    async def test_outer_cancellation_is_not_a_timeout(self) -> None:
        started = asyncio.Event()

        async def work() -> None:
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(rs.Timeout(100).acall(work))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def test_dead_entries_are_compacted(self) -> None:
        from resilience._clock_wheel import _wheel_for

        async def quick() -> int:
            return 1

        policy = rs.Timeout(100)
        for _ in range(5000):  # never yields to the loop: the timer never fires
            await policy.acall(quick)
        wheel = _wheel_for(asyncio.get_running_loop())
        assert len(wheel.heap) <= 2 * 257

    async def test_many_concurrent_deadlines_fire_in_order(self) -> None:
        fired: list[int] = []

        async def sleeper(i: int) -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                fired.append(i)
                raise

        async def run(i: int) -> str:
            try:
                await rs.Timeout(0.01 + i * 0.03).acall(sleeper, i)
            except rs.TimeoutExceededError:
                return "timeout"
            return "done"

        results = await asyncio.gather(*[run(i) for i in reversed(range(10))])
        assert results == ["timeout"] * 10
        assert fired == list(range(10))

    async def test_nested_timeouts_inner_fires(self) -> None:
        async def hang() -> None:
            await asyncio.sleep(10)

        inner = rs.Timeout(0.01, name="inner")
        outer = rs.Timeout(5, name="outer")
        with pytest.raises(rs.TimeoutExceededError) as info:
            await rs.Pipeline(outer, inner).acall(hang)
        assert info.value.policy == "inner"
