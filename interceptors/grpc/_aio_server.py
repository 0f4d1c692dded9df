"""The asyncio server interceptor (``grpc.aio.server``)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

import resilience as rs
from resilience._clock import Clock, resolve_clock
from resilience._types import Duration
from resilience.idempotency import CURRENT_CALLER, IdempotencyRecords

from .._deadline import DEFAULT_MAX_DEADLINE, check_max_deadline
from ._common import check_pipeline, method_name
from ._server_handlers import ContextProxy, _identity, rejection, unscoped
from ._server_idempotency import (
    _DESERIALIZE_FAILED,
    _KEY,
    REPLAYED_KEY,
    IdempotencyConfig,
    StreamBuffer,
    compose_pipeline,
    enter_scope,
    exit_scope,
    mark_replayed,
    refuse_key,
    stream_fingerprint,
)
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
        token = unscoped()
        try:
            result = await user(request, proxy)
        finally:
            if token is not None:
                CURRENT_CALLER.reset(token)
        failed = proxy.failure(result)
        if failed is not None:
            raise failed
        return result

    return body


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


async def _abort(context: Any, exc: BaseException) -> Any:
    if isinstance(exc, StatusError) and not exc.aborted:
        return exc.response
    code, details, trailing = rejection(exc)
    await context.abort(code, details, trailing)
    return None  # pragma: no cover - abort raises


class AsyncResilienceServerInterceptor(_ServerInterceptor):
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

    Example:
        >>> import resilience as rs
        >>> from interceptors.grpc import AsyncResilienceServerInterceptor
        >>> interceptor = AsyncResilienceServerInterceptor(pipeline=rs.Timeout(5))
    """

    def __init__(
        self,
        *,
        pipeline: rs.Policy | None,
        idempotency: IdempotencyRecords | rs.Policy | None = None,
        idempotency_required: bool = False,
        idempotency_wait: Duration = 0.0,
        scope: Callable[[Any], str | None] | None = None,
        principal: Callable[[Any], str | None] | None = None,
        max_deadline: Duration | None = DEFAULT_MAX_DEADLINE,
        clock: Clock | None = None,
    ) -> None:
        self.pipeline = check_pipeline(pipeline)
        self.max_deadline = check_max_deadline(max_deadline)
        self._idem = IdempotencyConfig(
            idempotency, idempotency_required, idempotency_wait, principal, scope
        )
        self.idempotency = idempotency
        self.idempotency_required = self._idem.required
        self._policy = compose_pipeline(self.pipeline, self._idem.policy)
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
        return policy.wrap(body, operation=method)

    def _wrap(self, handler: Any, method: str) -> Any:
        des, ser = handler.request_deserializer, handler.response_serializer
        records = self._idem.records is not None
        if handler.unary_unary is not None:
            run = self._compose(_unary_body(handler.unary_unary), method)
            if records:
                idem = self._idempotent(run, method, handler, False)
                return grpc.unary_unary_rpc_method_handler(idem, None, None)
            return grpc.unary_unary_rpc_method_handler(self._serve(run, method), des, ser)
        if handler.stream_unary is not None:
            run = self._compose(_unary_body(handler.stream_unary), method)
            if records:
                idem = self._idempotent(run, method, handler, True)
                return grpc.stream_unary_rpc_method_handler(idem, None, None)
            return grpc.stream_unary_rpc_method_handler(self._serve(run, method), des, ser)
        if handler.unary_stream is not None:
            run = self._serve(
                self._compose(_stream_body(handler.unary_stream), method), method, True
            )
            return grpc.unary_stream_rpc_method_handler(run, des, ser)
        run = self._serve(self._compose(_stream_body(handler.stream_stream), method), method, True)
        return grpc.stream_stream_rpc_method_handler(run, des, ser)

    async def _enter(self, context: Any, streaming: bool) -> tuple[Any, Any, Any, Any]:
        idem = self._idem
        if streaming and idem.records is not None:
            tokens = enter_scope(context, self._clock, False, False, None, self.max_deadline)
            error = refuse_key(context)
            if error is not None:
                exit_scope(tokens)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
            return tokens
        tokens = enter_scope(
            context, self._clock, idem.enabled, idem.required, idem.scope_hook, self.max_deadline
        )
        if tokens[3] is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, tokens[3])
        return tokens

    def _serve(
        self, run: Callable[..., Awaitable[Any]], method: str, streaming: bool = False
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        enter = self._enter

        async def resilient_handler(request: Any, context: Any) -> Any:
            tokens = await enter(context, streaming)
            try:
                result = await run(request, _AsyncContextProxy(context, method))
                mark_replayed(context)  # a stream's trailing metadata goes out after its messages
                return result
            except Exception as exc:
                return await _abort(context, exc)
            finally:
                exit_scope(tokens)

        return resilient_handler

    def _idempotent(
        self, run: Callable[..., Awaitable[Any]], method: str, handler: Any, stream_req: bool
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        """A unary-response behaviour over raw bytes, deduplicated by the idempotency records."""
        enter, idem = self._enter, self._idem
        records = idem.records
        assert records is not None
        des = handler.request_deserializer or _identity
        ser = handler.response_serializer or _identity

        async def resilient_idempotent(raw: Any, context: Any) -> Any:
            tokens = await enter(context, False)
            buffer = StreamBuffer(records.buffers)
            try:
                proxy = _AsyncContextProxy(context, method)
                messages = [buffer.take(m) async for m in raw] if stream_req else [bytes(raw)]
                fingerprint = stream_fingerprint(messages) if stream_req else messages[0]
                try:
                    decoded = [des(m) for m in messages]
                except Exception:
                    decoded = None
                if decoded is None:
                    await context.abort(grpc.StatusCode.INTERNAL, _DESERIALIZE_FAILED)
                    return None  # pragma: no cover - abort raises
                request = _replay_stream(decoded) if stream_req else decoded[0]

                async def handle() -> bytes:
                    response = await run(request, proxy)
                    if isinstance(response, str):  # as grpc.aio serializes a str response
                        response = response.encode("utf-8")
                    out: bytes = ser(response)
                    return out

                key = _KEY.get()
                principal = None if key is None else idem.principal_of(context)
                if key is None or principal is None:
                    return await handle()
                out, replayed = await records.arun(
                    principal=principal,
                    method=method,
                    key=key,
                    fingerprint=fingerprint,
                    handler=handle,
                    wait=idem.wait_now(),
                )
                if replayed:
                    context.set_trailing_metadata(((REPLAYED_KEY, "true"),))
                return out
            except Exception as exc:
                buffer.release()  # before the status goes out
                response = await _abort(context, exc)
                return None if response is None else ser(response)
            finally:
                buffer.release()
                exit_scope(tokens)

        return resilient_idempotent
