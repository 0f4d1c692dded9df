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
import types
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from interceptors.errors import ERROR_TABLE, classify, retry_delay
from resilience import retry_after_attribute
from resilience.errors import ConfigurationError

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


if TYPE_CHECKING:
    _Future = grpc.Future[Any]
else:
    _Future = grpc.Future


class StatusError(grpc.RpcError, grpc.Call, _Future):
    """A non-OK gRPC status as an exception: a server handler's ``context.abort`` /
    ``context.set_code``, or one a chaos policy injects.

    Inside a :class:`~interceptors.grpc.ResilienceServerInterceptor` pipeline the handler's
    status is raised as this exception, so a breaker or retry predicate sees it like a client
    sees a ``grpc.RpcError``: ``exc.code()``, ``exc.details()``. The interceptor turns it back
    into the same status on the wire, with ``trailing_metadata`` (e.g. a
    ``grpc-retry-pushback-ms`` for the caller's retries).

    On the client side (``rs.chaos.Fault(error=lambda: StatusError(...))`` in a client
    interceptor's pipeline) it is what a failed call raises on a sync channel: a finished
    ``grpc.Call`` and ``grpc.Future`` with its ``code()``, ``details()``, ``trailing_metadata()``
    (whose pushback any ``Retry`` of the pipeline honours) and ``initial_metadata()``; a
    ``.future()`` call returns it, its ``result()`` raises it.

    Example:
        >>> import grpc
        >>> exc = StatusError(grpc.StatusCode.UNAVAILABLE, "overloaded")
        >>> exc.code(), exc.details()
        (<StatusCode.UNAVAILABLE: (14, 'unavailable')>, 'overloaded')
        >>> shed = StatusError(grpc.StatusCode.UNAVAILABLE, "shed",
        ...                    trailing_metadata=[("grpc-retry-pushback-ms", "250")])
        >>> shed.trailing_metadata(), shed.exception() is shed
        ((('grpc-retry-pushback-ms', '250'),), True)
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str | None = None,
        *,
        aborted: bool = True,
        response: Any = None,
        trailing_metadata: Iterable[tuple[str, str | bytes]] = (),
    ) -> None:
        super().__init__(f"{code.name}: {details or ''}")
        self._code = code
        self._details = details
        self.aborted = aborted
        self.response = response
        trailing = tuple(trailing_metadata)
        items: tuple[object, ...] = trailing
        for item in items:
            if not (
                isinstance(item, tuple)
                and len(item) == 2
                and isinstance(item[0], str)
                and isinstance(item[1], str | bytes)
            ):
                raise ConfigurationError(
                    f"trailing_metadata must be (key, value) pairs, got {trailing_metadata!r}"
                )
        self._trailing: tuple[tuple[str, str | bytes], ...] = trailing

    def code(self) -> grpc.StatusCode:
        """The status code."""
        return self._code

    def details(self) -> Any:  # str | None (grpc.RpcError's, and grpc.Call's str)
        """The status details."""
        return self._details

    def trailing_metadata(self) -> Any:  # tuple[tuple[str, str | bytes], ...]
        """The trailing metadata sent with the status."""
        return self._trailing

    def initial_metadata(self) -> Any:
        """Empty: no response headers came with the status."""
        return ()

    def debug_error_string(self) -> str:
        """The status and its details."""
        return str(self)

    # grpc.Call and grpc.Future: a call that is over, failed with this status
    def is_active(self) -> bool:
        """``False``: the call is over."""
        return False

    def time_remaining(self) -> Any:
        """``None``: the call is over."""
        return None

    def cancel(self) -> bool:
        """``False``: the call is over."""
        return False

    def add_callback(self, callback: Any) -> bool:
        """``False``: the call is over (the callback is not registered)."""
        return False

    def cancelled(self) -> bool:
        """``False``."""
        return False

    def running(self) -> bool:
        """``False``."""
        return False

    def done(self) -> bool:
        """``True``."""
        return True

    def result(self, timeout: float | None = None) -> Any:
        """Raise this error (the call failed)."""
        raise self

    def exception(self, timeout: float | None = None) -> StatusError:
        """This error."""
        return self

    def traceback(self, timeout: float | None = None) -> types.TracebackType | None:
        """This error's traceback."""
        return self.__traceback__

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        """Call ``fn(self)`` now (the future is done)."""
        fn(self)


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
