"""Circuit breakers for HTTP clients that do not count the server's back-pressure."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import httpx

import resilience as rs
from resilience._types import ExceptionSpec, status_codes

__all__ = ["BREAKER_STATUSES", "http_breaker", "is_backpressure"]

#: Statuses :func:`http_breaker` counts as failures by default (back-pressure aside).
BREAKER_STATUSES: frozenset[int] = frozenset({500, 502, 503, 504})


def is_backpressure(response: httpx.Response) -> bool:
    """Whether ``response`` is the server asking the client to slow down, not a fault of it.

    A ``429 Too Many Requests``, or a ``503`` carrying a ``Retry-After`` (the server says when
    to come back).

    Example:
        >>> import httpx
        >>> is_backpressure(httpx.Response(429)), is_backpressure(httpx.Response(503))
        (True, False)
        >>> is_backpressure(httpx.Response(503, headers={"Retry-After": "2"}))
        True
    """
    status = response.status_code
    return status == 429 or (status == 503 and "retry-after" in response.headers)


def http_breaker(
    name: str,
    /,
    *,
    statuses: Collection[int] = BREAKER_STATUSES,
    on: ExceptionSpec = Exception,
    count_backpressure: bool = False,
    **options: Any,
) -> rs.CircuitBreaker:
    """A :class:`resilience.CircuitBreaker` for the resilient transports (``per_host=``).

    It counts errors ``on`` matches (transport errors, timeouts: every exception by default)
    and responses whose status is in ``statuses`` (500, 502, 503, 504), **except the server's
    back-pressure** (:func:`is_backpressure`: a 429, a 503 with ``Retry-After``), which is the
    server protecting itself, not a fault: a burst against a rate-limited server must not open
    the circuit. ``count_backpressure=True`` counts it too (a 429 only when in ``statuses``).
    Every other argument is the breaker's.

    Example:
        >>> import httpx
        >>> from interceptors.httpx import http_breaker
        >>> breaker = http_breaker("inventory", failure_count=1)
        >>> for _ in range(3):
        ...     _ = breaker.call(lambda: httpx.Response(429))
        >>> breaker.state.value
        'closed'
        >>> _ = breaker.call(lambda: httpx.Response(500))
        >>> breaker.state.value
        'open'
    """
    counted = status_codes(statuses, "statuses")
    keep = bool(count_backpressure)

    def failed(response: object) -> bool:
        return (
            isinstance(response, httpx.Response)
            and response.status_code in counted
            and (keep or not is_backpressure(response))
        )

    return rs.CircuitBreaker(name, on=on, on_result=failed, **options)
