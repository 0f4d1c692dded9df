"""Clocks: the only module (besides :mod:`resilience.testing`) that reads time or sleeps.

Every time-dependent policy takes ``clock=``. What a policy may ask of it is split by need, and
each capability is a small protocol checked *in full* when the policy is built, so a clock that
lacks a method is refused with :class:`~resilience.ConfigurationError` naming every missing one
(never an ``AttributeError`` at call time, never a method probed for with ``getattr`` later):

* :class:`Clock` -- what every policy needs: two readings (``monotonic()`` for durations and
  deadlines, ``time()`` for wall-clock headers) and sync/async sleeps on the same timeline.
* :class:`DeadlineClock` -- a :class:`Clock` that can also *wait against a deadline*: cancel the
  awaiting task when ``monotonic()`` reaches it (``deadline_scope``), and wait for a worker
  thread's future up to a timeout (``wait_future``). :class:`~resilience.Timeout` and
  :class:`~resilience.Bulkhead` need it.
* :class:`TimerClock` -- a clock that runs callbacks on its own timeline (``call_at``), like
  :class:`~resilience.testing.FakeClock`; idempotency lease renewals follow such a clock, and
  fall back to real-time renewal otherwise (a plain :class:`Clock` is read, not scheduled on).

:class:`SystemClock` is a :class:`DeadlineClock` on real time. Its async deadlines share one
timer per event loop (a lazy heap, :class:`_DeadlineWheel`) -- a fraction of the cost of one
``asyncio.timeout`` per call. That per-loop state lives in a :class:`weakref.WeakKeyDictionary`
keyed by the loop (plus a one-entry cache of the last wheel), never in attributes patched onto
the loop, and the wheel holds no strong reference to its loop, so a finished loop is freed.
"""

from __future__ import annotations

import heapq
import random as _random
import threading
import time as _time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from types import TracebackType

__all__ = [
    "Clock",
    "DeadlineClock",
    "TimerClock",
    "SystemClock",
    "SYSTEM_CLOCK",
    "DEFAULT_RANDOM",
    "RandomLike",
]


class RandomLike(Protocol):
    """What ``random=`` needs: a ``random.Random``-like object."""

    def random(self) -> float:  # pragma: no cover - protocol
        """Return a float uniformly drawn from ``[0, 1)``."""
        ...


class DeadlineScope(Protocol):
    """Cancels the current task at a deadline.

    Use either ``async with scope:`` (raises ``TimeoutError`` on expiry, like
    :func:`asyncio.timeout`) or the cheaper sync pair ``scope.enter()`` / ``scope.exit()``, where
    ``exit()`` returns whether the deadline fired (and consumes the cancellation it caused).
    """

    def enter(self) -> None: ...  # pragma: no cover - protocol

    def exit(self) -> bool: ...  # pragma: no cover - protocol

    async def __aenter__(self) -> DeadlineScope: ...  # pragma: no cover - protocol

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...  # pragma: no cover - protocol

    def expired(self) -> bool: ...  # pragma: no cover - protocol


class _TaskDeadline:
    """Cancel the current task when a deadline fires; asyncio.timeout's semantics, less cost.

    ``arm(scope)`` schedules ``scope.fire()`` for the deadline and returns a disarm function. The
    cancellation is counted with ``Task.cancelling()`` / ``uncancel()`` exactly as
    :func:`asyncio.timeout` does, so an outer cancellation is never mistaken for our timeout.
    """

    __slots__ = ("_arm", "_cancelling", "_disarm", "at", "fired", "task")

    def __init__(self, at: float, arm: Callable[[_TaskDeadline], Callable[[], None]]) -> None:
        self.at = at
        self._arm = arm
        self._disarm: Callable[[], None] = _never
        self.task: Any = None
        self.fired = False
        self._cancelling = 0

    def enter(self) -> None:
        task = _current_task()
        if task is None:
            raise RuntimeError("a deadline scope must be entered inside an asyncio task")
        self.task = task
        self._cancelling = task.cancelling()
        self._disarm = self._arm(self)

    def fire(self) -> None:
        task = self.task
        if task is not None and not self.fired and not task.done():
            self.fired = True
            task.cancel()

    def exit(self) -> bool:
        self._disarm()
        task, self.task = self.task, None
        if self.fired and task is not None:
            return bool(task.uncancel() <= self._cancelling)
        return False

    def expired(self) -> bool:
        return self.fired

    async def __aenter__(self) -> _TaskDeadline:
        self.enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        import asyncio

        if self.exit() and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc
        return None


