"""The asyncio server interceptor (``grpc.aio.server``)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

import resilience as rs
from resilience._clock import Clock, resolve_clock

from ._common import check_pipeline, emitter, method_name
from ._server import ContextProxy, compose_pipeline, enter_scope, exit_scope, rejection
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


def _unary_body(user: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def body(request: Any, proxy: ContextProxy) -> Any:
        result = await user(request, proxy)
        failed = proxy.failure(result)
        if failed is not None:
            raise failed
        return result

    return body


def _stream_body(user: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def body(request: Any, proxy: ContextProxy) -> None:
        out = user(request, proxy)
        if inspect.isasyncgen(out):
            write = proxy._ctx.write
            async for message in out:
                await write(message)
        else:
            await out  # a handler writing with context.write
        failed = proxy.failure(None)
        if failed is not None:
            raise failed

    return body


async def _abort(context: Any, exc: BaseException) -> Any:
    if isinstance(exc, StatusError) and not exc.aborted:
        return exc.response
    code, details, trailing = rejection(exc)
    await context.abort(code, details, trailing)
    return None  # pragma: no cover - abort raises


class AsyncResilienceServerInterceptor(_ServerInterceptor):
    """Serve every RPC through a resilience pipeline (``grpc.aio.server``).

    Behaviour as :class:`ResilienceServerInterceptor`, with one difference: streaming
    responses are covered whole. The handler's messages are written with ``context.write``
    inside the pipeline, so a bulkhead slot is held, a ``Timeout`` bounds and the breaker
    records the entire stream.

    Args:
        pipeline: a policy or :class:`resilience.Pipeline` (``None``: only deadline propagation).
        idempotency: hook for an idempotency policy, composed innermost.
        idempotency_required: reject calls without an ``idempotency-key``.
        clock: time source for the published deadline.

    Example:
        >>> import resilience as rs
        >>> from interceptors.grpc import AsyncResilienceServerInterceptor
        >>> interceptor = AsyncResilienceServerInterceptor(pipeline=rs.Timeout(5))
    """

    def __init__(
        self,
        *,
        pipeline: rs.Policy | None,
        idempotency: rs.Policy | None = None,
        idempotency_required: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self.pipeline = check_pipeline(pipeline)
        self.idempotency = check_pipeline(idempotency)
        self.idempotency_required = bool(idempotency_required)
        self._policy = compose_pipeline(self.pipeline, self.idempotency)
        self._clock = resolve_clock(clock)
        self._cache: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        """Wrap the method handler (built once per method and cached)."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        hit = self._cache.get(method)
        if hit is not None and hit[0] is handler:
            return hit[1]
        wrapped = self._wrap(handler, method_name(method))
        self._cache[method] = (handler, wrapped)
        return wrapped

    def _compose(self, body: Callable[..., Any], method: str) -> Callable[..., Any]:
        policy = self._policy
        if policy is None:
            return body
        return policy._compose_async(body, emitter(policy, method))

    def _wrap(self, handler: Any, method: str) -> Any:
        des, ser = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary is not None:
            run = self._serve(self._compose(_unary_body(handler.unary_unary), method))
            return grpc.unary_unary_rpc_method_handler(run, des, ser)
        if handler.stream_unary is not None:
            run = self._serve(self._compose(_unary_body(handler.stream_unary), method))
            return grpc.stream_unary_rpc_method_handler(run, des, ser)
        if handler.unary_stream is not None:
            run = self._serve(self._compose(_stream_body(handler.unary_stream), method))
            return grpc.unary_stream_rpc_method_handler(run, des, ser)
        run = self._serve(self._compose(_stream_body(handler.stream_stream), method))
        return grpc.stream_stream_rpc_method_handler(run, des, ser)

    def _serve(self, run: Callable[..., Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
        clock = self._clock
        idem = self.idempotency is not None
        required = self.idempotency_required

        async def resilient_handler(request: Any, context: Any) -> Any:
            tokens = enter_scope(context, clock, idem, required)
            if tokens[2] is not None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, tokens[2])
            try:
                return await run(request, _AsyncContextProxy(context))
            except Exception as exc:
                return await _abort(context, exc)
            finally:
                exit_scope(tokens)

        return resilient_handler
