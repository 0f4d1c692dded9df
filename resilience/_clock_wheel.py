"""The per-event-loop deadline wheel behind :class:`~resilience.SystemClock`'s async deadlines.

One timer per event loop over a lazy heap of armed deadlines (a fraction of the cost of one
``asyncio.timeout`` per call). The per-loop state lives in a :class:`weakref.WeakKeyDictionary`
keyed by the loop (plus a one-entry cache of the last wheel), never in attributes patched onto
the loop, and a wheel holds no strong reference to its loop, so a finished loop is freed.
"""

from __future__ import annotations

import heapq
import threading
import time as _time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from types import TracebackType

__all__ = ["arm_task_deadline", "disarm_task_deadline"]


def _never() -> None:
    return None


def _current_task() -> Any:
    global _current_task
    from asyncio import current_task

    _current_task = current_task  # bind the C implementation once asyncio is in use
    return current_task()


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

    __slots__ = ("dead", "handle", "handle_at", "heap", "native", "ref", "same_clock", "seq")

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
        # the default loops read time.monotonic(): no conversion needed (unless test mode put
        # a fake clock behind the process clock: see _set_wheel_source)
        self.native = type(loop).time is asyncio.BaseEventLoop.time
        self.same_clock = self.native and _now is _time.monotonic

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


#: what deadlines given to :func:`arm_task_deadline` are read on: ``time.monotonic``, or in test
#: mode the process clock's (fake) readings, converted to loop time at arming
_now: Callable[[], float] = _time.monotonic


def _set_wheel_source(source: Callable[[], float] | None) -> None:
    """Read armed deadlines on ``source`` (``None``: ``time.monotonic``); for test mode only.

    While a fake clock is behind the process clock, a deadline ``at`` on its scale is armed
    ``at - source()`` seconds of loop time from now: the same length of real time.
    """
    global _now
    with _wheels_lock:
        _now = _time.monotonic if source is None else source
        wheels = [*_wheels.values(), _last_wheel]
        for wheel in wheels:
            if isinstance(wheel, _DeadlineWheel):
                wheel.same_clock = wheel.native and source is None


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
    """Cancel the current task when ``time.monotonic()`` (in test mode: the process clock)
    reaches ``at``.

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
    loop_at = at if wheel.same_clock else loop.time() + (at - _now())
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