class _DeadlineWheel:
    """One timer per event loop for every armed deadline (a lazy heap of entries).

    An entry is a list ``[alive, task, cancelling_at_arm, fired, wheel]``. Arming is a heap push
    (the loop's timer only moves when the new deadline is the earliest); disarming marks the entry
    dead and drops its task; dead entries are dropped when the timer fires or when they outnumber
    the live ones. Compared with one ``asyncio.timeout`` per call (a timer handle created and
    cancelled, two coroutine calls) this costs a fraction, and cancelled handles never pile up in
    the loop.

    The wheel reaches its loop and its pending timer handle only through weak references: the
    registry (:data:`_wheels`) is keyed weakly by the loop, so a strong path from the wheel back to
    the loop would keep every finished loop (and its tasks) alive.
    """

    __slots__ = ("dead", "handle", "handle_at", "heap", "ref", "same_clock", "seq")

    def __init__(self, loop: Any) -> None:
        import asyncio

        self.ref: Callable[[], Any]
        try:
            self.ref = weakref.ref(loop)
        except TypeError:  # pragma: no cover - a loop that refuses weak references
            self.ref = lambda: loop
        self.heap: list[tuple[float, int, list[Any]]] = []
        self.handle: Callable[[], Any] = _never  # a weak reference to the pending TimerHandle
        self.handle_at = float("inf")
        self.dead = 0
        self.seq = 0
        # the default loops read time.monotonic(): no conversion needed
        self.same_clock = type(loop).time is asyncio.BaseEventLoop.time

    def _schedule(self, loop: Any, loop_at: float) -> None:
        handle = self.handle()
        if handle is not None:
            handle.cancel()
        handle = loop.call_at(loop_at, self._fire)
        try:
            self.handle = weakref.ref(handle)
        except TypeError:  # pragma: no cover - a loop whose handles refuse weak references
            self.handle = lambda: handle
        self.handle_at = loop_at

    def _compact(self) -> None:
        self.heap = [item for item in self.heap if item[2][0]]
        heapq.heapify(self.heap)
        self.dead = 0

    def _fire(self) -> None:
        self.handle = _never
        self.handle_at = float("inf")
        loop = self.ref()
        if loop is None:  # pragma: no cover - a callback of a loop that is gone
            return
        heap = self.heap
        now = loop.time() + 1e-6
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)[2]
            if entry[0]:
                entry[0] = False
                entry[3] = True
                task = entry[1]
                if not task.done():
                    task.cancel()
            else:
                self.dead -= 1
        while heap and not heap[0][2][0]:
            heapq.heappop(heap)
            self.dead -= 1
        self.dead = max(self.dead, 0)
        if heap:
            self._schedule(loop, heap[0][0])


class _NoWheel:
    """The empty one-entry cache: matches no loop."""

    __slots__ = ()

    @staticmethod
    def ref() -> None:
        return None


#: every loop's wheel, keyed weakly by the loop (no attribute is ever set on a loop)
_wheels: weakref.WeakKeyDictionary[Any, _DeadlineWheel] = weakref.WeakKeyDictionary()
_wheels_lock = threading.Lock()
#: the wheel used last: one object read atomically (its ``ref()`` names its loop), so threads
#: running different loops can never pair one loop with another loop's wheel
_last_wheel: Any = _NoWheel()


def _get_running_loop() -> Any:
    global _get_running_loop
    from asyncio import get_running_loop

    _get_running_loop = get_running_loop  # bind the C implementation once asyncio is in use
    return get_running_loop()


def _wheel_for(loop: Any) -> _DeadlineWheel:
    """The wheel of ``loop`` (created on first use), which becomes the one-entry cache."""
    global _last_wheel
    with _wheels_lock:
        try:
            wheel = _wheels.get(loop)
            if wheel is None:
                wheel = _wheels[loop] = _DeadlineWheel(loop)
        except TypeError:  # pragma: no cover - a loop that refuses weak references: cache only
            wheel = _DeadlineWheel(loop)
    _last_wheel = wheel
    return wheel


