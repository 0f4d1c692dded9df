"""The clock protocols: checked in full at construction, a fake clock that never reads or waits
on real time, and per-loop deadline state that is never patched onto the event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest

import resilience as rs
from resilience import _clock, _clock_wheel
from resilience.testing import FakeClock


class Readings:
    """A plain four-method :class:`rs.Clock`: readings and sleeps, no deadline waits."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    def sleep(self, seconds: float, /) -> None:
        self.now += max(0.0, seconds)

    async def asleep(self, seconds: float, /) -> None:
        self.now += max(0.0, seconds)


DEADLINE_POLICIES: list[tuple[str, Callable[[Any], object]]] = [
    ("Timeout", lambda clock: rs.Timeout(1, clock=clock)),
    ("Timeout(sync=thread)", lambda clock: rs.Timeout(1, sync="thread", clock=clock)),
    ("Bulkhead", lambda clock: rs.Bulkhead("db", max_concurrent=1, max_wait=1, clock=clock)),
]


@pytest.mark.parametrize(("_name", "build"), DEADLINE_POLICIES)
def test_a_four_method_clock_is_refused_at_construction(
    _name: str, build: Callable[[Any], object]
) -> None:
    # on main this clock was accepted and failed at call time with AttributeError
    with pytest.raises(rs.ConfigurationError) as info:
        build(Readings())
    message = str(info.value)
    assert "Readings lacks deadline_scope() and wait_future()" in message
    assert "DeadlineClock" in message


def test_a_four_method_clock_serves_the_policies_that_only_read_and_sleep() -> None:
    clock = Readings()
    calls: list[float] = []

    def flaky() -> str:
        calls.append(clock.monotonic())
        if len(calls) < 3:
            raise OSError("boom")
        return "ok"

    retry = rs.Retry(on=OSError, attempts=3, backoff=rs.backoff.constant(1.5), clock=clock)
    assert retry.call(flaky) == "ok"
    assert calls == [0.0, 1.5, 3.0]
    assert isinstance(clock, rs.Clock)
    assert not isinstance(clock, rs.DeadlineClock)


def test_every_missing_method_is_named() -> None:
    class OnlyMonotonic:
        def monotonic(self) -> float:
            return 0.0

    with pytest.raises(rs.ConfigurationError, match=r"OnlyMonotonic lacks time\(\), sleep\(\) "):
        rs.Retry(on=OSError, clock=OnlyMonotonic())  # type: ignore[arg-type]
    with pytest.raises(
        rs.ConfigurationError,
        match=r"lacks time\(\), sleep\(\), asleep\(\), deadline_scope\(\) and wait_future\(\)",
    ):
        rs.Timeout(1, clock=OnlyMonotonic())  # type: ignore[arg-type]


def test_a_non_callable_attribute_is_not_a_method() -> None:
    class Broken(Readings):
        sleep = 5  # type: ignore[assignment]

    with pytest.raises(rs.ConfigurationError, match=r"Broken lacks sleep\(\)$"):
        rs.Retry(on=OSError, clock=Broken())  # type: ignore[arg-type]


def test_shipped_clocks_satisfy_every_protocol() -> None:
    for clock in (rs.SystemClock(), FakeClock()):
        assert isinstance(clock, rs.Clock)
        assert isinstance(clock, rs.DeadlineClock)
        rs.Timeout(1, clock=clock)
        rs.Bulkhead("db", max_concurrent=1, clock=clock)
    assert isinstance(FakeClock(), _clock.TimerClock)
    assert not isinstance(rs.SystemClock(), _clock.TimerClock)


