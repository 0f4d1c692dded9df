"""What the sync and aio server interceptors share, written once.

``_AsyncServerCore`` (the ``grpc.aio`` interceptor's base) is the source; ``_ServerCore`` (the
sync interceptor's base) is generated from it by ``scripts/twins.py``. Each interceptor adds
what its server really does differently: how streaming responses are run, the
context proxy handed to the handler, how a replayed request stream is presented, and how a
response is serialized (:func:`~._server_handlers.sync_serializer` /
:func:`~._server_handlers.aio_serializer`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

import resilience as rs
from resilience._clock import Clock, resolve_clock
from resilience._types import Duration, check_listeners
from resilience.errors import IdempotencyInProgressError
from resilience.events import Listener
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


# twin: async _AsyncServerCore=_ServerCore, arun=run
class _AsyncServerCore:
    """Configuration, the handler cache, deadline and idempotency scope, unary handlers,
    idempotency replay and aborts (each interceptor adds its per-server hooks)."""

    #: The context proxy handed to the handler inside the pipeline.
    _proxy: type[ContextProxy] = ContextProxy

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
        listeners: Sequence[Listener] = (),
    ) -> None:
        self.pipeline = check_pipeline(pipeline)
        self.listeners = check_listeners(listeners)
        self.max_deadline = check_max_deadline(max_deadline)
        self._idem = IdempotencyConfig(
            idempotency, idempotency_required, idempotency_wait, principal, scope
        )
        self.idempotency = idempotency
        self.idempotency_required = self._idem.required
        self._policy = compose_pipeline(self.pipeline, self._idem.policy)
        self._clock = resolve_clock(clock)
        self._cache: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
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

    def _wrap(self, handler: Any, method: str) -> Any:
        """The method handler running ``handler`` through the pipeline, for its call shape."""
        if handler.unary_unary is not None or handler.stream_unary is not None:
            stream_req = handler.unary_unary is None
            if stream_req:
                user, make = handler.stream_unary, grpc.stream_unary_rpc_method_handler
            else:
                user, make = handler.unary_unary, grpc.unary_unary_rpc_method_handler
            run = self._compose(self._unary_body(user), method)
            if self._idem.records is not None:
                return make(self._idempotent(run, method, handler, stream_req), None, None)
            behaviour = self._serve(run, method)
        else:
            if handler.unary_stream is not None:
                user, make = handler.unary_stream, grpc.unary_stream_rpc_method_handler
            else:
                user, make = handler.stream_stream, grpc.stream_stream_rpc_method_handler
            behaviour = self._streaming(self._compose(self._stream_body(user), method), method)
        return make(behaviour, handler.request_deserializer, handler.response_serializer)

    @staticmethod
    def _stream_body(user: Callable[..., Any]) -> Callable[..., Any]:
        raise NotImplementedError  # the handler of a streaming-response method, in the pipeline

    def _streaming(self, run: Callable[..., Any], method: str) -> Callable[[Any, Any], Any]:
        raise NotImplementedError  # the RPC behaviour of a streaming-response method

    def _replay(self, messages: list[Any]) -> Any:
        raise NotImplementedError  # a request stream re-presented to the handler

    def _serializer(self, handler: Any) -> Callable[[Any], Any]:
        raise NotImplementedError  # how this server turns a response into bytes

    def _compose(self, body: Callable[..., Any], method: str) -> Callable[..., Any]:
        policy = self._policy
        if policy is None:
            return body
        return policy.wrap(body, operation=method, listeners=self.listeners)

    @staticmethod
    def _unary_body(user: Callable[..., Any]) -> Callable[..., Any]:
        """The handler of a unary-response method, as the pipeline runs it."""

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

    async def _enter(self, context: Any, streaming: bool = False) -> tuple[Any, Any, Any, Any]:
        """Publish the deadline, the idempotency key and the caller; returns reset tokens."""
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

    @staticmethod
    async def _reject(context: Any, exc: BaseException) -> Any:
        """Abort the RPC with the status of ``exc`` (trailers included), or re-raise it; a
        handler that set a non-OK code itself and returned gets its response back."""
        if isinstance(exc, StatusError) and not exc.aborted:
            return exc.response
        code, details, trailing = rejection(exc)
        if trailing:
            context.set_trailing_metadata(trailing)
        await context.abort(code, details)
        return None  # pragma: no cover - abort raises

    def _serve(
        self, run: Callable[..., Any], method: str, streaming: bool = False
    ) -> Callable[[Any, Any], Any]:
        """The RPC behaviour around ``run`` (the composed handler body)."""
        enter, reject, proxy_of = self._enter, self._reject, self._proxy

        async def resilient_handler(request: Any, context: Any) -> Any:
            tokens = await enter(context, streaming)
            try:
                result = await run(request, proxy_of(context, method))
                mark_replayed(context)  # a stream's trailing metadata goes out after its messages
                return result
            except Exception as exc:
                return await reject(context, exc)
            finally:
                exit_scope(tokens)

        return resilient_handler

    def _idempotent(
        self, run: Callable[..., Any], method: str, handler: Any, stream_req: bool
    ) -> Callable[[Any, Any], Any]:
        """A unary-response behaviour over raw bytes, deduplicated by the idempotency records."""
        enter, reject, proxy_of, replay = self._enter, self._reject, self._proxy, self._replay
        idem = self._idem
        records = idem.records
        assert records is not None
        monotonic, hints = records.clock.monotonic, idem.durations
        des = handler.request_deserializer or _identity
        ser = self._serializer(handler)

        async def resilient_idempotent(raw: Any, context: Any) -> Any:
            tokens = await enter(context)
            buffer = StreamBuffer(records.buffers)
            try:
                proxy = proxy_of(context, method)
                messages = [buffer.take(m) async for m in raw] if stream_req else [bytes(raw)]
                fingerprint = stream_fingerprint(messages) if stream_req else messages[0]
                try:
                    request = replay([des(m) for m in messages]) if stream_req else des(messages[0])
                except Exception:
                    request = _DESERIALIZE_FAILED
                if request is _DESERIALIZE_FAILED:
                    await context.abort(grpc.StatusCode.INTERNAL, _DESERIALIZE_FAILED)
                key = _KEY.get()
                principal = None if key is None else idem.principal_of(context)
                if key is None or principal is None:
                    return ser(await run(request, proxy))

                started = -1.0

                async def handle() -> Any:
                    nonlocal started
                    started = monotonic()
                    try:
                        return ser(await run(request, proxy))
                    finally:
                        hints.observe(method, monotonic() - started)

                try:
                    out, replayed = await records.arun(
                        principal=principal,
                        method=method,
                        key=key,
                        fingerprint=fingerprint,
                        handler=handle,
                        wait=idem.wait_now(),
                    )
                except IdempotencyInProgressError as exc:
                    if started < 0:  # the records' refusal, not the handler's own error
                        exc.retry_after = hints.hint(method, exc.retry_after)
                    raise
                if replayed:
                    context.set_trailing_metadata(((REPLAYED_KEY, "true"),))
                return out
            except Exception as exc:
                buffer.release()  # before the status goes out
                response = await reject(context, exc)
                return None if response is None else ser(response)
            finally:
                buffer.release()
                exit_scope(tokens)

        return resilient_idempotent


# twin: end
# twin: sync (generated from the block above by scripts/twins.py; do not edit)
class _ServerCore:
    """Configuration, the handler cache, deadline and idempotency scope, unary handlers,
    idempotency replay and aborts (each interceptor adds its per-server hooks)."""

    #: The context proxy handed to the handler inside the pipeline.
    _proxy: type[ContextProxy] = ContextProxy

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
        listeners: Sequence[Listener] = (),
    ) -> None:
        self.pipeline = check_pipeline(pipeline)
        self.listeners = check_listeners(listeners)
        self.max_deadline = check_max_deadline(max_deadline)
        self._idem = IdempotencyConfig(
            idempotency, idempotency_required, idempotency_wait, principal, scope
        )
        self.idempotency = idempotency
        self.idempotency_required = self._idem.required
        self._policy = compose_pipeline(self.pipeline, self._idem.policy)
        self._clock = resolve_clock(clock)
        self._cache: dict[str, tuple[Any, Any]] = {}

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        """Wrap the method handler (built once per method and cached)."""
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        hit = self._cache.get(method)
        if hit is not None and hit[0] is handler:
            return hit[1]
        wrapped = self._wrap(handler, method_name(method))
        self._cache[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: Any, method: str) -> Any:
        """The method handler running ``handler`` through the pipeline, for its call shape."""
        if handler.unary_unary is not None or handler.stream_unary is not None:
            stream_req = handler.unary_unary is None
            if stream_req:
                user, make = handler.stream_unary, grpc.stream_unary_rpc_method_handler
            else:
                user, make = handler.unary_unary, grpc.unary_unary_rpc_method_handler
            run = self._compose(self._unary_body(user), method)
            if self._idem.records is not None:
                return make(self._idempotent(run, method, handler, stream_req), None, None)
            behaviour = self._serve(run, method)
        else:
            if handler.unary_stream is not None:
                user, make = handler.unary_stream, grpc.unary_stream_rpc_method_handler
            else:
                user, make = handler.stream_stream, grpc.stream_stream_rpc_method_handler
            behaviour = self._streaming(self._compose(self._stream_body(user), method), method)
        return make(behaviour, handler.request_deserializer, handler.response_serializer)

    @staticmethod
    def _stream_body(user: Callable[..., Any]) -> Callable[..., Any]:
        raise NotImplementedError  # the handler of a streaming-response method, in the pipeline

    def _streaming(self, run: Callable[..., Any], method: str) -> Callable[[Any, Any], Any]:
        raise NotImplementedError  # the RPC behaviour of a streaming-response method

    def _replay(self, messages: list[Any]) -> Any:
        raise NotImplementedError  # a request stream re-presented to the handler

    def _serializer(self, handler: Any) -> Callable[[Any], Any]:
        raise NotImplementedError  # how this server turns a response into bytes

    def _compose(self, body: Callable[..., Any], method: str) -> Callable[..., Any]:
        policy = self._policy
        if policy is None:
            return body
        return policy.wrap(body, operation=method, listeners=self.listeners)

    @staticmethod
    def _unary_body(user: Callable[..., Any]) -> Callable[..., Any]:
        """The handler of a unary-response method, as the pipeline runs it."""

        def body(request: Any, proxy: ContextProxy) -> Any:
            token = unscoped()
            try:
                result = user(request, proxy)
            finally:
                if token is not None:
                    CURRENT_CALLER.reset(token)
            failed = proxy.failure(result)
            if failed is not None:
                raise failed
            return result

        return body

    def _enter(self, context: Any, streaming: bool = False) -> tuple[Any, Any, Any, Any]:
        """Publish the deadline, the idempotency key and the caller; returns reset tokens."""
        idem = self._idem
        if streaming and idem.records is not None:
            tokens = enter_scope(context, self._clock, False, False, None, self.max_deadline)
            error = refuse_key(context)
            if error is not None:
                exit_scope(tokens)
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
            return tokens
        tokens = enter_scope(
            context, self._clock, idem.enabled, idem.required, idem.scope_hook, self.max_deadline
        )
        if tokens[3] is not None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, tokens[3])
        return tokens

    @staticmethod
    def _reject(context: Any, exc: BaseException) -> Any:
        """Abort the RPC with the status of ``exc`` (trailers included), or re-raise it; a
        handler that set a non-OK code itself and returned gets its response back."""
        if isinstance(exc, StatusError) and not exc.aborted:
            return exc.response
        code, details, trailing = rejection(exc)
        if trailing:
            context.set_trailing_metadata(trailing)
        context.abort(code, details)
        return None  # pragma: no cover - abort raises

    def _serve(
        self, run: Callable[..., Any], method: str, streaming: bool = False
    ) -> Callable[[Any, Any], Any]:
        """The RPC behaviour around ``run`` (the composed handler body)."""
        enter, reject, proxy_of = self._enter, self._reject, self._proxy

        def resilient_handler(request: Any, context: Any) -> Any:
            tokens = enter(context, streaming)
            try:
                result = run(request, proxy_of(context, method))
                mark_replayed(context)  # a stream's trailing metadata goes out after its messages
                return result
            except Exception as exc:
                return reject(context, exc)
            finally:
                exit_scope(tokens)

        return resilient_handler

    def _idempotent(
        self, run: Callable[..., Any], method: str, handler: Any, stream_req: bool
    ) -> Callable[[Any, Any], Any]:
        """A unary-response behaviour over raw bytes, deduplicated by the idempotency records."""
        enter, reject, proxy_of, replay = self._enter, self._reject, self._proxy, self._replay
        idem = self._idem
        records = idem.records
        assert records is not None
        monotonic, hints = records.clock.monotonic, idem.durations
        des = handler.request_deserializer or _identity
        ser = self._serializer(handler)

        def resilient_idempotent(raw: Any, context: Any) -> Any:
            tokens = enter(context)
            buffer = StreamBuffer(records.buffers)
            try:
                proxy = proxy_of(context, method)
                messages = [buffer.take(m) for m in raw] if stream_req else [bytes(raw)]
                fingerprint = stream_fingerprint(messages) if stream_req else messages[0]
                try:
                    request = replay([des(m) for m in messages]) if stream_req else des(messages[0])
                except Exception:
                    request = _DESERIALIZE_FAILED
                if request is _DESERIALIZE_FAILED:
                    context.abort(grpc.StatusCode.INTERNAL, _DESERIALIZE_FAILED)
                key = _KEY.get()
                principal = None if key is None else idem.principal_of(context)
                if key is None or principal is None:
                    return ser(run(request, proxy))

                started = -1.0

                def handle() -> Any:
                    nonlocal started
                    started = monotonic()
                    try:
                        return ser(run(request, proxy))
                    finally:
                        hints.observe(method, monotonic() - started)

                try:
                    out, replayed = records.run(
                        principal=principal,
                        method=method,
                        key=key,
                        fingerprint=fingerprint,
                        handler=handle,
                        wait=idem.wait_now(),
                    )
                except IdempotencyInProgressError as exc:
                    if started < 0:  # the records' refusal, not the handler's own error
                        exc.retry_after = hints.hint(method, exc.retry_after)
                    raise
                if replayed:
                    context.set_trailing_metadata(((REPLAYED_KEY, "true"),))
                return out
            except Exception as exc:
                buffer.release()  # before the status goes out
                response = reject(context, exc)
                return None if response is None else ser(response)
            finally:
                buffer.release()
                exit_scope(tokens)

        return resilient_idempotent


# twin: end
