"""The exception hierarchy of :mod:`resilience`.

::

    ResilienceError
    ├── ConfigurationError (also ValueError)
    ├── RejectedError             .retry_after: float | None
    │   ├── CircuitOpenError
    │   ├── RateLimitedError
    │   ├── BulkheadFullError
    │   ├── IdempotencyConflictError
    │   │   ├── IdempotencyInProgressError
    │   │   └── IdempotencyKeyReusedError
    │   ├── LockHeldError         .key, .fence, .lost
    │   └── ThrottledError
    ├── TimeoutExceededError (also TimeoutError)
    ├── StoreError
    └── IdempotencyOutcomeUnrecordedError   .result: the function's own return value

A policy that gives up re-raises the *user's* exception (with a note attached), never a wrapper.
The errors here are raised only when a policy itself refuses or aborts a call.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BulkheadFullError",
    "CircuitOpenError",
    "ConfigurationError",
    "IdempotencyConflictError",
    "IdempotencyInProgressError",
    "IdempotencyKeyReusedError",
    "IdempotencyOutcomeUnrecordedError",
    "LockHeldError",
    "RateLimitedError",
    "RejectedError",
    "ResilienceError",
    "StoreError",
    "ThrottledError",
    "TimeoutExceededError",
]


class ResilienceError(Exception):
    """Base class of every error raised by a resilience policy."""


class ConfigurationError(ResilienceError, ValueError):
    """An invalid parameter, raised at construction (or at the call boundary for per-call input).

    Example:
        >>> import resilience as rs
        >>> rs.Retry(on=OSError, attempts=0)
        Traceback (most recent call last):
        ...
        resilience.errors.ConfigurationError: attempts must be an integer >= 1 and <= 2**53, got 0
    """


class RejectedError(ResilienceError):
    """The call was not attempted because a policy refused it.

    Attributes:
        policy: name of the policy that refused the call.
        retry_after: seconds after which a new attempt may succeed, when known.

    A refusal raised by a policy of a composition (a :class:`resilience.Pipeline`, or
    decorators stacked on one function) is *that composition's own*: the policies around the
    refusing one do not count it as a failure of the dependency (breakers, retry budgets,
    adaptive concurrency) and rate limiters refund the permits it took. A ``RejectedError``
    raised by the protected function itself (constructed by user code, or a refusal escaping
    another, separate composition called inside it) is an ordinary exception to them.
    """

    #: The composition that raised this refusal (set by the refusing policy; ``None``: none).
    _chain: object = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle like any exception, without the composition token (a live callable that
        # means nothing in another process and may not pickle).
        state = {k: v for k, v in self.__dict__.items() if k != "_chain"}
        return (self.__class__, self.args, state or None)

    def __init__(
        self, message: str = "", *, policy: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(message or self.__class__.__doc__ or self.__class__.__name__)
        self.policy = policy
        self.retry_after = retry_after


class CircuitOpenError(RejectedError):
    """The circuit breaker is open (or its half-open probes are all taken).

    Attributes:
        forced: ``True`` when the breaker is *forced* open by ``breaker.open()``: it has no
            timer (``retry_after`` is ``None``) and stays open until ``close()`` or ``reset()``.

    Example:
        >>> import resilience as rs
        >>> breaker = rs.CircuitBreaker("db", failure_count=1)
        >>> breaker.open()
        >>> try:
        ...     breaker.call(print, "never printed")
        ... except rs.CircuitOpenError as exc:
        ...     print(exc.forced, exc.retry_after)
        True None
    """

    def __init__(
        self,
        message: str = "",
        *,
        policy: str = "",
        retry_after: float | None = None,
        forced: bool = False,
    ) -> None:
        super().__init__(message, policy=policy, retry_after=retry_after)
        self.forced = forced


class RateLimitedError(RejectedError):
    """The rate limiter has no permit for this call within its allowed wait."""


class BulkheadFullError(RejectedError):
    """Every concurrency slot of the bulkhead is taken and none freed within ``max_wait``."""


class IdempotencyConflictError(RejectedError):
    """Another call with the same idempotency key conflicts with this one."""


class IdempotencyInProgressError(IdempotencyConflictError):
    """A call with the same idempotency key is still running."""


class IdempotencyKeyReusedError(IdempotencyConflictError):
    """The idempotency key was already used for a call with different arguments."""


class TimeoutExceededError(ResilienceError, TimeoutError):
    """The call ran past its deadline.

    Attributes:
        timeout: the configured timeout in seconds, when known.
        policy: name of the policy whose deadline expired.
    """

    def __init__(
        self, message: str = "", *, timeout: float | None = None, policy: str = ""
    ) -> None:
        super().__init__(message or "deadline exceeded")
        self.timeout = timeout
        self.policy = policy


class StoreError(ResilienceError):
    """The state store (e.g. Redis) failed; ``__cause__`` holds the backend's error."""


class IdempotencyOutcomeUnrecordedError(ResilienceError):
    """An idempotent call **ran and succeeded**, but its outcome could not be recorded.

    The store kept failing for as long as the claim's lease was held (the completion is retried
    until then), so the record stays *in progress* and expires with the lease: a duplicate
    arriving later runs the function again. The call's own result is in :attr:`result`; use it
    if a possible second execution is acceptable, or reconcile before retrying.

    Not a :class:`StoreError` (which means the function did not run) and not a
    :class:`RejectedError`: a generic ``Retry(on=StoreError)`` must not repeat a call that
    already took effect.

    Attributes:
        result: the function's return value.
        policy: the name of the idempotency policy.

    Example:
        >>> import resilience as rs
        >>> try:
        ...     raise rs.IdempotencyOutcomeUnrecordedError("not recorded", result={"id": 7})
        ... except rs.IdempotencyOutcomeUnrecordedError as err:
        ...     err.result
        {'id': 7}
    """

    def __init__(self, message: str = "", *, result: object = None, policy: str = "") -> None:
        super().__init__(message or "the call succeeded but its outcome could not be recorded")
        self.result = result
        self.policy = policy


class LockHeldError(RejectedError):
    """The lock on a key is not yours: another holder has it (or, with ``lost``, may have it).

    Raised by :class:`resilience.Lock` when the key stayed held for the whole ``wait``
    (``retry_after``: the seconds left on the holder's lease), and by ``held.check()`` once a
    hold was lost (``lost`` is ``True``, ``retry_after`` is ``None``): its lease ended or was
    taken over, so the critical section is no longer exclusive.

    Attributes:
        key: the lock's key.
        fence: the holder's fence (a refusal) or the lost hold's own fence.
        lost: ``True`` for a lost hold, ``False`` for a refused acquisition.

    Example:
        >>> import resilience as rs
        >>> lock = rs.Lock("orders", ttl=30, clock=rs.testing.FakeClock())
        >>> with lock.hold("order-7"):
        ...     try:
        ...         with lock.hold("order-7"):
        ...             pass
        ...     except rs.LockHeldError as exc:
        ...         print(exc.key, exc.fence, exc.retry_after > 29)
        order-7 1 True
    """

    def __init__(
        self,
        message: str = "",
        *,
        policy: str = "",
        retry_after: float | None = None,
        key: str = "",
        fence: int = 0,
        lost: bool = False,
    ) -> None:
        super().__init__(message, policy=policy, retry_after=retry_after)
        self.key = key
        self.fence = fence
        self.lost = lost


class ThrottledError(RejectedError):
    """An adaptive throttle rejected the call locally: the backend has been refusing too many
    requests lately (:class:`resilience.AdaptiveThrottle`). ``retry_after`` is the time until
    the oldest part of the throttle's window leaves it."""
