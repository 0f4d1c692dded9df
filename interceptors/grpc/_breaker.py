"""Circuit breakers for gRPC clients that do not count the server's back-pressure."""

from __future__ import annotations

from typing import Any

import grpc

import resilience as rs
from resilience._types import ExceptionSpec, exception_predicate

from ._status import code_of, pushback_of

__all__ = ["grpc_breaker", "is_backpressure"]


def is_backpressure(exc: BaseException) -> bool:
    """Whether ``exc`` is the server asking the client to slow down, not a fault of it.

    A ``grpc.RpcError`` with status ``RESOURCE_EXHAUSTED`` (a rate limit or quota), or
    ``UNAVAILABLE`` with a valid ``grpc-retry-pushback-ms`` (the server says when to come
    back: the HTTP 503 with ``Retry-After``).

    Example:
        >>> import grpc
        >>> from interceptors.grpc import StatusError
        >>> is_backpressure(StatusError(grpc.StatusCode.RESOURCE_EXHAUSTED))
        True
        >>> is_backpressure(StatusError(grpc.StatusCode.UNAVAILABLE)), is_backpressure(KeyError())
        (False, False)
    """
    code = code_of(exc)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return True
    if code is grpc.StatusCode.UNAVAILABLE:
        hint = pushback_of(exc)
        return hint is not None and hint >= 0
    return False


def grpc_breaker(
    name: str,
    /,
    *,
    on: ExceptionSpec = Exception,
    count_backpressure: bool = False,
    **options: Any,
) -> rs.CircuitBreaker:
    """A :class:`resilience.CircuitBreaker` for the ``pipeline=`` of a gRPC client interceptor.

    It counts the errors ``on`` matches (every exception by default) **except the server's
    back-pressure** (:func:`is_backpressure`: ``RESOURCE_EXHAUSTED``, ``UNAVAILABLE`` with a
    pushback), which is the server protecting itself, not a fault: a burst against a
    rate-limited server must not open the circuit (a plain ``rs.CircuitBreaker`` counts it).
    ``count_backpressure=True`` counts it too. Every other argument is the breaker's.

    Example:
        >>> import grpc
        >>> from interceptors.grpc import StatusError, grpc_breaker
        >>> breaker = grpc_breaker("billing", failure_count=1)
        >>> def limited() -> None:
        ...     raise StatusError(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota")
        >>> for _ in range(3):
        ...     try:
        ...         breaker.call(limited)
        ...     except grpc.RpcError:
        ...         pass
        >>> breaker.state.value
        'closed'
    """
    counted = exception_predicate(on, "on")
    if count_backpressure:
        return rs.CircuitBreaker(name, on=counted, **options)

    def failure(exc: BaseException) -> bool:
        return counted(exc) and not is_backpressure(exc)

    return rs.CircuitBreaker(name, on=failure, **options)
