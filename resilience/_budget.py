"""Retry budgets: cap retries so a failing dependency does not get a retry storm.

Two budgets share one small protocol (``deposit`` per call, ``record`` per outcome,
``try_withdraw`` per retry), so a :class:`resilience.Retry` and the adapters accept either:

* :class:`RetryBudget` (default choice): the *ratio* budget of Finagle / tower / Envoy. Every
  call deposits one token; a retry withdraws one; over a sliding ``ttl`` window, retries may be at
  most ``ratio`` × calls plus a floor of ``min_per_second`` retries per second. It bounds the
  extra load to ``ratio`` no matter how many attempts each call is configured for.
* :class:`RetryThrottle`: gRFC A6 retry throttling (tokens start at ``max_tokens``; a failure
  costs 1, a success earns ``token_ratio``; retries are allowed only while tokens >
  ``max_tokens / 2``). This is what gRPC clients implement.

Budgets are shared objects: pass one instance to every retry policy (or transport) that calls the
same dependency.

Budgets learn only from attempts that reached the dependency. An attempt refused by a policy
inside the retry (an inner rate limiter, bulkhead or breaker) records no outcome, and
:meth:`RetryBudget.refund` gives back what it took: the retry it withdrew, or the call's deposit
when no attempt of the call got through.
"""

from __future__ import annotations

import math
import threading
from typing import Protocol, runtime_checkable

from ._clock import Clock, resolve_clock
from ._types import Duration, positive_int, positive_number, seconds
from .errors import ConfigurationError

__all__ = ["Budget", "RetryBudget", "RetryThrottle"]


@runtime_checkable
class Budget(Protocol):
    """What a retry policy needs from a budget."""

    def deposit(self) -> None:
        """Count one call (its first attempt)."""
        ...

    def record(self, success: bool) -> None:
        """Count one attempt outcome."""
        ...

    def try_withdraw(self) -> bool:
        """Take the permission for one retry; ``False`` means do not retry."""
        ...

    # Optional (a budget without it keeps what refused attempts took):
    # ``refund(*, retry: bool) -> None`` gives back a refused attempt's retry (``retry=True``)
    # or the deposit of a call none of whose attempts got through (``retry=False``).