def arm_task_deadline(at: float) -> list[Any]:
    """Cancel the current task when ``time.monotonic()`` reaches ``at``.

    Returns the entry to pass to :func:`disarm_task_deadline`. Must run inside an asyncio task.
    """
    loop = _get_running_loop()
    wheel: _DeadlineWheel = _last_wheel
    if wheel.ref() is not loop:
        wheel = _wheel_for(loop)
    task = _current_task()
    if task is None:
        raise RuntimeError("a deadline must be armed inside an asyncio task")
    entry = [True, task, task.cancelling(), False, wheel]
    loop_at = at if wheel.same_clock else loop.time() + (at - _time.monotonic())
    wheel.seq += 1
    heapq.heappush(wheel.heap, (loop_at, wheel.seq, entry))
    if loop_at < wheel.handle_at:
        wheel._schedule(loop, loop_at)
    return entry


def disarm_task_deadline(entry: list[Any]) -> bool:
    """Disarm an armed deadline.

    Returns ``True`` when the deadline fired and the task's cancellation was ours (it is then
    consumed, with the same ``uncancel`` accounting as :func:`asyncio.timeout`).
    """
    if entry[0]:
        entry[0] = False
        entry[1] = None  # a dead entry waiting in the heap must not keep its task (and loop)
        wheel: _DeadlineWheel = entry[4]
        wheel.dead += 1
        if wheel.dead > 256 and wheel.dead * 2 > len(wheel.heap):
            wheel._compact()
        return False
    if entry[3]:
        entry[3] = False
        task, entry[1] = entry[1], None
        return bool(task.uncancel() <= entry[2])
    return False


class _WheelDeadline:
    """A :class:`DeadlineScope` on the shared per-loop wheel (system clock)."""

    __slots__ = ("_entry", "_fired", "at")

    def __init__(self, at: float) -> None:
        self.at = at
        self._entry: list[Any] | None = None
        self._fired = False

    def enter(self) -> None:
        self._entry = arm_task_deadline(self.at)

    def exit(self) -> bool:
        entry, self._entry = self._entry, None
        if entry is None:
            return False
        fired = disarm_task_deadline(entry)
        self._fired = self._fired or fired
        return fired

    def expired(self) -> bool:
        return self._fired or bool(self._entry is not None and self._entry[3])

    async def __aenter__(self) -> _WheelDeadline:
        self.enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        import asyncio

        if self.exit() and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc
        return None


@runtime_checkable
class Clock(Protocol):
    """The time source every policy takes as ``clock=``: two readings and two sleeps.

    Every method is required and checked when a policy is built: a clock missing one is refused
    with :class:`~resilience.ConfigurationError`. Policies that also wait against a deadline
    (:class:`~resilience.Timeout`, :class:`~resilience.Bulkhead`) need a :class:`DeadlineClock`.

    Example:
        >>> import resilience as rs
        >>> clock = rs.testing.FakeClock()
        >>> clock.sleep(2.5)
        >>> clock.monotonic()
        2.5
    """

    def monotonic(self) -> float:
        """Seconds on a monotonic scale (durations, deadlines, windows)."""
        ...

    def time(self) -> float:
        """Epoch seconds (HTTP dates, logs)."""
        ...

    def sleep(self, seconds: float, /) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def asleep(self, seconds: float, /) -> None:
        """Suspend the calling task for ``seconds``."""
        ...


@runtime_checkable
class DeadlineClock(Clock, Protocol):
    """A :class:`Clock` that can also wait against a deadline on its own timeline.

    :class:`~resilience.Timeout` and :class:`~resilience.Bulkhead` need it (to cancel an awaiting
    task, and to stop waiting for a worker thread or a free slot, when the deadline passes).
    :class:`SystemClock` and :class:`~resilience.testing.FakeClock` are both deadline clocks.

    Example:
        >>> import resilience as rs
        >>> isinstance(rs.SystemClock(), rs.DeadlineClock)
        True
        >>> class Readings:  # a plain Clock: fine for Retry, refused by Timeout
        ...     def monotonic(self): return 0.0
        ...     def time(self): return 0.0
        ...     def sleep(self, s): pass
        ...     async def asleep(self, s): pass
        >>> rs.Retry(on=OSError, clock=Readings()).name
        'retry'
        >>> try:
        ...     rs.Timeout(1, clock=Readings())
        ... except rs.ConfigurationError as exc:
        ...     print(str(exc).split("; ")[1])
        Readings lacks deadline_scope() and wait_future()
    """

    def deadline_scope(self, at: float, /) -> DeadlineScope:
        """A scope cancelling the current task when ``monotonic()`` reaches ``at``."""
        ...

    def wait_future(self, future: Future[Any], timeout: float, /) -> bool:
        """Wait up to ``timeout`` seconds (this clock's) for ``future``; return if it is done."""
        ...


