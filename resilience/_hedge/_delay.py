"""When to send the next hedge: a fixed delay, a schedule, or an observed latency percentile."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from .._types import Duration, positive_int, positive_number
from .._types import seconds as _seconds
from ..errors import ConfigurationError

__all__ = ["HedgeDelay", "LatencyPercentile", "hedge_delay"]


@runtime_checkable
class HedgeDelay(Protocol):
    """What a :class:`resilience.Hedge` asks its delay: seconds before the next hedge, and the
    latency of every attempt it saw (a percentile delay learns from them)."""

    def delay(self, started: int) -> float:
        """Seconds to wait before the next attempt, when ``started`` attempts are in flight."""
        ...

    def observe(self, seconds: float) -> None:
        """One attempt's latency (a lower bound for an attempt that lost and was cancelled)."""
        ...


class _Fixed:
    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def delay(self, started: int) -> float:
        return self.seconds

    def observe(self, seconds: float) -> None:
        pass

    def __repr__(self) -> str:
        return f"{self.seconds!r}"


class _Schedule:
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[int], float]) -> None:
        self.fn = fn

    def delay(self, started: int) -> float:
        value: object = self.fn(started)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ConfigurationError(
                f"a hedge delay callable must return seconds >= 0, got {value!r}"
            )
        return float(value)

    def observe(self, seconds: float) -> None:
        pass

    def __repr__(self) -> str:
        return repr(self.fn)


class LatencyPercentile:
    """A hedge delay following a percentile of the latency of recent attempts.

    Keeps the latencies of the last ``window`` attempts that finished (an attempt that lost
    the race and was cancelled counts with the time it had run, a lower bound of its latency,
    so slow calls still pull the percentile up) and waits for their ``percentile``-th
    percentile before hedging. Until ``min_samples`` latencies were seen, the delay is
    ``fallback``. The percentile is recomputed every ``window // 20`` new samples (at least
    every sample), not on every call.

    Build it with :meth:`resilience.Hedge.percentile`.

    Example:
        >>> import resilience as rs
        >>> p95 = rs.Hedge.percentile(95, window=100, min_samples=10, fallback=0.5)
        >>> p95.delay(1)
        0.5
        >>> for ms in range(1, 101):
        ...     p95.observe(ms / 1000)
        >>> p95.delay(1)
        0.095
    """

    __slots__ = ("_dirty", "_every", "_lock", "_samples", "_value", "fallback", "min_samples", "q")

    def __init__(
        self,
        percentile: float,
        *,
        window: int = 1000,
        min_samples: int = 100,
        fallback: Duration = 1.0,
    ) -> None:
        q = positive_number(percentile, "percentile")
        if not 0 < q < 100:
            raise ConfigurationError(f"percentile must be in (0, 100), got {percentile!r}")
        self.q = q
        size = positive_int(window, "window")
        self.min_samples = positive_int(min_samples, "min_samples", maximum=size)
        self.fallback = _seconds(fallback, "fallback")
        self._samples: deque[float] = deque(maxlen=size)
        self._every = max(1, size // 20)
        self._dirty = 0
        self._value: float | None = None
        self._lock = threading.Lock()

    @property
    def window(self) -> int:
        """How many recent latencies are kept."""
        return self._samples.maxlen or 0

    def observe(self, seconds: float) -> None:
        """Record one attempt's latency."""
        with self._lock:
            self._samples.append(seconds)
            self._dirty += 1

    def delay(self, started: int) -> float:
        """The current percentile (``fallback`` until ``min_samples`` were observed)."""
        value = self._value
        if value is not None and self._dirty < self._every:
            return value
        with self._lock:
            n = len(self._samples)
            if n < self.min_samples:
                return self.fallback
            ordered = sorted(self._samples)
            self._dirty = 0
            # nearest-rank percentile
            value = ordered[min(n - 1, max(0, math.ceil(self.q / 100 * n) - 1))]
            self._value = value
        return value

    def __repr__(self) -> str:
        return (
            f"Hedge.percentile({self.q:g}, window={self.window}, min_samples={self.min_samples}, "
            f"fallback={self.fallback!r})"
        )


def hedge_delay(delay: object) -> HedgeDelay:
    """``delay=`` of a :class:`resilience.Hedge` as a :class:`HedgeDelay`."""
    if isinstance(delay, LatencyPercentile):
        return delay
    if isinstance(delay, HedgeDelay) and not isinstance(delay, type):
        return delay
    if callable(delay) and not isinstance(delay, type):
        return _Schedule(delay)
    return _Fixed(_seconds(delay, "delay"))  # type: ignore[arg-type]