class RetryBudget:
    """Retries as a fraction of recent calls (Finagle / tower ratio budget).

    Over the last ``ttl`` seconds (kept in ``buckets`` time buckets), a retry is allowed when
    ``retries < ratio * calls + min_per_second * ttl``.

    Args:
        ratio: retries allowed per call, in ``[0, 1000]`` (0.2 means 20 % extra load).
        min_per_second: retries per second always allowed, even with little traffic.
        ttl: how long a deposit counts (1 to 60 seconds).
        clock: time source.

    Example:
        >>> import resilience as rs
        >>> clock = rs.testing.FakeClock()
        >>> budget = rs.RetryBudget(ratio=0.1, min_per_second=0, clock=clock)
        >>> for _ in range(20):
        ...     budget.deposit()
        >>> [budget.try_withdraw() for _ in range(3)]
        [True, True, False]
    """

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        ttl: Duration = 10.0,
        buckets: int = 10,
        clock: Clock | None = None,
    ) -> None:
        self.ratio = positive_number(ratio, "ratio", allow_zero=True)
        if self.ratio > 1000:
            raise ConfigurationError(f"ratio must be <= 1000, got {ratio!r}")
        self.min_per_second = positive_number(min_per_second, "min_per_second", allow_zero=True)
        self.ttl = seconds(ttl, "ttl", allow_zero=False)
        if not 1 <= self.ttl <= 60:
            raise ConfigurationError(f"ttl must be between 1 and 60 seconds, got {ttl!r}")
        buckets = positive_int(buckets, "buckets", maximum=1000)
        self._clock = resolve_clock(clock)
        self._n = buckets
        self._width = self.ttl / buckets
        self._calls = [0] * buckets
        self._retries = [0] * buckets
        self._epoch = [-1] * buckets  # which bucket index (time // width) each slot holds
        self._lock = threading.Lock()

    def _slot(self) -> int:
        idx = math.floor(self._clock.monotonic() / self._width)
        slot = idx % self._n
        if self._epoch[slot] != idx:
            self._epoch[slot] = idx
            self._calls[slot] = 0
            self._retries[slot] = 0
        return slot

    def _live(self) -> tuple[int, int]:
        idx = math.floor(self._clock.monotonic() / self._width)
        calls = retries = 0
        for s in range(self._n):
            if idx - self._n < self._epoch[s] <= idx:
                calls += self._calls[s]
                retries += self._retries[s]
        return calls, retries

    def deposit(self) -> None:
        """Count one call."""
        with self._lock:
            self._calls[self._slot()] += 1

    def record(self, success: bool) -> None:
        """Outcomes do not matter to a ratio budget."""

    def try_withdraw(self) -> bool:
        """Take one retry if the budget allows it."""
        with self._lock:
            slot = self._slot()
            calls, retries = self._live()
            if retries + 1 > self.ratio * calls + self.min_per_second * self.ttl:
                return False
            self._retries[slot] += 1
            return True

    def refund(self, *, retry: bool = False) -> None:
        """Give back what a refused attempt took: the retry it withdrew (``retry=True``), or the
        deposit of a call none of whose attempts reached the dependency (``retry=False``).

        Taken from the newest bucket still counting one (nothing once it has expired), so a
        refused call neither pays for nor earns retries.

        Example:
            >>> import resilience as rs
            >>> budget = rs.RetryBudget(ratio=1, min_per_second=0, clock=rs.testing.FakeClock())
            >>> budget.deposit()
            >>> budget.refund()  # that call was refused before reaching the dependency
            >>> budget.snapshot()["calls"], budget.try_withdraw()
            (0, False)
        """
        with self._lock:
            counts = self._retries if retry else self._calls
            idx = math.floor(self._clock.monotonic() / self._width)
            n = self._n
            for back in range(n):
                slot = (idx - back) % n
                if self._epoch[slot] == idx - back and counts[slot] > 0:
                    counts[slot] -= 1
                    return

    def snapshot(self) -> dict[str, float]:
        """Calls and retries counted in the window."""
        with self._lock:
            calls, retries = self._live()
        return {"calls": calls, "retries": retries, "ratio": self.ratio}

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio!r}, min_per_second={self.min_per_second!r}, "
            f"ttl={self.ttl!r})"
        )


class RetryThrottle:
    """gRFC A6 retry throttling: a token bucket fed by successes, drained by failures.

    Args:
        max_tokens: bucket size, in ``(0, 1000]``; tokens start full.
        token_ratio: tokens a success adds (``> 0``, kept to 3 decimals like gRPC).

    Example:
        >>> import resilience as rs
        >>> throttle = rs.RetryThrottle(max_tokens=10, token_ratio=0.1)
        >>> for _ in range(5):
        ...     throttle.record(False)
        >>> throttle.try_withdraw()  # 5 tokens left: not above 10 / 2
        False
    """

    def __init__(self, *, max_tokens: float = 10.0, token_ratio: float = 0.1) -> None:
        mt = positive_number(max_tokens, "max_tokens")
        if mt > 1000:
            raise ConfigurationError(f"max_tokens must be <= 1000, got {max_tokens!r}")
        tr = positive_number(token_ratio, "token_ratio")
        self.max_tokens = mt
        self.token_ratio = max(round(tr, 3), 0.001)
        self._tokens = mt
        self._lock = threading.Lock()

    @property
    def tokens(self) -> float:
        """The current token count."""
        return self._tokens

    def deposit(self) -> None:
        """Calls do not earn tokens by themselves; outcomes do."""

    def record(self, success: bool) -> None:
        """A success adds ``token_ratio``; a failure removes 1 (clamped to ``[0, max]``)."""
        with self._lock:
            if success:
                self._tokens = min(self.max_tokens, self._tokens + self.token_ratio)
            else:
                self._tokens = max(0.0, self._tokens - 1.0)

    def try_withdraw(self) -> bool:
        """A retry is allowed only while tokens > ``max_tokens / 2`` (it costs nothing itself)."""
        return self._tokens > self.max_tokens / 2

    def refund(self, *, retry: bool = False) -> None:
        """Nothing to give back: a refused attempt records no outcome and took no token."""

    def __repr__(self) -> str:
        return f"RetryThrottle(max_tokens={self.max_tokens!r}, token_ratio={self.token_ratio!r})"
