"""Bounded-rate logging of degraded decisions (private).

A store outage turns every decision into a degraded one; logging each would flood the logs at
the request rate. Each degraded decision is still counted (a ``StoreFailed`` event per call,
which the OpenTelemetry adapter turns into a metric, and :func:`degraded_count`); the log gets
at most one line per ``(policy, decision)`` every ``interval`` seconds, carrying the number of
decisions it stands for.
"""

from __future__ import annotations

import logging
import threading

from ._clock import SYSTEM_CLOCK, Clock

__all__ = ["DegradedLog", "STORE_LOG", "degraded_count"]

_log = logging.getLogger("resilience")


class DegradedLog:
    """At most one warning per key per ``interval`` seconds, with the count it summarizes.

    Example:
        >>> from resilience.testing import FakeClock
        >>> log = DegradedLog(interval=10.0, clock=FakeClock())
        >>> [log.record("rl:api", "open", "ConnectionError") for _ in range(3)]
        [True, False, False]
        >>> log.counts[("rl:api", "open")]
        3
    """

    def __init__(self, interval: float = 10.0, clock: Clock = SYSTEM_CLOCK) -> None:
        self.interval = interval
        self.clock = clock
        self.counts: dict[tuple[str, str], int] = {}
        self._next: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def record(self, policy: str, decision: str, error: str) -> bool:
        """Count one degraded decision; log it if this key was quiet for ``interval``.

        Returns whether a line was logged.
        """
        key = (policy, decision)
        now = self.clock.monotonic()
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            due, since = self._next.get(key, (float("-inf"), 0))
            if now < due:
                self._next[key] = (due, since + 1)
                return False
            self._next[key] = (now + self.interval, 0)
        _log.warning(
            "resilience: %s: state store failed (%s); decision=%s%s",
            policy,
            error,
            decision,
            f" ({since} more such decisions since the last report)" if since else "",
        )
        return True


#: The process-wide log of degraded store decisions.
STORE_LOG = DegradedLog()


def degraded_count(policy: str, decision: str) -> int:
    """How many degraded decisions ``policy`` took with ``decision`` in this process.

    Example:
        >>> degraded_count("never-failed", "open")
        0
    """
    return STORE_LOG.counts.get((policy, decision), 0)
