"""Test helpers: a fake clock that never reads or waits on real time, and a recording listener.

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
from typing import Any, TypeVar

from ._clock import DeadlineScope
from ._clock_wheel import _TaskDeadline
from .errors import ConfigurationError
from .events import Event

E = TypeVar("E", bound=Event)

__all__ = ["FakeClock", "RecordingListener"]


class FakeClock:
    """A manually driven clock; ``sleep``/``asleep`` advance it instantly and are recorded.

    It is a full :class:`~resilience.DeadlineClock` (and a :class:`~resilience._clock.TimerClock`)
    that never reads nor waits on real time: time moves only when something calls
    :meth:`advance`, :meth:`set`, :meth:`sleep` or :meth:`asleep`.

    Async deadlines (``rs.Timeout`` on coroutines) fire when fake time reaches them: an async
    sleep that would cross an armed deadline stops there and the waiting task is cancelled, so a
    timeout test finishes instantly and the fake time reads exactly the deadline. A thread
    waiting for a worker (``rs.Timeout(sync="thread")``, a sync ``rs.Bulkhead`` waiter) waits
    until the worker is done or fake time reaches its deadline, so a test whose worker blocks
    must move the time itself (from the worker, or from another thread).

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
        self._moved = threading.Condition(self._lock)  # notified when time moves or a wait starts
        self._waiting = 0
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
            self._moved.notify_all()
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
        """Wait until ``future`` is done or fake time passes ``timeout`` seconds from now.

        Never waits on real time: it blocks until the worker finishes or something advances the
        clock (the worker's own ``sleep``, or another thread). Returns ``False`` when the time
        ran out first, even if the worker then finished in the same instant.

        Example:
            >>> from concurrent.futures import Future
            >>> clock, done, busy = FakeClock(), Future(), Future()
            >>> done.set_result("ok")
            >>> clock.wait_future(done, 2.0), clock.wait_future(busy, 0.0)
            (True, False)
        """
        with self._moved:
            until = self._now + max(0.0, timeout)
        future.add_done_callback(self._wake)
        with self._moved:
            self._waiting += 1
            self._moved.notify_all()
            try:
                while True:
                    if self._now > until:  # the work took longer than the timeout
                        return False
                    if future.done():
                        return True
                    if self._now >= until:
                        return False
                    self._moved.wait()
            finally:
                self._waiting -= 1

    def _wake(self, _future: Future[Any]) -> None:
        with self._moved:
            self._moved.notify_all()

    def advance_when_waiting(self, seconds: float, *, waiters: int = 1) -> None:
        """Block until ``waiters`` threads wait in :meth:`wait_future`, then :meth:`advance`.

        The deterministic way to time out a thread blocked on this clock (a sync
        ``rs.Bulkhead`` waiter, a ``sync="thread"`` timeout): run it on a helper thread.

        Example:
            >>> import threading
            >>> from concurrent.futures import Future
            >>> clock = FakeClock()
            >>> mover = threading.Thread(target=clock.advance_when_waiting, args=(3,))
            >>> mover.start()
            >>> clock.wait_future(Future(), 3.0), clock.monotonic()
            (False, 3.0)
            >>> mover.join()
        """
        with self._moved:
            while self._waiting < waiters:
                self._moved.wait()
        self.advance(seconds)


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

    def of(self, kind: type[E]) -> list[E]:
        """The recorded events of one type (typed as that type).

        Example:
            >>> import resilience as rs
            >>> rec = rs.testing.RecordingListener()
            >>> rec(rs.events.RateLimitWaited(policy="api", wait=0.5))
            >>> [e.wait for e in rec.of(rs.events.RateLimitWaited)]
            [0.5]
        """
        return [e for e in self.events if isinstance(e, kind)]

    def kinds(self) -> list[str]:
        """The ``kind`` of every recorded event, in order."""
        return [e.kind for e in self.events]
