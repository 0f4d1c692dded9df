"""Adaptive concurrency: a latency-driven concurrency limit (Netflix Gradient2) for load shedding.

The limit follows the ratio of a long-term RTT average to the latest RTT::

    gradient  = max(0.5, min(1.0, tolerance * long_rtt / rtt))
    new_limit = limit * gradient + queue_size
    limit     = limit * (1 - smoothing) + new_limit * smoothing      # clamped to [min, max]

While latency stays within ``tolerance`` × its long-term average the limit grows by about
``queue_size * smoothing`` per sample; when the downstream saturates and latency climbs, the
gradient falls below 1 and the limit shrinks (by at most half per step before smoothing). The
limit does not grow while the caller is "app-limited" (fewer than half the slots in use), and a
long-term average far above the current RTT decays (×0.95 per sample) so recovery is fast.

A call over the limit is rejected at once with :class:`~resilience.BulkheadFullError` (a
:class:`~resilience.RejectedError`; adapters map it to 503 / ``UNAVAILABLE``) and a
:class:`~resilience.events.CallRejected` event with ``reason="concurrency_limit"``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

from ._clock import Clock, resolve_clock
from ._policy import Emitter, Policy, own_refusal, refusal
from ._types import AsyncFn, SyncFn, positive_int, positive_number, ratio
from .errors import BulkheadFullError, ConfigurationError
from .events import CallRejected, Listener

__all__ = ["AdaptiveConcurrency", "gradient2"]


def gradient2(
    limit: float,
    rtt: float,
    long_rtt: float,
    inflight: int,
    *,
    tolerance: float,
    smoothing: float,
    queue_size: float,
    min_limit: float,
    max_limit: float,
) -> float:
    """One Gradient2 step (pure): the new limit after a sample of ``rtt`` seconds.

    Example:
        >>> kw = dict(tolerance=1.5, smoothing=0.2, queue_size=4, min_limit=1, max_limit=100)
        >>> gradient2(20, 0.010, 0.010, 20, **kw)      # healthy: grows by queue_size * smoothing
        20.8
        >>> gradient2(20, 0.040, 0.010, 20, **kw)      # latency x4: shrinks
        18.8
    """
    if inflight < limit / 2:  # app-limited: no evidence the limit is too low
        return limit
    gradient = max(0.5, min(1.0, tolerance * long_rtt / rtt)) if rtt > 0 else 1.0
    new = limit * gradient + queue_size
    new = limit * (1.0 - smoothing) + new * smoothing
    return max(min_limit, min(max_limit, new))


class AdaptiveConcurrency(Policy):
    """A concurrency limit that adapts to the downstream's latency (Gradient2).

    Use it on a server (or in front of a fragile dependency) to shed load before queues build
    up: a call beyond the current :attr:`limit` of in-flight calls is rejected at once with
    :class:`~resilience.BulkheadFullError`. Every completed call (success or exception; not a
    cancellation, and not a refusal by a policy inside this one, e.g. an inner rate limiter's
    :class:`~resilience.RateLimitedError`: it never reached the downstream) feeds its
    round-trip time to the limit.

    Args:
        name: the policy's name.
        initial_limit: the limit before any sample.
        min_limit: the limit never goes below this.
        max_limit: the limit never goes above this.
        tolerance: latency growth over the long-term average that is still "healthy" (> 1).
        smoothing: weight of each new estimate (0, 1].
        queue_size: the limit's additive growth term (Gradient2 default 4).
        long_window: samples averaged by the long-term RTT (exponential average).
        clock: time source for RTTs.
        listeners: event listeners.

    Example:
        >>> import resilience as rs
        >>> ac = rs.AdaptiveConcurrency("api", initial_limit=10)
        >>> @ac
        ... def handle() -> str:
        ...     return "ok"
        >>> handle(), ac.in_flight, ac.limit >= 10
        ('ok', 0, True)
    """

    kind = "adaptive_concurrency"

    def __init__(
        self,
        name: str,
        *,
        initial_limit: int = 20,
        min_limit: int = 1,
        max_limit: int = 1000,
        tolerance: float = 1.5,
        smoothing: float = 0.2,
        queue_size: float = 4,
        long_window: int = 600,
        clock: Clock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(name=name, listeners=listeners)
        self.min_limit = positive_int(min_limit, "min_limit")
        self.max_limit = positive_int(max_limit, "max_limit", minimum=self.min_limit)
        initial = positive_int(initial_limit, "initial_limit", minimum=self.min_limit)
        if initial > self.max_limit:
            raise ConfigurationError(
                f"initial_limit must be <= max_limit ({self.max_limit}), got {initial_limit!r}"
            )
        self.tolerance = positive_number(tolerance, "tolerance")
        if self.tolerance < 1:
            raise ConfigurationError(f"tolerance must be >= 1, got {tolerance!r}")
        self.smoothing = ratio(smoothing, "smoothing")
        self.queue_size = positive_number(queue_size, "queue_size", allow_zero=True)
        self.long_window = positive_int(long_window, "long_window")
        self._clock = resolve_clock(clock)
        self._lock = threading.Lock()
        self._limit = float(initial)
        self._in_flight = 0
        self._long_rtt = 0.0
        self._samples = 0

    def describe(self) -> dict[str, Any]:
        """Plain data describing the configuration."""
        return {
            "kind": self.kind,
            "name": self.name,
            "min_limit": self.min_limit,
            "max_limit": self.max_limit,
            "tolerance": self.tolerance,
            "smoothing": self.smoothing,
            "queue_size": self.queue_size,
            "long_window": self.long_window,
        }

    @property
    def limit(self) -> int:
        """The current concurrency limit (whole calls)."""
        return max(self.min_limit, math.floor(self._limit))

    @property
    def in_flight(self) -> int:
        """Calls currently admitted and not finished."""
        return self._in_flight

    @property
    def long_rtt(self) -> float:
        """The long-term RTT average in seconds (0.0 before any sample)."""
        return self._long_rtt

    # -- permit and record --------------------------------------------------------------------
    def try_acquire(self) -> float | None:
        """Admit one call if under the limit: its start time (pass it to :meth:`release`), else
        ``None``.

        Example:
            >>> import resilience as rs
            >>> ac = rs.AdaptiveConcurrency("x", initial_limit=1, clock=rs.testing.FakeClock())
            >>> start = ac.try_acquire()
            >>> ac.try_acquire() is None
            True
            >>> ac.release(start)
            >>> ac.in_flight
            0
        """
        with self._lock:
            if self._in_flight + 1 > self._limit:
                return None
            self._in_flight += 1
        return self._clock.monotonic()

    def release(self, start: float, *, sample: bool = True) -> None:
        """Finish a call admitted at ``start``; ``sample=False`` skips the RTT (cancellation)."""
        now = self._clock.monotonic() if sample else 0.0
        with self._lock:
            inflight = self._in_flight
            self._in_flight = inflight - 1
            if sample:
                self._record(now - start, inflight)

    def _record(self, rtt: float, inflight: int) -> None:
        n = self._samples + 1
        self._samples = n
        warmup = 10 if self.long_window > 10 else self.long_window
        if n <= warmup:
            self._long_rtt += (rtt - self._long_rtt) / n
        else:
            alpha = 2.0 / (self.long_window + 1)
            self._long_rtt = self._long_rtt * (1.0 - alpha) + rtt * alpha
        long_rtt = self._long_rtt
        if rtt > 0 and long_rtt / rtt > 2.0:
            self._long_rtt = long_rtt = long_rtt * 0.95
        self._limit = gradient2(
            self._limit,
            rtt,
            long_rtt,
            inflight,
            tolerance=self.tolerance,
            smoothing=self.smoothing,
            queue_size=self.queue_size,
            min_limit=self.min_limit,
            max_limit=self.max_limit,
        )

    def _rejected(self, em: Emitter) -> BulkheadFullError:
        if em:
            em.emit(CallRejected(**em.origin(self.name), reason="concurrency_limit"))
        return refusal(
            BulkheadFullError(
                f"adaptive concurrency {self.name!r}: limit {self.limit} reached",
                policy=self.name,
            ),
            em,
        )

    # -- the wrappers: written once, async; the sync twin is generated -----------------------
    # twin: async
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        acquire = self.try_acquire
        release = self.release
        rejected = self._rejected
        chain = em.chain

        async def adaptive_wrapper(*args: Any, **kwargs: Any) -> Any:
            start = acquire()
            if start is None:
                raise rejected(em)
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                release(start, sample=not own_refusal(exc, chain))
                raise
            except BaseException:
                release(start, sample=False)
                raise
            release(start)
            return result

        return adaptive_wrapper

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        acquire = self.try_acquire
        release = self.release
        rejected = self._rejected
        chain = em.chain

        def adaptive_wrapper(*args: Any, **kwargs: Any) -> Any:
            start = acquire()
            if start is None:
                raise rejected(em)
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                release(start, sample=not own_refusal(exc, chain))
                raise
            except BaseException:
                release(start, sample=False)
                raise
            release(start)
            return result

        return adaptive_wrapper

    # twin: end
