"""Timeouts, and the deadline they publish to inner code.

Async functions are really cancelled: the inner task gets ``CancelledError`` at the deadline,
its ``finally`` blocks and ``async with`` exits run, and the caller gets
:class:`resilience.TimeoutExceededError` (a :class:`TimeoutError`).

Python cannot interrupt running sync code, so a sync timeout is honest about what it does:

* ``sync="cooperative"`` (default): the deadline is published in a context variable
  (:func:`resilience.deadline`), which outbound adapters (the httpx transport, gRPC
  interceptors) and retries read, so inner I/O is bounded by the remaining time; if the function
  still returns (or raises) past the deadline, the caller gets ``TimeoutExceededError`` at that
  moment and the late result is discarded.
* ``sync="thread"``: the call runs on a bounded worker pool (``max_workers``, default 32) and the
  caller gets ``TimeoutExceededError`` on time. The worker thread cannot be killed: it runs to
  completion in the background, and its result is discarded. When every worker is busy, the
  call is rejected at once with ``TimeoutExceededError`` rather than spawning more threads.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

from ._clock import SYSTEM_CLOCK, DeadlineClock, resolve_deadline_clock
from ._clock_wheel import arm_task_deadline, disarm_task_deadline
from ._deadline import _DEADLINE, Deadline, tighter
from ._policy import Emitter, Policy
from ._types import AsyncFn, Duration, SyncFn, positive_int
from ._types import seconds as _seconds
from .errors import ConfigurationError, TimeoutExceededError
from .events import Listener, TimeoutElapsed

__all__ = ["Timeout"]


class Timeout(Policy):
    """Bound a call's duration and publish its deadline to inner code.

    Args:
        seconds: the time limit (> 0), float seconds or a ``timedelta``.
        sync: ``"cooperative"`` (default) or ``"thread"``; see the module documentation.
        max_workers: size of the worker pool for ``sync="thread"``.
        name: policy name in events and metrics.
        clock: time source, a :class:`~resilience.DeadlineClock` (checked in full here).
        listeners: event listeners.

    Example:
        >>> import asyncio, resilience as rs
        >>> clock = rs.testing.FakeClock()
        >>> async def slow() -> None:
        ...     await clock.asleep(10)
        >>> try:
        ...     asyncio.run(rs.Timeout(0.5, clock=clock).acall(slow))
        ... except rs.TimeoutExceededError as exc:
        ...     print(exc, clock.monotonic())
        timed out after 0.5 s 0.5
    """

    kind = "timeout"

    def __init__(
        self,
        seconds: Duration,
        *,
        sync: Literal["cooperative", "thread"] = "cooperative",
        max_workers: int = 32,
        name: str = "timeout",
        clock: DeadlineClock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(name=name, listeners=listeners)
        self.seconds = _seconds(seconds, "seconds", allow_zero=False)
        if sync not in ("cooperative", "thread"):
            raise ConfigurationError(f"sync must be 'cooperative' or 'thread', got {sync!r}")
        self.sync = sync
        self.max_workers = positive_int(max_workers, "max_workers")
        self._clock = resolve_deadline_clock(clock)
        self._pool: ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(self.max_workers)
        self._pool_lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        """Plain data describing the configuration."""
        return {"kind": self.kind, "name": self.name, "seconds": self.seconds, "sync": self.sync}

    def _expired(self, em: Emitter) -> TimeoutExceededError:
        if em:
            em.emit(TimeoutElapsed(**em.origin(self.name), timeout=self.seconds))
        return TimeoutExceededError(
            f"timed out after {self.seconds:g} s", timeout=self.seconds, policy=self.name
        )

    # -- sync ---------------------------------------------------------------------------------
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        if self.sync == "thread":
            return self._thread_wrapper(fn, em)
        clock = self._clock
        limit = self.seconds
        expired = self._expired

        def timeout_wrapper(*args: Any, **kwargs: Any) -> Any:
            at = clock.monotonic() + limit
            token = _DEADLINE.set(tighter(at, clock))
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                if clock.monotonic() >= at:
                    raise expired(em) from exc
                raise
            finally:
                _DEADLINE.reset(token)
            if clock.monotonic() > at:
                raise expired(em)
            return result

        return timeout_wrapper

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.max_workers, thread_name_prefix=f"resilience-{self.name}"
                )
            return self._pool

    def _thread_wrapper(self, fn: SyncFn, em: Emitter) -> SyncFn:
        clock = self._clock
        limit = self.seconds
        slots = self._slots

        def run(ctx: contextvars.Context, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            try:
                return ctx.run(fn, *args, **kwargs)
            finally:
                slots.release()

        def thread_timeout_wrapper(*args: Any, **kwargs: Any) -> Any:
            if not slots.acquire(blocking=False):
                raise TimeoutExceededError(
                    f"timeout {self.name!r}: all {self.max_workers} workers are busy",
                    timeout=limit,
                    policy=self.name,
                )
            at = clock.monotonic() + limit
            token = _DEADLINE.set(tighter(at, clock))
            try:
                ctx = contextvars.copy_context()
            finally:
                _DEADLINE.reset(token)
            try:
                fut: Future[Any] = self._executor().submit(run, ctx, args, kwargs)
            except BaseException:
                slots.release()
                raise
            if not clock.wait_future(fut, max(0.0, at - clock.monotonic())):
                raise self._expired(em)
            if clock.monotonic() > at:  # done, but past the deadline: late, like cooperative
                raise self._expired(em)
            return fut.result()

        return thread_timeout_wrapper

    # -- async --------------------------------------------------------------------------------
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        from asyncio import CancelledError

        arm, disarm = arm_task_deadline, disarm_task_deadline
        monotonic = SYSTEM_CLOCK.monotonic
        clock = self._clock
        limit = self.seconds
        expired = self._expired

        if clock is SYSTEM_CLOCK:
            # the hot path: arm/disarm directly on the loop's shared deadline wheel
            async def fast_timeout_wrapper(*args: Any, **kwargs: Any) -> Any:
                at = monotonic() + limit
                cur = _DEADLINE.get()
                token = _DEADLINE.set(
                    cur
                    if cur is not None and cur.clock is clock and cur.at <= at
                    else Deadline(at, clock)
                )
                entry = arm(at)
                try:
                    result = await fn(*args, **kwargs)
                except CancelledError:
                    if disarm(entry):
                        raise expired(em) from None
                    raise
                except BaseException as exc:
                    disarm(entry)
                    if isinstance(exc, Exception) and monotonic() >= at:
                        raise expired(em) from exc
                    raise
                finally:
                    _DEADLINE.reset(token)
                disarm(entry)
                if monotonic() > at:
                    raise expired(em)
                return result

            return fast_timeout_wrapper

        async def timeout_wrapper(*args: Any, **kwargs: Any) -> Any:
            at = clock.monotonic() + limit
            token = _DEADLINE.set(tighter(at, clock))
            scope = clock.deadline_scope(at)
            scope.enter()
            try:
                result = await fn(*args, **kwargs)
            except CancelledError:
                if scope.exit():
                    raise expired(em) from None
                raise
            except BaseException as exc:
                scope.exit()
                if isinstance(exc, Exception) and clock.monotonic() >= at:
                    raise expired(em) from exc
                raise
            finally:
                _DEADLINE.reset(token)
            scope.exit()
            if clock.monotonic() > at:
                raise expired(em)
            return result

        return timeout_wrapper
