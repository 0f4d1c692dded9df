"""How long a duplicate should wait: observed durations of completed requests, per operation.

The idempotency adapters answer a duplicate of a request still in flight with a retry delay
(HTTP ``Retry-After`` on the 409, gRPC ``grpc-retry-pushback-ms`` on ``ABORTED``). The lease
left on the first request's claim is an upper bound (after it, the claim is anyone's), but a
poor hint: a request that ends in 50 ms would make its duplicate wait a minute. So the
adapters learn how long requests of each operation take and hint that instead.
"""

from __future__ import annotations

__all__ = ["DurationHints"]


class DurationHints:
    """Smoothed durations of completed requests per operation (route, RPC method).

    The estimate of an operation is the one TCP uses for its retransmission timeout (RFC 6298):
    a smoothed duration ``s`` and a smoothed deviation ``v`` (gains 1/8 and 1/4), giving
    ``s + 4 v``, which most requests of a steady operation finish within. The first
    observation sets ``s = d`` and ``v = d / 2``. At most ``max_operations`` operations are
    tracked; others get no estimate.

    Example:
        >>> hints = DurationHints()
        >>> for _ in range(20):
        ...     hints.observe("POST /orders", 0.05)
        >>> round(hints.estimate("POST /orders"), 3)
        0.05
        >>> hints.hint("POST /orders", lease_left=57.0) == hints.estimate("POST /orders")
        True
        >>> hints.hint("POST /unknown", lease_left=57.0)  # nothing observed: the lease left
        57.0
    """

    __slots__ = ("_limit", "_stats")

    def __init__(self, max_operations: int = 1024) -> None:
        self._stats: dict[str, list[float]] = {}
        self._limit = max_operations

    def observe(self, operation: str, seconds: float) -> None:
        """Learn that a request of ``operation`` completed in ``seconds``."""
        if not seconds >= 0.0:  # negative or NaN (a clock that went back): ignored
            return
        stats = self._stats.get(operation)
        if stats is None:
            if len(self._stats) < self._limit:
                self._stats[operation] = [seconds, seconds / 2]
            return
        error = seconds - stats[0]
        stats[0] += error / 8
        stats[1] += (abs(error) - stats[1]) / 4

    def estimate(self, operation: str) -> float | None:
        """Seconds most requests of ``operation`` complete within, or ``None`` (none seen)."""
        stats = self._stats.get(operation)
        return None if stats is None else stats[0] + 4 * stats[1]

    def hint(self, operation: str, lease_left: float | None) -> float | None:
        """The delay to tell a duplicate: the estimate, capped by the lease left on the claim
        (``lease_left`` itself when nothing was observed yet)."""
        estimate = self.estimate(operation)
        if estimate is None:
            return lease_left
        return estimate if lease_left is None else min(estimate, lease_left)
