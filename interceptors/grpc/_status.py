"""gRPC statuses of resilience errors, and pushback metadata.

A policy error is answered with the status of its row in :data:`interceptors.errors.ERROR_TABLE`,
the table the ASGI middlewares read too (``RateLimitedError`` → ``RESOURCE_EXHAUSTED``,
``CircuitOpenError`` / ``BulkheadFullError`` / ``StoreError`` → ``UNAVAILABLE``,
``IdempotencyInProgressError`` → ``ABORTED``, ``IdempotencyKeyReusedError`` →
``FAILED_PRECONDITION``, ``TimeoutExceededError`` → ``DEADLINE_EXCEEDED``, ...); rows that send
a retry delay put the error's ``retry_after`` in ``grpc-retry-pushback-ms``.

Pushback (gRFC A6): ``grpc-retry-pushback-ms`` holds a signed 32-bit integer; a negative or
unparseable value means "do not retry", a valid one "retry after exactly that delay".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc

from interceptors.errors import ERROR_TABLE, classify, retry_delay
from resilience import retry_after_attribute

__all__ = [
    "PREVIOUS_ATTEMPTS_KEY",
    "PUSHBACK_KEY",
    "StatusError",
    "format_pushback",
    "grpc_retry_after",
    "parse_pushback",
    "pushback_of",
    "retryable",
    "status_for",
]

PUSHBACK_KEY = "grpc-retry-pushback-ms"
PREVIOUS_ATTEMPTS_KEY = "grpc-previous-rpc-attempts"
_INT32_MAX = 2**31 - 1

Code = grpc.StatusCode

#: The gRPC status of each row of the shared table, resolved once (by name: a misspelt name
#: fails at import).
_BY_NAME: dict[str, grpc.StatusCode] = {code.name: code for code in grpc.StatusCode}
_CODES: dict[str, grpc.StatusCode] = {
    row.grpc_status: _BY_NAME[row.grpc_status] for row in ERROR_TABLE
}


class StatusError(grpc.RpcError):
    """A non-OK status a server handler produced with ``context.abort`` / ``context.set_code``.

    Inside a :class:`~interceptors.grpc.ResilienceServerInterceptor` pipeline the handler's
    status is raised as this exception, so a breaker or retry predicate sees it like a client
    sees a ``grpc.RpcError``: ``exc.code()``, ``exc.details()``. The interceptor turns it back
    into the same status on the wire.

    Example:
        >>> import grpc
        >>> exc = StatusError(grpc.StatusCode.UNAVAILABLE, "overloaded")
        >>> exc.code(), exc.details()
        (<StatusCode.UNAVAILABLE: (14, 'unavailable')>, 'overloaded')
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str | None = None,
        *,
        aborted: bool = True,
        response: Any = None,
    ) -> None:
        super().__init__(f"{code.name}: {details or ''}")
        self._code = code
        self._details = details
        self.aborted = aborted
        self.response = response

    def code(self) -> grpc.StatusCode:
        """The status code."""
        return self._code

    def details(self) -> str | None:
        """The status details."""
        return self._details


def format_pushback(seconds: float) -> str:
    """A ``grpc-retry-pushback-ms`` value for a delay in seconds (rounded up, int32-clamped).

    Example:
        >>> format_pushback(1.5), format_pushback(0.0001), format_pushback(1e12)
        ('1500', '1', '2147483647')
    """
    if not math.isfinite(seconds):
        return str(_INT32_MAX)
    ms = max(0, math.ceil(seconds * 1000))
    return str(min(ms, _INT32_MAX))


def parse_pushback(value: object) -> float | None:
    """Seconds to wait per a ``grpc-retry-pushback-ms`` value; ``-1.0`` means "do not retry".

    ``None`` (no value) stays ``None``. Negative, unparseable or out-of-int32 values give
    ``-1.0``, as gRFC A6 requires.

    Example:
        >>> parse_pushback("250"), parse_pushback("-1"), parse_pushback("soon")
        (0.25, -1.0, -1.0)
        >>> parse_pushback(None) is None
        True
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    text = str(value).strip()
    if not text or not (text.isdigit() or (text[0] in "+-" and text[1:].isdigit())):
        return -1.0
    ms = int(text)
    if ms < 0 or ms > _INT32_MAX:
        return -1.0
    return ms / 1000.0


def _metadata_value(metadata: Iterable[Any] | None, key: str) -> object:
    if not metadata:
        return None
    for item in metadata:
        k, v = item[0], item[1]
        if k == key:
            return v
    return None


def pushback_of(error: BaseException) -> float | None:
    """The pushback carried by a ``grpc.RpcError``'s trailing metadata (see :func:`parse_pushback`).

    Example:
        >>> pushback_of(ValueError()) is None
        True
    """
    trailing = getattr(error, "trailing_metadata", None)
    if not callable(trailing):
        return None
    try:
        md = trailing()
    except Exception:
        return None
    return parse_pushback(_metadata_value(md, PUSHBACK_KEY))


def grpc_retry_after(outcome: object) -> float | None:
    """A ``Retry(retry_after=...)`` hook honouring ``grpc-retry-pushback-ms``.

    For a ``grpc.RpcError`` it returns the pushback delay (``-1.0``, "do not retry", for a
    negative or unparseable value), or ``None`` when there is none (use the backoff). For other
    exceptions it falls back to their ``retry_after`` attribute.

    Example:
        >>> grpc_retry_after(ValueError()) is None
        True
    """
    if isinstance(outcome, grpc.RpcError):
        if getattr(outcome, "_resilience_committed", False):
            return -1.0
        return pushback_of(outcome)
    return retry_after_attribute(outcome)


def code_of(error: BaseException) -> grpc.StatusCode | None:
    """The status code of a ``grpc.RpcError`` (``None`` for anything else)."""
    code = getattr(error, "code", None)
    if not isinstance(error, grpc.RpcError) or not callable(code):
        return None
    try:
        value = code()
    except Exception:
        return None
    return value if isinstance(value, grpc.StatusCode) else None


def retryable(
    codes: Sequence[grpc.StatusCode] = (grpc.StatusCode.UNAVAILABLE,),
) -> Callable[[BaseException], bool]:
    """An ``on=`` predicate: a ``grpc.RpcError`` whose status is one of ``codes``.

    Errors of a call that can no longer be retried (a streamed request that outgrew the replay
    buffer) never match.

    Example:
        >>> import grpc
        >>> on = retryable([grpc.StatusCode.UNAVAILABLE])
        >>> on(StatusError(grpc.StatusCode.UNAVAILABLE)), on(StatusError(grpc.StatusCode.NOT_FOUND))
        (True, False)
    """
    wanted = frozenset(codes)

    def grpc_status_in(exc: BaseException) -> bool:
        if getattr(exc, "_resilience_committed", False):
            return False
        return code_of(exc) in wanted

    return grpc_status_in


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, tuple[tuple[str, str], ...]] | None:
    """The status and trailing metadata for an error a policy raised, or ``None`` if unmapped.

    Example:
        >>> import resilience as rs
        >>> code, trailing = status_for(rs.RateLimitedError(retry_after=0.2))
        >>> code.name, trailing
        ('RESOURCE_EXHAUSTED', (('grpc-retry-pushback-ms', '200'),))
        >>> status_for(KeyError()) is None
        True
    """
    row = classify(exc)
    if row is None:
        return None
    code = _CODES[row.grpc_status]
    after = retry_delay(row, exc)
    if after is None:
        return code, ()
    return code, ((PUSHBACK_KEY, format_pushback(after)),)
