"""The sync server interceptor (idempotency in ``_server_idempotency``, handler bodies in
``_server_handlers``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

import resilience as rs
from resilience._clock import Clock, resolve_clock
from resilience._types import Duration
from resilience.idempotency import CURRENT_CALLER, IdempotencyRecords

from .._deadline import DEFAULT_MAX_DEADLINE, check_max_deadline
from ._common import END, check_pipeline, method_name
from ._server_handlers import ContextProxy, _abort, _identity, _stream_body, _unary_body
from ._server_idempotency import (
    _DESERIALIZE_FAILED,
    _KEY,
    IDEMPOTENCY_KEY,
    REPLAYED_KEY,
    IdempotencyConfig,
    StreamBuffer,
    compose_pipeline,
    default_principal,
    enter_scope,
    exit_scope,
    idempotency_key,
    mark_replayed,
    refuse_key,
    stream_fingerprint,
)
from ._status import StatusError

__all__ = [
    "IDEMPOTENCY_KEY",
    "REPLAYED_KEY",
    "ResilienceServerInterceptor",
    "default_principal",
    "idempotency_key",
]

if TYPE_CHECKING:
    _ServerInterceptor = grpc.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.ServerInterceptor


class ResilienceServerInterceptor(_ServerInterceptor):
    """Serve every RPC through a resilience pipeline (sync ``grpc.server``).

    Pass it in ``grpc.server(executor, interceptors=[...])``. For each RPC it

    * publishes the client's deadline (``context.time_remaining()``) as the handler's deadline,
      so ``resilience.remaining()`` and outbound calls through
      :class:`ResilienceClientInterceptor` see it (deadline propagation). The client chooses
      that deadline, so it is clamped to ``max_deadline`` (5 minutes by default): a
      ``grpc-timeout`` of ``99999999H`` becomes a 5-minute deadline;
    * runs the handler through ``pipeline`` (events name the RPC method as operation);
    * turns policy errors into statuses (see :mod:`interceptors.grpc._status`):
      ``RateLimitedError`` → ``RESOURCE_EXHAUSTED``, ``CircuitOpenError`` /
      ``BulkheadFullError`` → ``UNAVAILABLE``, both with ``grpc-retry-pushback-ms`` from
      ``retry_after``; ``TimeoutExceededError`` → ``DEADLINE_EXCEEDED``;
    * sees failures a handler reports with ``context.abort`` / ``context.set_code`` as well as
      exceptions: inside the pipeline they are raised as :class:`StatusError` (a
      ``grpc.RpcError`` with ``.code()``), so a breaker counts an ``abort(UNAVAILABLE)``.

    Streaming responses: the sync server consumes the handler's iterator after the handler
    returned, so the pipeline covers the handler up to its first response message (admission,
    first-message timeout and outcome); later messages are streamed as they come, still under
    the published deadline. :class:`AsyncResilienceServerInterceptor` covers whole streams.

    Idempotency (``idempotency=rs.IdempotencyRecords(...)``): a unary-response call carrying an
    ``idempotency-key`` metadata entry (1-255 visible ASCII characters) runs at most once per
    ``(principal, method, key)``; the record's fingerprint is the serialized request (for a
    request stream: its messages, buffered, length-prefixed), and the serialized response is
    stored and replayed byte for byte, with ``idempotent-replayed: true`` trailing metadata.
    The check runs *outside* the pipeline: replays are not rate limited or refused by an open
    breaker, and conflicts do not count as breaker failures. Statuses:

    * a duplicate while the first call runs: ``ABORTED`` with ``grpc-retry-pushback-ms`` (or,
      with ``idempotency_wait > 0``, the duplicate waits that long for the stored response);
    * the key reused with a different request: ``FAILED_PRECONDITION`` (the record is kept);
    * a malformed key, or a missing one with ``idempotency_required``: ``INVALID_ARGUMENT``;
    * the store failing (``on_store_error="closed"``): ``UNAVAILABLE``.

    A handler that fails (exception, ``abort``, non-OK ``set_code``) releases the key: a retry
    runs again. Streaming-response methods cannot be replayed: a key sent to one is refused with
    ``INVALID_ARGUMENT``. A serialized response over the records' ``max_response_bytes``
    (1 MiB) is not retained: a duplicate gets ``ABORTED`` ("not retained"), never a replay.
    A request stream is buffered within the records' :class:`~resilience.idempotency.BufferBudget`
    (``max_buffered_bytes``, summed over in-flight calls): a stream larger than the whole budget
    gets ``RESOURCE_EXHAUSTED``, one arriving while the budget is taken ``UNAVAILABLE`` with
    ``grpc-retry-pushback-ms``; nothing more is read.

    Passing a policy as ``idempotency=`` (e.g. ``rs.Idempotent(key=lambda request, context:
    idempotency_key(), ...)``) composes it innermost in the pipeline, with
    :func:`idempotency_key` returning the metadata key while it runs. Its records are scoped to
    the caller too (the policy runs inside :func:`resilience.idempotency.caller_scope` with the
    ``scope=`` principal), a replay carries ``idempotent-replayed: true``, and a caller
    without a principal gets ``idempotency_key() is None`` (no deduplication). The handler
    itself runs outside that scope: idempotent functions it calls keep their own records.
    On a streaming-response method the policy's outcome is the live response iterator (the
    sync server streams after the pipeline returned), which no codec can store: the record is
    *not retained* and a duplicate gets ``ABORTED``, never a replay, so there is no
    ``idempotent-replayed`` marker to send. (Storing "completed" instead would be wrong: when
    the policy records its outcome the rest of the stream has not run and may still fail.
    The aio interceptor covers whole streams and does mark their replays.)

    Scope: by default :func:`default_principal`, the TLS peer identity, else a hash of the
    ``authorization`` metadata (never stored raw), else the peer address. Callers with no
    credentials are therefore scoped by address: anonymous callers behind one address (a
    proxy, a NAT) share one scope, as the IETF draft allows for unauthenticated clients; pass
    ``scope=`` reading your authentication when that is not what you want.

    Args:
        pipeline: a policy or :class:`resilience.Pipeline` (``None``: only deadline propagation).
        idempotency: an :class:`resilience.IdempotencyRecords` (see above), or a policy.
        idempotency_required: reject unary-response calls without an ``idempotency-key``.
        idempotency_wait: seconds a duplicate waits for the first call's response (bounded by
            the call's deadline); default 0: answer ``ABORTED`` at once.
        scope: ``callable(context) -> str | None`` naming the caller the records are scoped
            to (default :func:`default_principal`); a ``None`` result runs the call without
            deduplication.
        principal: the older name of ``scope``.
        max_deadline: the furthest inbound deadline honoured, in seconds (default 300); a
            client asking for more gets this. ``None``: no clamp (outbound adapters still cap
            what they hand to a transport).
        clock: time source for the published deadline.

    Example:
        >>> from concurrent import futures
        >>> import grpc, resilience as rs
        >>> from interceptors.grpc import ResilienceServerInterceptor
        >>> server = grpc.server(futures.ThreadPoolExecutor(2),
        ...     interceptors=[ResilienceServerInterceptor(pipeline=rs.Timeout(5),
        ...                                               idempotency=rs.IdempotencyRecords())])
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

    def _compose(self, body: Callable[..., Any], method: str) -> Callable[..., Any]:
        policy = self._policy
        if policy is None:
            return body
        return policy.wrap(body, operation=method)

    def _wrap(self, handler: Any, method: str) -> Any:
        records = self._idem.records is not None
        if handler.unary_unary is not None:
            run = self._compose(_unary_body(handler.unary_unary), method)
            if records:
                return grpc.unary_unary_rpc_method_handler(
                    self._idempotent(run, method, handler, False), None, None
                )
            return grpc.unary_unary_rpc_method_handler(
                self._unary(run, method), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_unary is not None:
            run = self._compose(_unary_body(handler.stream_unary), method)
            if records:
                return grpc.stream_unary_rpc_method_handler(
                    self._idempotent(run, method, handler, True), None, None
                )
            return grpc.stream_unary_rpc_method_handler(
                self._unary(run, method), handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            stream = self._stream(self._compose(_stream_body(handler.unary_stream), method), method)
            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        stream = self._stream(self._compose(_stream_body(handler.stream_stream), method), method)
        return grpc.stream_stream_rpc_method_handler(
            stream, handler.request_deserializer, handler.response_serializer
        )

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
    def _exit(tokens: tuple[Any, ...]) -> None:
        exit_scope(tokens)

    def _unary(self, run: Callable[..., Any], method: str) -> Callable[[Any, Any], Any]:
        enter, leave = self._enter, self._exit

        def resilient_unary(request: Any, context: Any) -> Any:
            tokens = enter(context)
            try:
                result = run(request, ContextProxy(context, method))
                mark_replayed(context)
                return result
            except Exception as exc:
                return _abort(context, exc)
            finally:
                leave(tokens)

        return resilient_unary

    def _idempotent(
        self, run: Callable[..., Any], method: str, handler: Any, stream_req: bool
    ) -> Callable[[Any, Any], Any]:
        """A unary-response behaviour over raw bytes, deduplicated by the idempotency records."""
        enter, leave, idem = self._enter, self._exit, self._idem
        records = idem.records
        assert records is not None
        des = handler.request_deserializer or _identity
        ser = handler.response_serializer or _identity

        def resilient_idempotent(raw: Any, context: Any) -> Any:
            tokens = enter(context)
            buffer = StreamBuffer(records.buffers)
            try:
                proxy = ContextProxy(context, method)
                messages = [buffer.take(m) for m in raw] if stream_req else [bytes(raw)]
                fingerprint = stream_fingerprint(messages) if stream_req else messages[0]
                try:
                    request = iter([des(m) for m in messages]) if stream_req else des(messages[0])
                except Exception:
                    request = _DESERIALIZE_FAILED
                if request is _DESERIALIZE_FAILED:
                    context.abort(grpc.StatusCode.INTERNAL, _DESERIALIZE_FAILED)
                key = _KEY.get()
                principal = None if key is None else idem.principal_of(context)
                if key is None or principal is None:
                    return ser(run(request, proxy))
                out, replayed = records.run(
                    principal=principal,
                    method=method,
                    key=key,
                    fingerprint=fingerprint,
                    handler=lambda: ser(run(request, proxy)),
                    wait=idem.wait_now(),
                )
                if replayed:
                    context.set_trailing_metadata(((REPLAYED_KEY, "true"),))
                return out
            except Exception as exc:
                buffer.release()  # before the status goes out
                response = _abort(context, exc)
                return None if response is None else ser(response)
            finally:
                buffer.release()
                leave(tokens)

        return resilient_idempotent

    def _stream(self, run: Callable[..., Any], method: str) -> Callable[[Any, Any], Iterator[Any]]:
        enter, leave = self._enter, self._exit

        def resilient_stream(request: Any, context: Any) -> Iterator[Any]:
            tokens = enter(context, True)
            try:
                proxy = ContextProxy(context, method)
                try:
                    it, first = run(request, proxy)
                except Exception as exc:
                    _abort(context, exc)
                    return
                if first is END:
                    return
                if tokens[2] is not None:
                    CURRENT_CALLER.set(None)  # the rest of the stream is the handler's own code
                yield first
                try:
                    yield from it
                except StatusError as exc:
                    _abort(context, exc)
            finally:
                leave(tokens)

        return resilient_stream
