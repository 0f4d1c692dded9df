"""Bulkhead: a concurrency limit shared by threads and tasks, with a bounded FIFO wait."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from ._clock import DeadlineClock, resolve_deadline_clock
from ._deadline import cap_to_deadline
from ._policy import Emitter, Policy, refusal
from ._types import AsyncFn, Duration, SyncFn, positive_int, seconds
from .errors import BulkheadFullError
from .events import BulkheadRejected, Listener, RateLimitWaited

__all__ = ["Bulkhead"]


class _Waiter:
    """One queued caller. ``granted`` flips (under the bulkhead lock) when a slot is handed
    to it; the waiter then owns that slot whatever happens next."""

    __slots__ = ("afut", "future", "granted", "loop")

    def __init__(self) -> None:
        self.granted = False
        self.future: Future[bool] | None = None
        self.loop: Any = None
        self.afut: Any = None


def _wake_async(afut: Any) -> None:
    if not afut.done():
        afut.set_result(True)


class Bulkhead(Policy):
    """Run at most ``max_concurrent`` calls at once; others wait up to ``max_wait`` or are rejected.

    The limit is shared by every thread and task using the policy. A caller that finds every
    slot taken queues (first in, first out) for up to ``max_wait`` seconds, never past the
    current :func:`resilience.deadline`, then raises :class:`~resilience.BulkheadFullError`.
    A freed slot is *handed* to the oldest waiter under the lock, so a waiter that times out or
    is cancelled at the same moment either uses the slot or passes it on: slots never leak.

    Waits use the injected clock: a sync waiter blocks in ``clock.wait_future`` and an async
    waiter awaits inside ``clock.deadline_scope`` (so a :class:`~resilience.testing.FakeClock`
    drives them in tests).

    Args:
        name: the bulkhead's name (events, metrics).
        max_concurrent: concurrent calls allowed (>= 1).
        max_wait: seconds a caller may wait for a slot (0: reject at once).
        clock: time source for waits, a :class:`~resilience.DeadlineClock` (checked in full here).
        listeners: event listeners (:class:`~resilience.events.BulkheadRejected`,
            :class:`~resilience.events.RateLimitWaited` for a call that waited).

    Example:
        >>> import resilience as rs
        >>> bulkhead = rs.Bulkhead("db", max_concurrent=1)
        >>> @bulkhead
        ... def query() -> int:
        ...     return bulkhead.in_use
        >>> query(), bulkhead.in_use
        (1, 0)
    """

    kind = "bulkhead"

    def __init__(
        self,
        name: str,
        *,
        max_concurrent: int,
        max_wait: Duration = 0.0,
        clock: DeadlineClock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(name=name, listeners=listeners)
        self.max_concurrent = positive_int(max_concurrent, "max_concurrent")
        self.max_wait = seconds(max_wait, "max_wait")
        self._clock = resolve_deadline_clock(clock)
        self._lock = threading.Lock()
        self._in_use = 0
        self._waiters: deque[_Waiter] = deque()

    def describe(self) -> dict[str, Any]:
        """Plain data describing the configuration."""
        return {
            "kind": self.kind,
            "name": self.name,
            "max_concurrent": self.max_concurrent,
            "max_wait": self.max_wait,
        }

    @property
    def in_use(self) -> int:
        """Slots currently held."""
        return self._in_use

    @property
    def queued(self) -> int:
        """Callers currently waiting for a slot."""
        return len(self._waiters)

    # -- permits ------------------------------------------------------------------------------
    def _try_take(self) -> bool:
        with self._lock:
            if self._in_use < self.max_concurrent and not self._waiters:
                self._in_use += 1
                return True
            return False

    def _release(self) -> None:
        """Free a slot: hand it to the oldest live waiter, or put it back."""
        with self._lock:
            while self._waiters:
                w = self._waiters.popleft()
                w.granted = True
                if w.future is not None:
                    w.future.set_result(True)
                    return  # the slot changes hands; in_use stays the same
                try:
                    w.loop.call_soon_threadsafe(_wake_async, w.afut)
                except RuntimeError:  # its event loop is closed: the waiter is gone
                    continue
                return
            self._in_use -= 1

    def _enqueue(self, waiter: _Waiter) -> bool:
        """Queue ``waiter`` unless a slot is free right now (then take it: return True)."""
        with self._lock:
            if self._in_use < self.max_concurrent and not self._waiters:
                self._in_use += 1
                return True
            self._waiters.append(waiter)
            return False

    def _abandon(self, waiter: _Waiter) -> bool:
        """A waiter gives up: whether it was granted a slot meanwhile (it then owns it)."""
        with self._lock:
            if waiter.granted:
                return True
            try:
                self._waiters.remove(waiter)
            except ValueError:  # pragma: no cover - defensive
                pass
            return False

    def _wait_budget(self) -> float:
        return cap_to_deadline(self.max_wait)

    def _full(self, em: Emitter) -> BulkheadFullError:
        if em:
            em.emit(BulkheadRejected(**em.origin(self.name), reason="bulkhead_full"))
        return refusal(
            BulkheadFullError(
                f"bulkhead {self.name!r}: all {self.max_concurrent} slots busy", policy=self.name
            ),
            em,
        )

    def _waited(self, start: float, em: Emitter) -> None:
        if em:
            em.emit(RateLimitWaited(**em.origin(self.name), wait=self._clock.monotonic() - start))

    # The slow paths are written twice on purpose: they wait differently by nature (a thread
    # blocks on a concurrent Future through clock.wait_future; a task awaits a loop future inside
    # clock.deadline_scope); the decisions they share are the permit methods above.
    def _acquire_sync(self, em: Emitter) -> None:
        if self._try_take():
            return
        budget = self._wait_budget()
        if budget <= 0:
            raise self._full(em)
        waiter = _Waiter()
        fut: Future[bool] = Future()
        waiter.future = fut
        if self._enqueue(waiter):
            return
        start = self._clock.monotonic()
        try:
            done = self._clock.wait_future(fut, budget)
        except BaseException:
            if self._abandon(waiter):
                self._release()
            raise
        if not done and not self._abandon(waiter):
            raise self._full(em)
        self._waited(start, em)

    async def _acquire_async(self, em: Emitter) -> None:
        if self._try_take():
            return
        budget = self._wait_budget()
        if budget <= 0:
            raise self._full(em)
        import asyncio

        waiter = _Waiter()
        loop = asyncio.get_running_loop()
        waiter.loop = loop
        waiter.afut = loop.create_future()
        if self._enqueue(waiter):
            return
        clock = self._clock
        start = clock.monotonic()
        scope = clock.deadline_scope(start + budget)
        try:
            async with scope:
                await waiter.afut
        except TimeoutError:
            if not scope.expired():
                if self._abandon(waiter):
                    self._release()
                raise
            if not self._abandon(waiter):
                raise self._full(em) from None
        except BaseException:
            if self._abandon(waiter):
                self._release()
            raise
        self._waited(start, em)

    # -- the wrappers: written once, async; the sync twin is generated -----------------------
    # twin: async _acquire_async=_acquire_sync
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        lock = self._lock
        limit = self.max_concurrent
        slow = self._acquire_async
        release = self._release

        async def bulkhead_wrapper(*args: Any, **kwargs: Any) -> Any:
            with lock:
                if self._in_use < limit and not self._waiters:
                    self._in_use += 1
                    taken = True
                else:
                    taken = False
            if not taken:
                await slow(em)
            try:
                return await fn(*args, **kwargs)
            finally:
                release()

        return bulkhead_wrapper

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        lock = self._lock
        limit = self.max_concurrent
        slow = self._acquire_sync
        release = self._release

        def bulkhead_wrapper(*args: Any, **kwargs: Any) -> Any:
            with lock:
                if self._in_use < limit and not self._waiters:
                    self._in_use += 1
                    taken = True
                else:
                    taken = False
            if not taken:
                slow(em)
            try:
                return fn(*args, **kwargs)
            finally:
                release()

        return bulkhead_wrapper

    # twin: end
