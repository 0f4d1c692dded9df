"""The one classification of resilience errors for the server adapters: HTTP and gRPC.

Every server adapter answers a policy's refusal from this table: the ASGI middlewares
(``ResilienceMiddleware``, ``RateLimitMiddleware``, ``IdempotencyMiddleware``) send the HTTP
status and problem type as RFC 9457 ``application/problem+json``, and both gRPC server
interceptors (sync and aio) abort with the gRPC status. The same error therefore has one
problem type and one status everywhere.

Problem types are ``urn:resilience:problem:`` followed by the slug shown.

==============================  ====  =============================  =======================  =====
error (first match wins)        HTTP  problem type (after the base)  gRPC status              delay
==============================  ====  =============================  =======================  =====
``RateLimitedError``            429   ``rate-limited``               ``RESOURCE_EXHAUSTED``   yes
``CircuitOpenError``            503   ``circuit-open``               ``UNAVAILABLE``          yes
``BulkheadFullError``           503   ``bulkhead-full``              ``UNAVAILABLE``          yes
``ThrottledError``              503   ``throttled``                  ``UNAVAILABLE``          yes
``IdempotencyInProgressError``  409   ``idempotency#in-progress``    ``ABORTED``              yes
``IdempotencyKeyReusedError``   422   ``idempotency#key-reused``     ``FAILED_PRECONDITION``
``IdempotencyConflictError``    409   ``idempotency#conflict``       ``ABORTED``
``LockHeldError``               409   ``lock-held``                  ``ABORTED``              yes
``RejectedError`` (other)       503   ``rejected``                   ``UNAVAILABLE``          yes
``TimeoutExceededError``        504   ``timeout``                    ``DEADLINE_EXCEEDED``
``StoreError``                  503   ``store-unavailable``          ``UNAVAILABLE``
==============================  ====  =============================  =======================  =====

"delay": the error's ``retry_after`` (when it carries a number) is sent as ``Retry-After``
(HTTP, whole seconds rounded up) or ``grpc-retry-pushback-ms`` (gRPC). A breaker forced open
(``CircuitOpenError.forced``) has no timer, so no delay is sent; its message, sent as the
problem ``detail`` / status details, says "forced open".

Two resilience errors are deliberately **not** in the table (:data:`UNMAPPED`), so they
propagate like any exception of the application (the framework logs them and answers 500 /
``UNKNOWN``): ``ConfigurationError`` is a bug of the server's own code or setup, not a state a
client can act on, and ``IdempotencyOutcomeUnrecordedError`` is not a refusal: the call ran and
succeeded.

Example:
    >>> import resilience as rs
    >>> from interceptors.errors import classify
    >>> row = classify(rs.RateLimitedError(retry_after=2))
    >>> row.http_status, row.problem_type, row.grpc_status
    (429, 'urn:resilience:problem:rate-limited', 'RESOURCE_EXHAUSTED')
    >>> classify(rs.IdempotencyKeyReusedError).grpc_status
    'FAILED_PRECONDITION'
    >>> classify(KeyError("not ours")) is None
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from resilience.errors import (
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

__all__ = ["ERROR_TABLE", "PROBLEM_BASE", "UNMAPPED", "ErrorMapping", "classify", "retry_delay"]

#: The prefix of every problem type URN this package sends.
PROBLEM_BASE = "urn:resilience:problem:"


@dataclass(frozen=True, slots=True)
class ErrorMapping:
    """How the server adapters answer one resilience error class.

    Attributes:
        error: the error class (its subclasses match too, unless an earlier row claims them).
        http_status: the HTTP status code.
        title: the problem ``title`` (the status's reason phrase; one title per problem type).
        problem_type: the RFC 9457 problem ``type`` URN.
        grpc_status: the name of the ``grpc.StatusCode`` (a string, so that this module does not
            import ``grpc``).
        retry_delay: whether the error's ``retry_after`` is sent (``Retry-After`` /
            ``grpc-retry-pushback-ms``).

    Example:
        >>> import resilience as rs
        >>> row = classify(rs.StoreError("redis down"))
        >>> row.http_status, row.title, row.grpc_status, row.retry_delay
        (503, 'Service Unavailable', 'UNAVAILABLE', False)
    """

    error: type[ResilienceError]
    http_status: int
    title: str
    problem_type: str
    grpc_status: str
    retry_delay: bool = False


def _row(
    error: type[ResilienceError],
    http_status: int,
    title: str,
    slug: str,
    grpc_status: str,
    retry_delay: bool = False,
) -> ErrorMapping:
    return ErrorMapping(error, http_status, title, PROBLEM_BASE + slug, grpc_status, retry_delay)


#: The table, most specific class first: the first row whose class the error is an instance of
#: answers it (subclasses before their bases).
ERROR_TABLE: tuple[ErrorMapping, ...] = (
    _row(RateLimitedError, 429, "Too Many Requests", "rate-limited", "RESOURCE_EXHAUSTED", True),
    _row(CircuitOpenError, 503, "Service Unavailable", "circuit-open", "UNAVAILABLE", True),
    _row(BulkheadFullError, 503, "Service Unavailable", "bulkhead-full", "UNAVAILABLE", True),
    _row(ThrottledError, 503, "Service Unavailable", "throttled", "UNAVAILABLE", True),
    _row(IdempotencyInProgressError, 409, "Conflict", "idempotency#in-progress", "ABORTED", True),
    _row(
        IdempotencyKeyReusedError,
        422,
        "Unprocessable Content",
        "idempotency#key-reused",
        "FAILED_PRECONDITION",
    ),
    _row(IdempotencyConflictError, 409, "Conflict", "idempotency#conflict", "ABORTED"),
    # a concurrent holder of the same key: a conflict on that resource (not an unavailable
    # service), retried after the holder's remaining lease
    _row(LockHeldError, 409, "Conflict", "lock-held", "ABORTED", True),
    _row(RejectedError, 503, "Service Unavailable", "rejected", "UNAVAILABLE", True),
    _row(TimeoutExceededError, 504, "Gateway Timeout", "timeout", "DEADLINE_EXCEEDED"),
    _row(StoreError, 503, "Service Unavailable", "store-unavailable", "UNAVAILABLE"),
)

#: Resilience errors the adapters do not answer: they propagate like the application's own.
UNMAPPED: tuple[type[ResilienceError], ...] = (
    ConfigurationError,
    IdempotencyOutcomeUnrecordedError,
)


def classify(error: BaseException | type[BaseException]) -> ErrorMapping | None:
    """The table row answering an error (an instance or a class), or ``None`` if unmapped.

    Example:
        >>> import resilience as rs
        >>> classify(rs.TimeoutExceededError("late")).http_status
        504
        >>> classify(rs.ConfigurationError("bug")) is None
        True
    """
    cls = error if isinstance(error, type) else type(error)
    for row in ERROR_TABLE:
        if issubclass(cls, row.error):
            return row
    return None


def retry_delay(row: ErrorMapping, error: BaseException) -> float | None:
    """The delay to send with ``error`` per its row: its ``retry_after``, or ``None``.

    ``None`` when the row sends no delay, or the error carries none (or a non-number, NaN or a
    negative value). Each adapter formats it (``Retry-After`` rounds up to whole seconds,
    ``grpc-retry-pushback-ms`` to milliseconds).

    Example:
        >>> import resilience as rs
        >>> err = rs.CircuitOpenError(retry_after=1.5)
        >>> retry_delay(classify(err), err)
        1.5
        >>> forced = rs.CircuitOpenError(forced=True)
        >>> retry_delay(classify(forced), forced) is None
        True
    """
    if not row.retry_delay:
        return None
    after = getattr(error, "retry_after", None)
    if not isinstance(after, int | float) or isinstance(after, bool):
        return None
    after = float(after)
    if math.isnan(after) or after < 0:
        return None
    return after
