"""Test helpers: a fake clock on which sleeps take no real time, and a recording listener.

Example:
    >>> import resilience as rs
    >>> clock = rs.testing.FakeClock()
    >>> retry = rs.Retry(on=ValueError, attempts=3, backoff=rs.backoff.constant(1.0), clock=clock)
    >>> calls = []
    >>> def flaky():
    ...     calls.append(clock.monotonic())
    ...     if len(calls) < 3:
    ...         raise ValueError("boom")
    ...     return "ok"
    >>> retry.call(flaky)
    'ok'
    >>> calls, clock.sleeps
    ([0.0, 1.0, 2.0], [1.0, 1.0])
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ._clock import DeadlineScope, _TaskDeadline
from .errors import ConfigurationError
from .events import Event

__all__ = ["FakeClock", "RecordingListener"]

_REAL_GRACE = 0.5  # real seconds a FakeClock waits for a worker thread before declaring a timeout


class FakeClock:
    """A manually driven clock; ``sleep``/``asleep`` advance it instantly and are recorded.

    Async deadlines (``rs.Timeout`` on coroutines) fire when fake time reaches them: an async
    sleep that would cross an armed deadline stops there and the waiting task is cancelled, so a
    timeout test finishes instantly and the fake time reads exactly the deadline.

    Args:
        start: initial ``monotonic()`` reading.
        epoch: ``time()`` reading when ``monotonic()`` equals ``start``.

    Example:
        >>> clock = FakeClock(start=10.0)
        >>> clock.advance(5)
        >>> clock.monotonic(), clock.time() - clock.epoch
        (15.0, 5.0)
    """

    def __init__(self, start: float = 0.0, *, epoch: float = 1_700_000_000.0) -> None:
        pairs: tuple[tuple[object, str], ...] = ((start, "start"), (epoch, "epoch"))
        for value, what in pairs:
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise ConfigurationError(f"{what} must be a finite number, got {value!r}")
        self._now = float(start)
        self._start = float(start)
        self.epoch = float(epoch)
        self.sleeps: list[float] = []
        self._lock = threading.RLock()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._seq = itertools.count()

    def monotonic(self) -> float:
        """The fake monotonic time."""
        return self._now

    def time(self) -> float:
        """The fake epoch time, ``epoch + (monotonic() - start)``."""
        return self.epoch + (self._now - self._start)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (firing any deadline reached)."""
        if seconds < 0:
            raise ConfigurationError("a FakeClock cannot go backwards")
        self._advance_to(self._now + seconds)

    def set(self, monotonic: float) -> None:
        """Jump to an absolute monotonic reading (forwards only)."""
        self._advance_to(float(monotonic))

    def _advance_to(self, target: float) -> None:
        with self._lock:
            if target < self._now:
                raise ConfigurationError("a FakeClock cannot go backwards")
            fire: list[Callable[[], None]] = []
            while self._timers and self._timers[0][0] <= target:
                _at, seq, cb = heapq.heappop(self._timers)
                if seq in self._cancelled:
                    self._cancelled.discard(seq)
                    continue
                fire.append(cb)
            self._now = target
        for cb in fire:
            cb()

    def _next_timer(self) -> float | None:
        with self._lock:
            while self._timers and self._timers[0][1] in self._cancelled:
                self._cancelled.discard(heapq.heappop(self._timers)[1])
            return self._timers[0][0] if self._timers else None

    def call_at(self, at: float, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` when fake time reaches ``at``; returns a cancel function."""
        with self._lock:
            if at <= self._now:
                fire_now = True
                seq = -1
            else:
                fire_now = False
                seq = next(self._seq)
                heapq.heappush(self._timers, (at, seq, callback))
        if fire_now:
            callback()
            return lambda: None

        def cancel() -> None:
            with self._lock:
                self._cancelled.add(seq)

        return cancel

    def sleep(self, seconds: float, /) -> None:
        """Record the sleep and advance time instantly."""
        self.sleeps.append(seconds)
        if seconds > 0:
            self.advance(seconds)

    async def asleep(self, seconds: float, /) -> None:
        """Record the sleep, advance time (stopping at armed deadlines) and yield to the loop."""
        import asyncio

        self.sleeps.append(seconds)
        target = self._now + max(0.0, seconds)
        while True:
            nxt = self._next_timer()
            step = target if nxt is None or nxt > target else nxt
            self._advance_to(max(step, self._now))
            await asyncio.sleep(0)  # a deadline that fired cancels us here
            if self._now >= target:
                return

    def deadline_scope(self, at: float, /) -> DeadlineScope:
        """Cancel the task when fake time reaches ``at``."""

        def arm(scope: _TaskDeadline) -> Callable[[], None]:
            return self.call_at(at, scope.fire)

        return _TaskDeadline(at, arm)

    def wait_future(self, future: Future[Any], timeout: float, /) -> bool:
        """Wait briefly in real time for a worker; if it is still busy, jump ``timeout`` ahead."""
        from concurrent.futures import wait

        done, _ = wait([future], timeout=_REAL_GRACE)
        if done:
            return True
        self.advance(max(0.0, timeout))
        return future.done()


class RecordingListener:
    """A listener that keeps every event it receives (for tests).

    Example:
        >>> import resilience as rs
        >>> rec = rs.testing.RecordingListener()
        >>> clock = rs.testing.FakeClock()
        >>> retry = rs.Retry(on=KeyError, attempts=2, backoff=rs.backoff.constant(0),
        ...                  listeners=[rec], clock=clock)
        >>> try:
        ...     retry.call(lambda: {}["missing"])
        ... except KeyError:
        ...     pass
        >>> [e.kind for e in rec.events]
        ['retry', 'retries_exhausted']
    """

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event, /) -> None:
        """Record the event."""
        self.events.append(event)

    def of(self, kind: type[Event]) -> list[Event]:
        """The recorded events of one type."""
        return [e for e in self.events if isinstance(e, kind)]

    def kinds(self) -> list[str]:
        """The ``kind`` of every recorded event, in order."""
        return [e.kind for e in self.events]
