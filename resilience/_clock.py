"""Clocks: the only module (besides :mod:`resilience.testing`) that reads time or sleeps.

Every time-dependent policy takes ``clock=``. A clock provides two readings (``monotonic`` for
durations and deadlines, ``time`` for wall-clock headers), sync and async sleeps on the same
timeline, and an async deadline scope that cancels the awaiting task when the deadline passes.
"""

from __future__ import annotations

import heapq
import random as _random
import time as _time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from types import TracebackType

__all__ = ["Clock", "SystemClock", "SYSTEM_CLOCK", "DEFAULT_RANDOM", "RandomLike"]


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
    dead; dead entries are dropped when the timer fires or when they outnumber the live ones.
    Compared with one ``asyncio.timeout`` per call (a timer handle created and cancelled, two
    coroutine calls) this costs a fraction, and cancelled handles never pile up in the loop.
    """

    __slots__ = ("dead", "handle", "handle_at", "heap", "loop", "same_clock", "seq")

    def __init__(self, loop: Any) -> None:
        import asyncio

        self.loop = loop
        self.heap: list[tuple[float, int, list[Any]]] = []
        self.handle: Any = None
        self.handle_at = float("inf")
        self.dead = 0
        self.seq = 0
        # the default loops read time.monotonic(): no conversion needed
        self.same_clock = type(loop).time is asyncio.BaseEventLoop.time

    def _schedule(self, loop_at: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.handle = self.loop.call_at(loop_at, self._fire)
        self.handle_at = loop_at

    def _compact(self) -> None:
        self.heap = [item for item in self.heap if item[2][0]]
        heapq.heapify(self.heap)
        self.dead = 0

    def _fire(self) -> None:
        self.handle = None
        self.handle_at = float("inf")
        heap = self.heap
        now = self.loop.time() + 1e-6
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
            self._schedule(heap[0][0])


_wheel_cache: list[Any] = [None, None]  # [loop, wheel] of the last loop used


def _get_running_loop() -> Any:
    global _get_running_loop
    from asyncio import get_running_loop

    _get_running_loop = get_running_loop  # bind the C implementation once asyncio is in use
    return get_running_loop()


def _wheel_for(loop: Any) -> _DeadlineWheel:
    wheel = getattr(loop, "_resilience_deadline_wheel", None) or _DeadlineWheel(loop)
    try:
        loop._resilience_deadline_wheel = wheel
    except AttributeError:  # a loop class with __slots__: keep only the one-entry cache
        pass
    _wheel_cache[0], _wheel_cache[1] = loop, wheel
    return wheel


def arm_task_deadline(at: float) -> list[Any]:
    """Cancel the current task when ``time.monotonic()`` reaches ``at``.

    Returns the entry to pass to :func:`disarm_task_deadline`. Must run inside an asyncio task.
    """
    loop = _get_running_loop()
    wheel: _DeadlineWheel = _wheel_cache[1] if _wheel_cache[0] is loop else _wheel_for(loop)
    task = _current_task()
    if task is None:
        raise RuntimeError("a deadline must be armed inside an asyncio task")
    entry = [True, task, task.cancelling(), False, wheel]
    loop_at = at if wheel.same_clock else loop.time() + (at - _time.monotonic())
    wheel.seq += 1
    heapq.heappush(wheel.heap, (loop_at, wheel.seq, entry))
    if loop_at < wheel.handle_at:
        wheel._schedule(loop_at)
    return entry


def disarm_task_deadline(entry: list[Any]) -> bool:
    """Disarm an armed deadline.

    Returns ``True`` when the deadline fired and the task's cancellation was ours (it is then
    consumed, with the same ``uncancel`` accounting as :func:`asyncio.timeout`).
    """
    if entry[0]:
        entry[0] = False
        wheel: _DeadlineWheel = entry[4]
        wheel.dead += 1
        if wheel.dead > 256 and wheel.dead * 2 > len(wheel.heap):
            wheel._compact()
        return False
    if entry[3]:
        entry[3] = False
        return bool(entry[1].uncancel() <= entry[2])
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
    """The time source every policy takes as ``clock=``.

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

    def deadline_scope(self, at: float, /) -> DeadlineScope:
        """An async context manager raising ``TimeoutError`` when ``monotonic()`` passes ``at``."""
        ...

    def wait_future(self, future: Future[Any], timeout: float, /) -> bool:
        """Wait up to ``timeout`` seconds for ``future``; return whether it is done."""
        ...


def _never() -> None:
    return None


def _current_task() -> Any:
    global _current_task
    from asyncio import current_task

    _current_task = current_task  # bind the C implementation once asyncio is in use
    return current_task()


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`time.time`, real sleeps.

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
    """Return ``clock`` or the system clock, checking the protocol."""
    if clock is None:
        return SYSTEM_CLOCK
    from .errors import ConfigurationError

    for attr in ("monotonic", "time", "sleep", "asleep"):
        if not callable(getattr(clock, attr, None)):
            raise ConfigurationError(
                f"clock must provide monotonic(), time(), sleep() and asleep(); "
                f"{clock!r} has no {attr}()"
            )
    return clock


def resolve_random(rnd: RandomLike | None) -> RandomLike:
    """Return ``rnd`` or the module's default generator."""
    if rnd is None:
        return DEFAULT_RANDOM
    if not callable(getattr(rnd, "random", None)):
        from .errors import ConfigurationError

        raise ConfigurationError(f"random must be a random.Random instance, got {rnd!r}")
    return rnd
