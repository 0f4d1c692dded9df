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
same dependency. With ``store=`` (and a ``name``), every process of a fleet shares one budget
through the store (``_shared``: one round trip per retry decision, ``_store``: the operations
and their Lua twins).

Budgets learn only from attempts that reached the dependency. An attempt refused by a policy
inside the retry (an inner rate limiter, bulkhead or breaker) records no outcome, and
:meth:`RetryBudget.refund` gives back what it took: the retry it withdrew, or the call's deposit
when no attempt of the call got through.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ._policy import RetryBudget, RetryThrottle

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
    # Optional (async retries await it when present, else call ``try_withdraw``):
    # ``async atry_withdraw() -> bool``.
