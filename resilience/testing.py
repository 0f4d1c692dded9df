"""Test helpers: a fake clock, a process-wide test mode, and a recording listener.

* :class:`FakeClock` -- a clock that never reads nor waits on real time; pass it as ``clock=``.
* :func:`set_testing` / :func:`testing_mode` -- test mode: every policy built *without*
  ``clock=`` (functions decorated at import time included) reads and sleeps on one process-wide
  fake clock, so backoffs, limiter waits and breaker open durations take no real time, and
  retries may be capped to a few attempts.
* :class:`RecordingListener` -- keeps the events the policies it is given emit.

The pytest plugin :mod:`resilience.pytest_plugin` wraps them as fixtures (``fake_clock``,
``events``).

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
import time as _time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from ._clock import SYSTEM_CLOCK, DeadlineScope, _set_virtual
from ._clock_wheel import _TaskDeadline
from ._retry import Retry
from ._types import positive_int
from .errors import ConfigurationError
from .events import Event

E = TypeVar("E", bound=Event)

__all__ = [
    "FakeClock",
    "RecordingListener",
    "is_testing",
    "set_testing",
    "testing_clock",
    "testing_mode",
]


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

    def last(self, kind: type[E]) -> E:
        """The latest recorded event of one type; :class:`LookupError` when there is none.

        Example:
            >>> import resilience as rs
            >>> rec = rs.testing.RecordingListener()
            >>> rec(rs.events.RateLimitWaited(policy="api", wait=0.5))
            >>> rec(rs.events.RateLimitWaited(policy="api", wait=2.0))
            >>> rec.last(rs.events.RateLimitWaited).wait
            2.0
            >>> rec.last(rs.events.RetryScheduled)
            Traceback (most recent call last):
            ...
            LookupError: no RetryScheduled event among 2 recorded: ratelimit_wait, ratelimit_wait
        """
        for event in reversed(self.events):
            if isinstance(event, kind):
                return event
        kinds = ", ".join(self.kinds()) or "none"
        raise LookupError(f"no {kind.__name__} event among {len(self.events)} recorded: {kinds}")

    def kinds(self) -> list[str]:
        """The ``kind`` of every recorded event, in order."""
        return [e.kind for e in self.events]

    def clear(self) -> None:
        """Forget every recorded event (to check what one step of a test emits)."""
        self.events.clear()


# -- test mode -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Mode:
    clock: FakeClock | None  # None: test mode is off
    attempts: int | None  # the cap on each default-clock retry's attempts, or None


_OFF = _Mode(None, None)
_mode = _OFF
_mode_lock = threading.RLock()
#: the latest virtual reading a test mode left behind (see _new_timeline)
_high_water = -math.inf


def _new_timeline() -> FakeClock:
    """A fake clock going on from the latest reading the process clock gave.

    It starts at the real readings, or where an earlier test mode left virtual time if that is
    later: what policies built at import time recorded on the process clock (a rate limiter's
    bucket, a breaker's window) is never in its future; on a whole second, so whole durations
    add up exactly (three 30 s sleeps are 90 s, not 90.00000000000023).
    """
    real = _time.monotonic()
    current = _mode.clock
    start = math.ceil(max(real, _high_water, -math.inf if current is None else current.monotonic()))
    return FakeClock(start=start, epoch=_time.time() + (start - real))


class _AttemptsCap:
    """``Retry.attempts`` while test mode caps attempts: a retry on the process clock reads
    ``min(its attempts, the cap)``; a retry built with its own ``clock=`` reads its own."""

    @overload
    def __get__(self, obj: None, owner: type[Retry]) -> _AttemptsCap: ...
    @overload
    def __get__(self, obj: Retry, owner: type[Retry] | None = None) -> int: ...
    def __get__(self, obj: Retry | None, owner: type[Retry] | None = None) -> int | _AttemptsCap:
        if obj is None:
            return self
        configured: int = obj.__dict__["attempts"]
        cap = _mode.attempts
        if cap is not None and cap < configured and obj._clock is SYSTEM_CLOCK:
            return cap
        return configured

    def __set__(self, obj: Retry, value: int) -> None:
        obj.__dict__["attempts"] = value


_CAP = _AttemptsCap()


def _install(mode: _Mode) -> None:
    global _mode, _high_water
    with _mode_lock:
        if _mode.clock is not None:
            _high_water = max(_high_water, _mode.clock.monotonic())
        _set_virtual(mode.clock)
        _mode = mode
        capped = Retry.__dict__.get("attempts") is _CAP
        if mode.attempts is not None and not capped:
            setattr(Retry, "attempts", _CAP)  # noqa: B010 - no attribute of that name for mypy
        elif mode.attempts is None and capped:
            delattr(Retry, "attempts")


def _mode_for(testing: bool, attempts: int | None, clock: FakeClock | None) -> _Mode:
    if not isinstance(testing, bool):
        raise ConfigurationError(f"testing must be True or False, got {testing!r}")
    if not testing:
        if attempts is not None or clock is not None:
            raise ConfigurationError("attempts= and clock= only apply to set_testing(True)")
        return _OFF
    cap = None if attempts is None else positive_int(attempts, "attempts")
    if clock is not None and not isinstance(clock, FakeClock):
        raise ConfigurationError(f"clock must be a resilience.testing.FakeClock, got {clock!r}")
    if clock is None:
        # keep the timeline of the test mode in force; else go on from the latest readings
        clock = _mode.clock or _new_timeline()
    return _Mode(clock, cap)


def set_testing(
    testing: bool, /, *, attempts: int | None = None, clock: FakeClock | None = None
) -> None:
    """Switch test mode on or off, for the whole process.

    In test mode, every policy that was built *without* ``clock=`` -- including functions
    decorated at import time -- reads and sleeps on one process-wide :class:`FakeClock`, the
    *virtual time*:

    * readings (``monotonic()``, ``time()``) are the fake clock's; they move only when
      something sleeps on it or the test calls ``advance()``: real work takes no virtual time;
    * a sleep (a retry's backoff, a rate limiter's wait...) advances it at once, in every
      thread and event loop, so everything that measures time sees the skipped waits;
    * waiting for other work (a ``rs.Timeout`` on code that really hangs, a ``rs.Bulkhead``
      waiter) is still bounded by as many seconds of real time.

    See "Test mode" in the testing guide for the details.

    Policies built with their own ``clock=`` (a :class:`FakeClock`, ``rs.SystemClock()``...)
    are left alone.

    Args:
        testing: ``True`` to switch it on, ``False`` to switch it off.
        attempts: cap every retry on the process clock to this many attempts (``1``: no
            retries at all), like stamina's ``set_testing(True, attempts=1)``; ``None`` (the
            default) leaves the configured attempts.
        clock: the fake clock to use; by default the one of the test mode already on, or a new
            one going on from the latest reading of the process clock (real, or virtual if an
            earlier test mode left it later), never before what policies recorded.

    Switch it from the test's own thread, while no other thread runs policies: switching is
    not a synchronisation point. Prefer :func:`testing_mode`, which restores the previous mode.

    Example:
        >>> import resilience as rs
        >>> @rs.Retry(on=ConnectionError, attempts=5, backoff=rs.backoff.constant(30))
        ... def connect() -> None:
        ...     raise ConnectionError("refused")
        >>> rs.testing.set_testing(True)
        >>> try:
        ...     connect()  # four 30 s backoffs, none of them waited
        ... except ConnectionError:
        ...     pass
        >>> rs.testing.testing_clock().sleeps
        [30.0, 30.0, 30.0, 30.0]
        >>> rs.testing.set_testing(False)
        >>> rs.testing.is_testing()
        False
    """
    with _mode_lock:
        _install(_mode_for(testing, attempts, clock))


def is_testing() -> bool:
    """Whether test mode is on."""
    return _mode.clock is not None


def testing_clock() -> FakeClock | None:
    """The fake clock behind the process clock in test mode (``None`` when it is off)."""
    return _mode.clock


@contextmanager
def testing_mode(
    *,
    attempts: int | None = None,  # noqa: PT028 - not a test (see __test__ below)
    clock: FakeClock | None = None,  # noqa: PT028
) -> Iterator[FakeClock]:
    """Test mode (see :func:`set_testing`) for the ``with`` block; yields its fake clock.

    The mode in force before (on, with its clock and cap, or off) comes back when the block
    ends, so blocks nest: an inner ``testing_mode(attempts=1)`` keeps the outer block's clock.

    Example:
        >>> import resilience as rs
        >>> breaker = rs.CircuitBreaker("api", failure_count=1, open_for=60)  # no clock=
        >>> with rs.testing.testing_mode() as clock:
        ...     try:
        ...         breaker.call(lambda: 1 / 0)
        ...     except ZeroDivisionError:
        ...         pass
        ...     opened = breaker.state
        ...     clock.advance(60)
        ...     opened, breaker.state
        (<CircuitState.OPEN: 'open'>, <CircuitState.HALF_OPEN: 'half_open'>)
    """
    with _mode_lock:
        previous = _mode
        mode = _mode_for(True, attempts, clock)
        _install(mode)
    try:
        assert mode.clock is not None
        yield mode.clock
    finally:
        _install(previous)


# names starting with "test": never collected as tests when imported into a test module
setattr(testing_mode, "__test__", False)  # noqa: B010
setattr(testing_clock, "__test__", False)  # noqa: B010
