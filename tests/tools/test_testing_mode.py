"""Test mode (``rs.testing.set_testing`` / ``testing_mode``): policies on the process clock,
decorated at import time included, wait on one process-wide fake clock; own clocks are left
alone; the mode nests and is restored; threads and several event loops share it."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

import resilience as rs
from resilience import _clock, _clock_wheel
from resilience.testing import FakeClock, RecordingListener, set_testing, testing_mode

from ..helpers import Boom

#: everything below is decorated when this module is imported, with the default clock
REC = RecordingListener()
CALLS: list[float] = []


def _record_and_fail() -> None:
    CALLS.append(_clock.SYSTEM_CLOCK.monotonic())
    raise Boom("down")


@rs.Retry(on=Boom, attempts=4, backoff=rs.backoff.constant(30), listeners=[REC])
def slow_retry() -> None:
    _record_and_fail()


@rs.Retry(on=Boom, attempts=4, backoff=rs.backoff.constant(30), listeners=[REC])
async def slow_retry_async() -> None:
    _record_and_fail()


@rs.Retry(on=Boom, attempts=10, backoff=rs.backoff.constant(4), max_elapsed=10, listeners=[REC])
def bounded_retry() -> None:
    _record_and_fail()


@rs.Timeout(5)
@rs.Retry(on=Boom, attempts=10, backoff=rs.backoff.constant(2), listeners=[REC])
async def retry_under_timeout() -> None:
    _record_and_fail()


@rs.Timeout(0.05)
async def hangs() -> None:
    await asyncio.Event().wait()  # nothing sets it: only the timeout ends this


@rs.Timeout(1)
async def sleeps_past_its_deadline() -> str:
    clock = rs.testing.testing_clock()
    assert clock is not None
    await clock.asleep(5)
    return "late"


@rs.Timeout(5)
def reads_the_deadline() -> float | None:
    clock = rs.testing.testing_clock()
    assert clock is not None
    clock.advance(2)
    return rs.remaining()


BREAKER = rs.CircuitBreaker("tm-api", failure_count=1, open_for=60)


def _open_retry_after(exc: BaseException | object) -> float | None:
    return exc.retry_after if isinstance(exc, rs.CircuitOpenError) else None


FLAKY: list[int] = []


@rs.Retry(
    on=(Boom, rs.CircuitOpenError),
    attempts=3,
    backoff=rs.backoff.constant(0),
    retry_after=_open_retry_after,
)
@BREAKER
def through_breaker() -> str:
    FLAKY.append(1)
    if len(FLAKY) == 1:
        raise Boom("first call fails")
    return "ok"


LIMITER = rs.RateLimiter("tm-limit", rate=1, per=1.0, burst=1, max_wait=10)


@LIMITER
def limited() -> str:
    return "in"


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    REC.clear()
    CALLS.clear()
    FLAKY.clear()
    yield
    assert not rs.testing.is_testing(), "a test left test mode on"


def test_backoffs_of_an_import_time_retry_take_no_real_time() -> None:
    t0 = time.monotonic()
    with testing_mode() as clock:
        start = clock.monotonic()
        with pytest.raises(Boom):
            slow_retry()
    assert time.monotonic() - t0 < 30  # would be 90 s of real sleeping outside test mode
    assert clock.sleeps == [30, 30, 30]
    assert [c - start for c in CALLS] == [0, 30, 60, 90]
    assert REC.kinds() == ["retry"] * 3 + ["retries_exhausted"]


def test_the_test_mode_clock_starts_on_a_whole_second() -> None:
    # durations add up exactly from there: 30 s three times is 90 s, not 90.00000000000023
    with testing_mode() as clock:
        start = clock.monotonic()
        for _ in range(3):
            clock.sleep(30)
        assert start.is_integer()
        assert start >= time.monotonic() - 1
        assert clock.monotonic() - start == 90


async def test_async_backoffs_take_no_real_time() -> None:
    with testing_mode(clock=FakeClock()) as clock, pytest.raises(Boom):
        await slow_retry_async()
    assert CALLS == [0, 30, 60, 90]
    assert clock.sleeps == [30, 30, 30]


def test_max_elapsed_counts_the_skipped_backoffs() -> None:
    with testing_mode(clock=FakeClock()) as clock, pytest.raises(Boom):
        bounded_retry()
    assert clock.sleeps == [4, 4]  # a third backoff would end at 12 s > max_elapsed
    assert REC.last(rs.events.RetriesExhausted).reason == "max_elapsed"


async def test_an_import_time_timeout_publishes_its_deadline_on_virtual_time() -> None:
    with testing_mode(clock=FakeClock()) as clock, pytest.raises(Boom):
        await retry_under_timeout()
    assert clock.sleeps == [2, 2]  # a third one would reach the 5 s deadline
    assert REC.last(rs.events.RetriesExhausted).reason == "deadline"


def test_the_published_deadline_is_read_on_the_fake_clock() -> None:
    with testing_mode(clock=FakeClock()):
        assert reads_the_deadline() == 3.0


async def test_a_coroutine_that_really_hangs_is_still_cut_off_in_real_time() -> None:
    # the fake clock reads 0 here: armed on loop time without conversion, the 0.05 s deadline
    # would have fired long ago (at once); it must fire 0.05 s of real time from now
    with testing_mode(clock=FakeClock()) as clock:
        t0 = time.monotonic()
        with pytest.raises(rs.TimeoutExceededError):
            await hangs()
        assert time.monotonic() - t0 >= 0.045
        assert clock.monotonic() == 0.0  # and the real wait did not move virtual time


async def test_a_wheel_made_before_test_mode_converts_in_it() -> None:
    @rs.Timeout(5)
    async def quick() -> str:
        return "ok"

    assert await quick() == "ok"  # this loop's wheel exists now, on loop time
    loop = asyncio.get_running_loop()
    assert _clock_wheel._wheels[loop].same_clock
    with testing_mode(clock=FakeClock()):
        assert not _clock_wheel._wheels[loop].same_clock
        t0 = time.monotonic()
        with pytest.raises(rs.TimeoutExceededError):
            await hangs()
        assert time.monotonic() - t0 >= 0.045
    assert _clock_wheel._wheels[loop].same_clock  # restored


async def test_a_call_returning_past_its_virtual_deadline_timed_out() -> None:
    with testing_mode(clock=FakeClock()) as clock, pytest.raises(rs.TimeoutExceededError):
        await sleeps_past_its_deadline()
    assert clock.monotonic() == 5.0


def test_a_retry_waits_out_an_import_time_breaker_on_virtual_time() -> None:
    BREAKER.reset()
    try:
        with testing_mode(clock=FakeClock()) as clock:
            assert through_breaker() == "ok"
            assert clock.sleeps == [60.0]  # the breaker's retry_after, skipped
            assert BREAKER.state is rs.CircuitState.CLOSED
        assert FLAKY == [1, 1]  # the failure, then the probe after open_for
    finally:
        BREAKER.reset()


def test_a_limiter_wait_is_virtual() -> None:
    # the limiter's bucket was filled when this module was imported, on real time: a fresh
    # timeline goes on from there (a FakeClock() starting at 0 would be long before it)
    with testing_mode() as clock:
        assert limited() == "in"
        assert limited() == "in"  # waited its 1 s slot
        assert clock.sleeps == [pytest.approx(1.0)]


def test_policies_with_their_own_clock_are_left_alone() -> None:
    own = FakeClock()
    retry = rs.Retry(on=Boom, attempts=3, backoff=rs.backoff.constant(1), clock=own)
    real = rs.CircuitBreaker("tm-real", failure_count=1, open_for=60, clock=rs.SystemClock())
    with testing_mode(attempts=1) as clock:
        with pytest.raises(Boom):
            retry.call(_record_and_fail)
        with pytest.raises(Boom):
            real.call(_record_and_fail)
        clock.advance(3600)
        assert real.state is rs.CircuitState.OPEN  # it reads real time
    assert len(CALLS) == 4  # three attempts: the cap is for the process clock's retries
    assert own.sleeps == [1, 1]
    assert clock.sleeps == []


def test_attempts_caps_default_clock_retries() -> None:
    with testing_mode(attempts=1) as clock:
        assert slow_retry.__wrapped__ is not None  # type: ignore[attr-defined]
        with pytest.raises(Boom):
            slow_retry()
        assert len(CALLS) == 1
        assert clock.sleeps == []
        big = rs.Retry(on=Boom, attempts=2)
        assert big.attempts == 1
        assert big.describe()["attempts"] == 1
    with testing_mode(attempts=10):
        assert rs.Retry(on=Boom, attempts=2).attempts == 2  # a cap, not a new count
    assert "attempts" not in rs.Retry.__dict__  # nothing left on the class
    assert rs.Retry(on=Boom, attempts=2).attempts == 2


def test_modes_nest_and_are_restored() -> None:
    assert rs.testing.testing_clock() is None
    outer_clock = FakeClock()
    with testing_mode(clock=outer_clock, attempts=2) as outer:
        assert outer is outer_clock
        with testing_mode(attempts=1) as inner:
            assert inner is outer  # the timeline goes on
            assert rs.Retry(on=Boom, attempts=5).attempts == 1
        assert rs.Retry(on=Boom, attempts=5).attempts == 2
        other = FakeClock(start=50)
        with testing_mode(clock=other) as swapped:
            assert swapped is other
            assert _clock.SYSTEM_CLOCK.monotonic() == 50
            assert rs.Retry(on=Boom, attempts=5).attempts == 5  # no cap in this block
        assert rs.testing.testing_clock() is outer
        assert _clock.SYSTEM_CLOCK.monotonic() == 0
    assert not rs.testing.is_testing()
    assert abs(_clock.SYSTEM_CLOCK.monotonic() - time.monotonic()) < 1
    assert abs(_clock.SYSTEM_CLOCK.time() - time.time()) < 1


def test_the_mode_is_restored_when_the_block_raises() -> None:
    with pytest.raises(Boom), testing_mode(attempts=1):
        raise Boom("in the block")
    assert not rs.testing.is_testing()
    assert "attempts" not in rs.Retry.__dict__


def test_set_testing_switches_on_and_off() -> None:
    try:
        set_testing(True)
        clock = rs.testing.testing_clock()
        assert clock is not None
        # a new timeline goes on from the real readings (or later: see the next test), its
        # two readings ahead of the real ones by the same amount
        ahead = clock.monotonic() - time.monotonic()
        assert ahead > -1
        assert abs(clock.time() - time.time() - ahead) < 1
        set_testing(True, attempts=1)
        assert rs.testing.testing_clock() is clock
        assert rs.Retry(on=Boom).attempts == 1
    finally:
        set_testing(False)
    assert rs.testing.testing_clock() is None
    assert rs.Retry(on=Boom).attempts == 3


def test_a_new_timeline_goes_on_from_where_virtual_time_was_left() -> None:
    with testing_mode() as first:
        first.advance(10_000)
        left_at = first.monotonic()
    with testing_mode() as second:
        assert second is not first
        assert second.monotonic() >= left_at  # not back to real time: never before the past
        assert second.sleeps == []


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((1,), {}, "testing must be True or False"),
        ((True,), {"attempts": 0}, "attempts must be an integer >= 1"),
        ((True,), {"clock": rs.SystemClock()}, "clock must be a resilience.testing.FakeClock"),
        ((False,), {"attempts": 1}, "only apply to set_testing(True)"),
    ],
)
def test_set_testing_validates(
    args: tuple[object], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(rs.ConfigurationError, match=re.escape(message)):
        set_testing(*args, **kwargs)  # type: ignore[arg-type]
    assert not rs.testing.is_testing()


def test_threads_share_the_virtual_clock() -> None:
    with testing_mode(clock=FakeClock()) as clock, ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(slow_retry) for _ in range(4)]
        for f in futures:
            with pytest.raises(Boom):
                f.result()
    assert clock.sleeps == [30] * 12
    assert clock.monotonic() == 360  # every thread's sleeps advanced the one clock
    assert len(CALLS) == 16


def test_several_event_loops_share_the_virtual_clock() -> None:
    results: list[str] = []
    start = threading.Barrier(2)

    def run_loop() -> None:
        async def main() -> None:
            start.wait()
            with pytest.raises(Boom):
                await slow_retry_async()
            with pytest.raises(rs.TimeoutExceededError):
                await hangs()  # each loop's own wheel converts the fake deadline
            results.append("done")

        asyncio.run(main())

    with testing_mode(clock=FakeClock()) as clock:
        threads = [threading.Thread(target=run_loop) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == ["done", "done"]
    assert clock.sleeps == [30] * 6


def test_outside_test_mode_the_process_clock_is_the_system_clock() -> None:
    process = _clock.SYSTEM_CLOCK
    assert isinstance(process, rs.SystemClock)
    assert isinstance(process, rs.DeadlineClock)
    assert rs.SystemClock().monotonic is time.monotonic  # an explicit one is never redirected
    assert process.monotonic.func is time.monotonic  # type: ignore[attr-defined]
    assert process.time.func is time.time  # type: ignore[attr-defined]
    assert repr(process) == "SYSTEM_CLOCK"
    with testing_mode(clock=FakeClock()):
        assert repr(process).startswith("SYSTEM_CLOCK(testing, ")
    assert process.monotonic.func is time.monotonic  # type: ignore[attr-defined]


def test_recording_listener_last_and_clear() -> None:
    rec = RecordingListener()
    rec(rs.events.RateLimitWaited(policy="a", wait=1.0))
    rec(rs.events.TimeoutElapsed(policy="b", timeout=2.0))
    rec(rs.events.RateLimitWaited(policy="c", wait=3.0))
    assert rec.last(rs.events.RateLimitWaited).policy == "c"
    assert rec.last(rs.events.TimeoutElapsed).timeout == 2.0
    assert [e.policy for e in rec.of(rs.events.RateLimitWaited)] == ["a", "c"]
    rec.clear()
    assert rec.events == []
    with pytest.raises(LookupError, match="no RateLimitWaited event among 0 recorded: none"):
        rec.last(rs.events.RateLimitWaited)