@runtime_checkable
class TimerClock(Protocol):
    """A clock that runs callbacks when its own time reaches them (e.g. a fake clock).

    Idempotency lease renewals are scheduled with ``call_at`` on such a clock; on any other
    clock they run on a real-time background timer.
    """

    def call_at(self, at: float, callback: Callable[[], None], /) -> Callable[[], None]:
        """Run ``callback`` when ``monotonic()`` reaches ``at``; return a cancel function."""
        ...


_CLOCK_METHODS = ("monotonic", "time", "sleep", "asleep")
_DEADLINE_METHODS = (*_CLOCK_METHODS, "deadline_scope", "wait_future")


def _check_methods(clock: object, kind: str, methods: tuple[str, ...]) -> None:
    missing = [m for m in methods if not callable(getattr(clock, m, None))]
    if missing:
        from .errors import ConfigurationError

        named = [f"{m}()" for m in missing]
        lacks = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
        what = type(clock).__name__
        raise ConfigurationError(
            f"clock must provide {', '.join(m + '()' for m in methods)} (a {kind}); "
            f"{what} lacks {lacks}"
        )


def _never() -> None:
    return None


def _current_task() -> Any:
    global _current_task
    from asyncio import current_task

    _current_task = current_task  # bind the C implementation once asyncio is in use
    return current_task()


class SystemClock:
    """The real clock, a :class:`DeadlineClock`: :func:`time.monotonic`, :func:`time.time`, sleeps.

    Example:
        >>> import resilience as rs
        >>> rs.SystemClock().monotonic() > 0
        True
    """

    __slots__ = ()

    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)

    def sleep(self, seconds: float, /) -> None:
        """Block the calling thread (no-op for ``seconds <= 0``)."""
        if seconds > 0:
            _time.sleep(seconds)

    async def asleep(self, seconds: float, /) -> None:
        """Suspend the calling task."""
        import asyncio

        await asyncio.sleep(max(0.0, seconds))

    def deadline_scope(self, at: float, /) -> DeadlineScope:
        """Cancel the task at monotonic time ``at`` (one shared timer per event loop)."""
        return _WheelDeadline(at)

    def wait_future(self, future: Future[Any], timeout: float, /) -> bool:
        """Wait for a future in real time."""
        from concurrent.futures import wait

        done, _ = wait([future], timeout=max(0.0, timeout))
        return bool(done)


SYSTEM_CLOCK = SystemClock()
DEFAULT_RANDOM: RandomLike = _random.Random()


def resolve_clock(clock: Clock | None) -> Clock:
    """Return ``clock`` or the system clock, checking every :class:`Clock` method."""
    if clock is None:
        return SYSTEM_CLOCK
    _check_methods(clock, "Clock", _CLOCK_METHODS)
    return clock


def resolve_deadline_clock(clock: Clock | None) -> DeadlineClock:
    """Return ``clock`` or the system clock, checking every :class:`DeadlineClock` method."""
    if clock is None:
        return SYSTEM_CLOCK
    _check_methods(clock, "DeadlineClock", _DEADLINE_METHODS)
    return cast("DeadlineClock", clock)


def resolve_random(rnd: RandomLike | None) -> RandomLike:
    """Return ``rnd`` or the module's default generator."""
    if rnd is None:
        return DEFAULT_RANDOM
    if not callable(getattr(rnd, "random", None)):
        from .errors import ConfigurationError

        raise ConfigurationError(f"random must be a random.Random instance, got {rnd!r}")
    return rnd
