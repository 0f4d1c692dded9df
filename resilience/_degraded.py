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
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._clock import SYSTEM_CLOCK, Clock
from .events import Listener, StoreDecision, StoreFailed, emit

if TYPE_CHECKING:
    from ._policy import Emitter

__all__ = ["DegradedLog", "RESET", "STORE_LOG", "degraded_count", "state_reset"]

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


#: The ``decision`` of a :class:`~resilience.events.StoreFailed` event for an entity whose
#: stored state could not be decoded (corrupted, poisoned, written by an incompatible version):
#: the store treated it as absent and rewrote it; only that key was affected.
RESET: StoreDecision = "reset"


def state_reset(policy: str, em: Emitter | None, listeners: Sequence[Listener] = ()) -> None:
    """Count, log (bounded) and emit one undecodable state that the store rewrote as fresh.

    Example:
        >>> seen = []
        >>> state_reset("cb:payments-example", None, [seen.append])
        >>> seen[0].decision, degraded_count("cb:payments-example", RESET)
        ('reset', 1)
    """
    STORE_LOG.record(policy, RESET, "undecodable state, treated as absent and rewritten")
    if em:
        em.emit(StoreFailed(**em.origin(policy), decision=RESET, error_type="corrupt_state"))
    elif listeners:
        emit(listeners, StoreFailed(policy=policy, decision=RESET, error_type="corrupt_state"))
