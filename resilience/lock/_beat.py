"""The lock's heartbeat: one shared daemon thread for sync holds, the event loop for async ones.

A hold renews its lease every ``ttl / 3`` seconds until it is released or lost. On a clock with
its own timers (``call_at``, a :class:`~resilience.testing.FakeClock`) the renewals follow that
clock instead, so tests drive them by advancing it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from .._clock import SYSTEM_CLOCK

__all__ = ["Beat", "astart", "start"]

_log = logging.getLogger("resilience")

#: the thread wakes at least this often (a far due time never blocks it)
_MAX_WAIT = 60.0
_RAISED = "resilience: renewing a lock lease raised; this hold is no longer renewed"


class Beat:
    """One hold's renewals; :meth:`stop` is idempotent and cheap."""

    __slots__ = ("cancel", "interval", "stopped")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.stopped = False
        self.cancel: Callable[[], object] | None = None

    def stop(self) -> None:
        """No more renewals (a renewal already running finishes)."""
        self.stopped = True
        cancel, self.cancel = self.cancel, None
        if cancel is not None:
            cancel()


class _Thread:
    """The daemon thread renewing every sync hold of the process on real time (a heap of due
    times; registration is O(log n), and a stopped beat is skipped when it comes due)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Beat, Callable[[], object]]] = []
        self._seq = itertools.count()
        self._alive = False

    def add(self, beat: Beat, renew: Callable[[], object]) -> None:
        with self._cond:
            due = SYSTEM_CLOCK.monotonic() + beat.interval
            heapq.heappush(self._heap, (due, next(self._seq), beat, renew))
            if not self._alive:
                self._alive = True
                threading.Thread(
                    target=self._run, name="resilience-lock-heartbeat", daemon=True
                ).start()
            elif self._heap[0][2] is beat:
                self._cond.notify()

    def _run(self) -> None:  # pragma: no cover - timing dependent; exercised by real-time tests
        try:
            while True:
                with self._cond:
                    now = SYSTEM_CLOCK.monotonic()
                    while self._heap and self._heap[0][2].stopped:
                        heapq.heappop(self._heap)
                    if not self._heap or self._heap[0][0] > now:
                        wait = self._heap[0][0] - now if self._heap else _MAX_WAIT
                        self._cond.wait(min(wait, _MAX_WAIT))
                        continue
                    _, _, beat, renew = heapq.heappop(self._heap)
                try:
                    renew()
                except Exception:  # one hold's bug is that hold's: its renewals stop
                    _log.exception(_RAISED)
                    continue
                if not beat.stopped:
                    self.add(beat, renew)
        finally:  # only a BaseException gets here: the next registration starts a new thread
            with self._cond:
                self._alive = False


_THREAD = _Thread()


def start(clock: Any, interval: float, renew: Callable[[], object]) -> Beat:
    """Renew a sync hold every ``interval`` seconds (``renew`` stops the beat when lost)."""
    beat = Beat(interval)
    if callable(getattr(clock, "call_at", None)):
        _fake_tick(clock, beat, renew)
    else:
        _THREAD.add(beat, renew)
    return beat


def _fake_tick(clock: Any, beat: Beat, renew: Callable[[], object]) -> None:
    def fire() -> None:
        if beat.stopped:
            return
        try:
            renew()
        except Exception:
            _log.exception(_RAISED)
            return
        _fake_tick(clock, beat, renew)

    beat.cancel = clock.call_at(clock.monotonic() + beat.interval, fire)


def astart(clock: Any, interval: float, arenew: Callable[[], Awaitable[object]]) -> Beat:
    """Renew an async hold every ``interval`` seconds, as tasks of the running event loop."""
    import asyncio

    beat = Beat(interval)
    _schedule(clock, beat, arenew, asyncio.get_running_loop())
    return beat


_TASKS: set[Any] = set()


def _schedule(clock: Any, beat: Beat, arenew: Callable[[], Awaitable[object]], loop: Any) -> None:
    if beat.stopped:
        return
    if callable(getattr(clock, "call_at", None)):

        def fire() -> None:
            if not beat.stopped and not loop.is_closed():
                loop.call_soon_threadsafe(_spawn, clock, beat, arenew, loop)

        beat.cancel = clock.call_at(clock.monotonic() + beat.interval, fire)
    else:
        beat.cancel = loop.call_later(beat.interval, _spawn, clock, beat, arenew, loop).cancel


def _spawn(clock: Any, beat: Beat, arenew: Callable[[], Awaitable[object]], loop: Any) -> None:
    if beat.stopped:
        return

    async def run() -> None:
        try:
            await arenew()
        except Exception:
            _log.exception(_RAISED)
            return
        _schedule(clock, beat, arenew, loop)

    task = loop.create_task(run())
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
