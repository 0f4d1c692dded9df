"""The asyncio server interceptor (``grpc.aio.server``)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from resilience.idempotency import CURRENT_CALLER

from ._server_core import _AsyncServerCore
from ._server_handlers import ContextProxy, aio_serializer, unscoped
from ._status import StatusError

__all__ = ["AsyncResilienceServerInterceptor"]

if TYPE_CHECKING:
    _ServerInterceptor = aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = aio.ServerInterceptor


class _AsyncContextProxy(ContextProxy):
    """The aio flavour: ``abort`` is a coroutine there."""

    __slots__ = ()

    async def abort(  # type: ignore[override]
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> None:
        if trailing_metadata:
            self._ctx.set_trailing_metadata(trailing_metadata)
        raise StatusError(code, details)

    async def abort_with_status(self, status: Any) -> None:  # type: ignore[override]
        await self.abort(status.code, status.details, status.trailing_metadata)


def _stream_body(user: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def body(request: Any, proxy: ContextProxy) -> None:
        token = unscoped()
        try:
            out = user(request, proxy)
            if inspect.isasyncgen(out):
                write = proxy._ctx.write
                async for message in out:
                    await write(message)
            else:
                await out  # a handler writing with context.write
        finally:
            if token is not None:
                CURRENT_CALLER.reset(token)
        failed = proxy.failure(None)
        if failed is not None:
            raise failed

    return body


async def _replay_stream(messages: list[Any]) -> AsyncIterator[Any]:
    for message in messages:
        yield message


class AsyncResilienceServerInterceptor(_AsyncServerCore, _ServerInterceptor):
    """Serve every RPC through a resilience pipeline (``grpc.aio.server``).

    Behaviour as :class:`ResilienceServerInterceptor` (including ``idempotency=``), with one
    difference: streaming responses are covered whole. The handler's messages are written with
    ``context.write`` inside the pipeline, so a bulkhead slot is held, a ``Timeout`` bounds and
    the breaker records the entire stream.

    With an ``idempotency=`` *policy* on a streaming-response method, the policy's outcome is
    the completed stream (its messages were written, not returned), so a duplicate of a
    completed call does not run the handler: it ends ``OK`` with no messages and the trailing
    metadata ``idempotent-replayed: true``, which tells it apart from an empty first run.

    Args:
        pipeline: a policy or :class:`resilience.Pipeline` (``None``: only deadline propagation).
        idempotency: an :class:`resilience.IdempotencyRecords`, or a policy composed innermost.
        idempotency_required: reject unary-response calls without an ``idempotency-key``.
        idempotency_wait: seconds a duplicate waits for the first call's response.
        scope: ``callable(context) -> str | None`` scoping the idempotency records to the
            caller (default :func:`~interceptors.grpc.default_principal`), for both spellings.
        principal: the older name of ``scope``.
        max_deadline: the furthest inbound deadline honoured, in seconds (default 300; ``None``:
            no clamp), as for :class:`~interceptors.grpc.ResilienceServerInterceptor`.
        clock: time source for the published deadline.
        listeners: receive the events of the pipeline's policies (besides their own
            listeners), with ``operation`` the RPC method.

    Example:
        >>> import resilience as rs
        >>> from interceptors.grpc import AsyncResilienceServerInterceptor
        >>> interceptor = AsyncResilienceServerInterceptor(pipeline=rs.Timeout(5))
    """

    _proxy = _AsyncContextProxy

    def _replay(self, messages: list[Any]) -> Any:
        return _replay_stream(messages)

    def _serializer(self, handler: Any) -> Callable[[Any], Any]:
        return aio_serializer(handler)

    @staticmethod
    def _stream_body(user: Callable[..., Any]) -> Callable[..., Any]:
        return _stream_body(user)

    def _streaming(self, run: Callable[..., Any], method: str) -> Callable[[Any, Any], Any]:
        return self._serve(run, method, True)
