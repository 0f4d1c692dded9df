"""Running a gRPC handler inside a policy: the context proxy, the sync stream body, the status
of a rejection, and how each server serializes a response it stores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from resilience.idempotency import CURRENT_CALLER

from ._common import END
from ._status import StatusError, status_for

__all__ = ["ContextProxy", "aio_serializer", "rejection", "sync_serializer", "unscoped"]


class ContextProxy:
    """Passes a ``ServicerContext`` through, but raises a failed status inside the pipeline.

    ``abort`` / ``abort_with_status`` raise :class:`StatusError` (the interceptor aborts the
    real RPC with the same status once the pipeline saw the failure); ``set_code`` is recorded so
    a handler that returns after setting a non-OK code counts as a failure too.
    """

    __slots__ = ("_code", "_ctx", "_details", "_method")

    def __init__(self, context: Any, method: str = "") -> None:
        self._ctx = context
        self._method = method
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise StatusError(code, details)

    def abort_with_status(self, status: Any) -> None:
        if status.trailing_metadata:
            self._ctx.set_trailing_metadata(status.trailing_metadata)
        raise StatusError(status.code, status.details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code
        self._ctx.set_code(code)

    def set_details(self, details: str) -> None:
        self._details = details
        self._ctx.set_details(details)

    def failure(self, result: Any) -> StatusError | None:
        """The status a handler set with ``set_code`` (when not OK), as an exception."""
        code = self._code
        if code is None or code is grpc.StatusCode.OK:
            return None
        return StatusError(code, self._details, aborted=False, response=result)


def rejection(
    exc: BaseException,
) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str | bytes], ...]]:
    """What to abort with for an exception the pipeline raised, or re-raise it."""
    if isinstance(exc, StatusError):
        return exc.code(), exc.details() or "", exc.trailing_metadata()
    mapped = status_for(exc)
    if mapped is None:
        raise exc
    return mapped[0], str(exc), mapped[1]


def unscoped() -> Any:
    """Leave the caller's idempotency scope for the handler itself (a reset token or None).

    The scope is for the interceptor's ``idempotency=`` policy only: idempotent functions the
    handler calls keep their own (cross-caller) records.
    """
    return None if CURRENT_CALLER.get() is None else CURRENT_CALLER.set(None)


def _stream_body(user: Callable[..., Any]) -> Callable[[Any, ContextProxy], Any]:
    def body(request: Any, proxy: ContextProxy) -> Any:
        token = unscoped()
        try:
            it = iter(user(request, proxy))
            try:
                first = next(it)
            except StopIteration:
                first = END
        finally:
            if token is not None:
                CURRENT_CALLER.reset(token)
        failed = proxy.failure(None)
        if failed is not None:
            raise failed
        return it, first

    return body


def _identity(value: Any) -> Any:
    return value


def _encode_str(response: Any) -> Any:
    return response.encode("utf-8") if isinstance(response, str) else response


def sync_serializer(handler: Any) -> Callable[[Any], Any]:
    """How the sync interceptor serializes a response it stores and sends as bytes (the
    idempotency records): the method's serializer, as grpc's sync server applies it; without
    one a ``str`` response is UTF-8 encoded, as ``grpc.aio`` does (grpc's sync server cannot
    send a ``str``: the call would stall until its deadline)."""
    serializer: Callable[[Any], Any] | None = handler.response_serializer
    return serializer or _encode_str


def aio_serializer(handler: Any) -> Callable[[Any], Any]:
    """``grpc.aio``'s own rule: a ``str`` response is UTF-8 encoded, then the method's
    serializer (if any) applies."""
    serializer: Callable[[Any], Any] | None = handler.response_serializer
    if serializer is None:
        return _encode_str

    def serialize(response: Any) -> Any:
        return serializer(_encode_str(response))

    return serialize
