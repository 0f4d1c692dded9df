"""resilience: composable resilience policies for sync and async Python.

Example:
    >>> import resilience as rs
    >>> clock = rs.testing.FakeClock()
    >>> policy = rs.Pipeline(
    ...     rs.Timeout(10, clock=clock),
    ...     rs.Retry(on=ConnectionError, attempts=3, backoff=rs.backoff.constant(0.5), clock=clock),
    ... )
    >>> calls = []
    >>> @policy
    ... def fetch() -> str:
    ...     calls.append(clock.monotonic())
    ...     if len(calls) == 1:
    ...         raise ConnectionError("reset")
    ...     return "ok"
    >>> fetch(), calls
    ('ok', [0.0, 0.5])

``import resilience`` imports no asyncio, redis, grpc, httpx or opentelemetry.
"""

from __future__ import annotations

from typing import Any as _Any

from . import backoff, chaos, delivery, events, instrumentation, testing
from ._adaptive import AdaptiveConcurrency, gradient2
from ._budget import Budget, RetryBudget, RetryThrottle
from ._bulkhead import Bulkhead
from ._clock import Clock, DeadlineClock, SystemClock
from ._deadline import (
    Deadline,
    cap_to_deadline,
    deadline,
    deadline_scope,
    publish_deadline,
    remaining,
    reset_deadline,
)
from ._fallback import Fallback
from ._hedge import Hedge, HedgeDelay, LatencyPercentile
from ._pipeline import Pipeline
from ._policy import Emitter, Policy, refused_by_policy
from ._retry import Retry, attach_retry_after, retry_after_attribute
from ._timeout import Timeout
from .circuit import CircuitBreaker, CircuitState
from .errors import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigurationError,
    IdempotencyConflictError,
    IdempotencyInProgressError,
    IdempotencyKeyReusedError,
    IdempotencyOutcomeUnrecordedError,
    LockHeldError,
    RateLimitedError,
    RejectedError,
    ResilienceError,
    StoreError,
    ThrottledError,
    TimeoutExceededError,
)
from .idempotency import IdempotencyRecords, Idempotent, JSONCodec
from .lock import Lock
from .ratelimit import Decision, Limit, RateLimiter
from .stores import MemoryStore
from .stores.redis import RedisStore
from .throttle import AdaptiveThrottle

__all__ = [
    "AdaptiveConcurrency",
    "AdaptiveThrottle",
    "Budget",
    "Bulkhead",
    "BulkheadFullError",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "ConfigurationError",
    "Deadline",
    "DeadlineClock",
    "Decision",
    "Emitter",
    "Fallback",
    "Hedge",
    "HedgeDelay",
    "IdempotencyConflictError",
    "IdempotencyInProgressError",
    "IdempotencyKeyReusedError",
    "IdempotencyOutcomeUnrecordedError",
    "IdempotencyRecords",
    "Idempotent",
    "JSONCodec",
    "LatencyPercentile",
    "Limit",
    "Lock",
    "LockHeldError",
    "MemoryStore",
    "Pipeline",
    "Policy",
    "RateLimitedError",
    "RateLimiter",
    "RedisStore",
    "RejectedError",
    "ResilienceError",
    "Retry",
    "RetryBudget",
    "RetryThrottle",
    "StoreError",
    "SystemClock",
    "ThrottledError",
    "Timeout",
    "TimeoutExceededError",
    "attach_retry_after",
    "backoff",
    "cap_to_deadline",
    "chaos",
    "deadline",
    "deadline_scope",
    "delivery",
    "events",
    "gradient2",
    "instrumentation",
    "publish_deadline",
    "refused_by_policy",
    "remaining",
    "reset_deadline",
    "retry_after_attribute",
    "testing",
]


def __getattr__(name: str) -> _Any:
    # ``__version__`` is read from the installed distribution's metadata on first use (so it
    # can never disagree with what pip installed, and ``import resilience`` stays cheap)
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("resilience-policies")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree only
            value = "0+unknown"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module 'resilience' has no attribute {name!r}")