# -- a fake clock never touches real time ------------------------------------------------------
def _forbid_real_time(monkeypatch: pytest.MonkeyPatch) -> None:
    def real_time(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a FakeClock test touched real time")

    for name in ("sleep", "monotonic", "time", "perf_counter", "monotonic_ns", "time_ns"):
        monkeypatch.setattr(time, name, real_time)
    monkeypatch.setattr(concurrent.futures, "wait", real_time)
    timed_wait = threading.Condition.wait

    def untimed_wait(self: threading.Condition, timeout: float | None = None) -> bool:
        if timeout is not None:
            raise AssertionError("a FakeClock test waited on a real-time timeout")
        return timed_wait(self)

    monkeypatch.setattr(threading.Condition, "wait", untimed_wait)


def test_fake_clock_sync_paths_never_read_or_wait_on_real_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    gate = threading.Event()
    pool_timeout = rs.Timeout(2, sync="thread", max_workers=1, clock=clock)
    pool_timeout.call(lambda: None)  # the worker thread exists before real time is forbidden
    _forbid_real_time(monkeypatch)

    def slow_failure() -> None:
        clock.sleep(0.5)
        raise OSError("down")

    retry = rs.Retry(on=OSError, attempts=3, backoff=rs.backoff.constant(1), clock=clock)
    with pytest.raises(OSError):
        retry.call(slow_failure)
    assert clock.monotonic() == 3.5

    with pytest.raises(rs.TimeoutExceededError):
        rs.Timeout(1, clock=clock).call(clock.sleep, 2)
    assert clock.monotonic() == 5.5

    def stuck() -> None:  # 2 fake seconds of work, then blocked on something else
        clock.advance(2)
        gate.wait()

    try:
        with pytest.raises(rs.TimeoutExceededError):  # on main: a real 0.5 s grace wait
            pool_timeout.call(stuck)
        assert clock.monotonic() == 7.5
    finally:
        gate.set()

    bulkhead = rs.Bulkhead("db", max_concurrent=1, max_wait=4, clock=clock)

    def holder() -> None:
        with pytest.raises(rs.BulkheadFullError):
            bulkhead.call(lambda: None)

    mover = threading.Thread(target=clock.advance_when_waiting, args=(4,))
    mover.start()
    bulkhead.call(holder)
    mover.join()
    assert clock.monotonic() == 11.5


def test_fake_clock_async_paths_never_read_or_wait_on_real_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the event loop itself reads time.monotonic(), so here only the library's own real-time
    # source is forbidden, and every asyncio.sleep the fake clock makes must be a bare yield
    clock = FakeClock()
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def yield_only(delay: float, result: Any = None) -> Any:
        delays.append(delay)
        return await real_sleep(0, result)

    class NoRealTime:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"a FakeClock test read time.{name}")

    async def main() -> None:
        monkeypatch.setattr(asyncio, "sleep", yield_only)
        monkeypatch.setattr(_clock, "_time", NoRealTime())
        monkeypatch.setattr(_clock_wheel, "_time", NoRealTime())
        with pytest.raises(rs.TimeoutExceededError):
            await rs.Timeout(5, clock=clock).acall(clock.asleep, 60)
        retry = rs.Retry(on=OSError, attempts=2, backoff=rs.backoff.constant(3), clock=clock)
        with pytest.raises(OSError):
            await retry.acall(_afail)
        assert asyncio.get_running_loop() not in _clock_wheel._wheels  # the real wheel never armed

    asyncio.run(main())
    assert clock.monotonic() == 8.0
    assert delays
    assert set(delays) == {0}


async def _afail() -> None:
    raise OSError("down")


# -- per-loop state is never patched onto the loop ---------------------------------------------
def test_no_attribute_is_set_on_the_event_loop_and_a_finished_loop_is_freed() -> None:
    loop = asyncio.new_event_loop()
    before = set(vars(loop))

    async def main() -> None:
        policy = rs.Timeout(100)
        for _ in range(600):  # enough dead entries to compact, too
            await policy.acall(asyncio.sleep, 0)
        with pytest.raises(rs.TimeoutExceededError):
            await rs.Timeout(0.001).acall(asyncio.sleep, 10)

    loop.run_until_complete(main())
    assert set(vars(loop)) == before  # on main: _resilience_deadline_wheel was added
    assert loop in _clock_wheel._wheels
    ref = weakref.ref(loop)
    loop.close()
    del loop
    gc.collect()
    assert ref() is None  # neither the registry nor the one-entry cache keeps it alive


def test_loops_in_two_threads_each_use_their_own_wheel() -> None:
    results: dict[str, list[str]] = {}
    barrier = threading.Barrier(2)

    def run(name: str) -> None:
        async def main() -> list[str]:
            barrier.wait()  # both loops arm at the same time
            out: list[str] = []
            for i in range(200):
                fires = i % 50 == 0
                try:
                    await rs.Timeout(0.001 if fires else 100).acall(
                        asyncio.sleep, 10 if fires else 0
                    )
                    out.append("ok")
                except rs.TimeoutExceededError:
                    out.append("timeout")
            return out

        results[name] = asyncio.run(main())

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for out in results.values():
        assert out.count("timeout") == 4
        assert out.count("ok") == 196
