"""Starlette / FastAPI exception handlers answering resilience errors raised in a route.

A route that calls a guarded backend (an outbound breaker, limiter, bulkhead or timeout) lets
the policy's error escape; these handlers answer it as the middlewares do, from the one table
:data:`interceptors.errors.ERROR_TABLE`: the status, title and problem type of its row as
``application/problem+json``, and ``Retry-After`` (whole seconds, rounded up) when the row
sends a delay and the error carries ``retry_after``.

Starlette and FastAPI are not imported until a handler answers an error, so importing
:mod:`interceptors.asgi` still needs neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from interceptors.errors import ERROR_TABLE, classify, retry_delay
from resilience import refused_by_policy

from ._common import Message, format_retry_after, mark_refused, send_refusal

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection
    from starlette.responses import Response

__all__ = ["HANDLED_ERRORS", "install_exception_handlers", "resilience_exception_handler"]

#: The error classes :func:`install_exception_handlers` registers: one per table row.
HANDLED_ERRORS: tuple[type[Exception], ...] = tuple(row.error for row in ERROR_TABLE)


class _App(Protocol):
    """What :func:`install_exception_handlers` needs: a Starlette or FastAPI application."""

    @property
    def exception_handlers(self) -> Any: ...  # pragma: no cover - protocol

    def add_exception_handler(self, exc_class_or_status_code: Any, handler: Any) -> None: ...


async def resilience_exception_handler(request: HTTPConnection, exc: Exception) -> Response:
    """Answer a resilience error raised by a route: problem+json per the error table.

    Register it for the classes of :data:`HANDLED_ERRORS` (or let
    :func:`install_exception_handlers` do it). A refusal stamped by a policy (see
    :func:`resilience.refused_by_policy`) is also reported through
    :func:`~interceptors.asgi.mark_refused`, so an enclosing
    :class:`~interceptors.asgi.RateLimitMiddleware` refunds the request's permits. An error
    the table does not map (e.g. :class:`resilience.ConfigurationError`, when registered for a
    base class) is re-raised, as is any error of a non-HTTP (websocket) scope.

    Example:
        >>> import asyncio, resilience as rs
        >>> from starlette.requests import Request
        >>> request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
        >>> err = rs.CircuitOpenError(retry_after=2.5)
        >>> response = asyncio.run(resilience_exception_handler(request, err))
        >>> response.status_code, response.headers["retry-after"]
        (503, '3')
        >>> response.headers["content-type"], response.body[:45]
        ('application/problem+json', b'{"type":"urn:resilience:problem:circuit-open"')
    """
    row = classify(exc)
    if row is None or request.scope.get("type") != "http":
        raise exc
    if refused_by_policy(exc):
        mark_refused(request.scope, exc)
    after = format_retry_after(retry_delay(row, exc))
    headers = [(b"retry-after", after)] if after is not None else []
    messages: list[Message] = []

    async def capture(message: Message) -> None:
        messages.append(message)

    # the middlewares' own formatter, so that both answers are byte for byte the same
    await send_refusal(capture, row, detail=str(exc) or None, headers=headers)
    from starlette.responses import Response

    start, body = messages
    response = Response(body["body"], status_code=start["status"])
    response.raw_headers = list(start["headers"])
    return response


def install_exception_handlers(app: _App, *, replace: bool = False) -> None:
    """Register :func:`resilience_exception_handler` on a Starlette or FastAPI ``app``.

    One handler per class of :data:`HANDLED_ERRORS` (``RateLimitedError``,
    ``CircuitOpenError``, ``BulkheadFullError``, the idempotency conflicts, other
    ``RejectedError``\\ s, ``TimeoutExceededError``, ``StoreError``). A class that already has a
    handler keeps it unless ``replace`` is true. Call it before the app serves its first
    request (Starlette builds its middleware stack then).

    Example:
        >>> from starlette.applications import Starlette
        >>> import resilience as rs
        >>> app = Starlette()
        >>> install_exception_handlers(app)
        >>> app.exception_handlers[rs.RateLimitedError] is resilience_exception_handler
        True
    """
    existing = app.exception_handlers
    for error in HANDLED_ERRORS:
        if replace or error not in existing:
            app.add_exception_handler(error, resilience_exception_handler)
