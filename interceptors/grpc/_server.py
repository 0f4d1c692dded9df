"""The sync server interceptor (what it shares with the aio one in ``_server_core``,
idempotency in ``_server_idempotency``, handler bodies in ``_server_handlers``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from resilience.idempotency import CURRENT_CALLER

from ._common import END
from ._server_core import _ServerCore
from ._server_handlers import ContextProxy, _stream_body, sync_serializer
from ._server_idempotency import (
    IDEMPOTENCY_KEY,
    REPLAYED_KEY,
    default_principal,
    exit_scope,
    idempotency_key,
)

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


class ResilienceServerInterceptor(_ServerCore, _ServerInterceptor):
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
    the published deadline (an error raised later still gets its status).
    :class:`AsyncResilienceServerInterceptor` covers whole streams.

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
        listeners: receive the events of the pipeline's policies (besides their own
            listeners), with ``operation`` the RPC method.

    Example:
        >>> from concurrent import futures
        >>> import grpc, resilience as rs
        >>> from interceptors.grpc import ResilienceServerInterceptor
        >>> server = grpc.server(futures.ThreadPoolExecutor(2),
        ...     interceptors=[ResilienceServerInterceptor(pipeline=rs.Timeout(5),
        ...                                               idempotency=rs.IdempotencyRecords())])
    """

    _proxy = ContextProxy

    def _replay(self, messages: list[Any]) -> Any:
        return iter(messages)

    def _serializer(self, handler: Any) -> Callable[[Any], Any]:
        return sync_serializer(handler)

    @staticmethod
    def _stream_body(user: Callable[..., Any]) -> Callable[..., Any]:
        return _stream_body(user)

    def _streaming(self, run: Callable[..., Any], method: str) -> Callable[[Any, Any], Any]:
        return self._stream(run, method)

    def _stream(self, run: Callable[..., Any], method: str) -> Callable[[Any, Any], Iterator[Any]]:
        """A streaming-response behaviour: the pipeline covers the handler up to its first
        message; the rest is streamed after it, still under the published deadline."""
        enter, reject = self._enter, self._reject

        def resilient_stream(request: Any, context: Any) -> Iterator[Any]:
            tokens = enter(context, True)
            try:
                proxy = ContextProxy(context, method)
                try:
                    it, first = run(request, proxy)
                except Exception as exc:
                    reject(context, exc)
                    return
                if first is END:
                    return
                if tokens[2] is not None:
                    CURRENT_CALLER.set(None)  # the rest of the stream is the handler's own code
                yield first
                try:
                    yield from it
                except Exception as exc:  # its status, as inside the pipeline (or re-raised)
                    reject(context, exc)
            finally:
                exit_scope(tokens)

        return resilient_stream
