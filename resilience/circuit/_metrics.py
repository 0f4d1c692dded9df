"""The breaker's public value types: :class:`CircuitState` and :class:`CircuitMetrics`."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from . import _core as core
from ._options import US

__all__ = ["STATES", "CircuitMetrics", "CircuitState", "metrics_of"]


class CircuitState(enum.Enum):
    """The state of a :class:`CircuitBreaker`.

    Example:
        >>> import resilience as rs
        >>> rs.CircuitBreaker("db", failure_ratio=0.5).state
        <CircuitState.CLOSED: 'closed'>
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


STATES = (CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN)


@dataclass(frozen=True, slots=True)
class CircuitMetrics:
    """A read-only snapshot of a breaker.

    Attributes:
        state: the state at the time of the snapshot.
        calls: calls recorded in the current window (CLOSED; frozen while OPEN/HALF_OPEN).
        failures: failed calls among them.
        slow_calls: slow calls among them.
        failure_ratio: ``failures / calls`` (``None`` when no calls).
        slow_call_ratio: ``slow_calls / calls`` (``None`` when no calls).
        rejected: calls refused since creation (or the last ``reset()``).
        stale: outcomes ignored because their call started in an older generation.
        consecutive_opens: openings since the breaker last closed.
        retry_after: seconds until an OPEN breaker admits probes (``None`` otherwise or when
            forced open by ``open()``).
        forced: ``True`` when the breaker is forced open by ``open()`` (no timer).
        consecutive_failures: with ``consecutive_failures=`` configured, the failures in a row
            recorded since the last success (it opens the breaker when it reaches the
            threshold; 0 while OPEN or HALF_OPEN: the streak starts again on closing);
            ``None`` when the breaker does not count streaks.

    Example:
        >>> import resilience as rs
        >>> breaker = rs.CircuitBreaker("db", failure_count=3)
        >>> breaker.call(lambda: "ok")
        'ok'
        >>> m = breaker.metrics
        >>> m.calls, m.failures, m.failure_ratio
        (1, 0, 0.0)
    """

    state: CircuitState
    calls: int
    failures: int
    slow_calls: int
    failure_ratio: float | None
    slow_call_ratio: float | None
    rejected: int
    stale: int
    consecutive_opens: int
    retry_after: float | None
    forced: bool = False
    consecutive_failures: int | None = None


def metrics_of(snap: tuple[int, ...], streaks: bool = False) -> CircuitMetrics:
    """A :class:`CircuitMetrics` from :func:`._core.snapshot` followed by the time (µs)
    (``streaks``: the breaker counts consecutive failures)."""
    code, calls, fails, slow, rejected, stale, opens, until, streak, now = snap
    return CircuitMetrics(
        state=STATES[code],
        calls=calls,
        failures=fails,
        slow_calls=slow,
        failure_ratio=fails / calls if calls else None,
        slow_call_ratio=slow / calls if calls else None,
        rejected=rejected,
        stale=stale,
        consecutive_opens=opens,
        retry_after=(until - now) / US if code == core.OPEN and until >= 0 else None,
        forced=code == core.OPEN and until < 0,
        consecutive_failures=streak if streaks else None,
    )
