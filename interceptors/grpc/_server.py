"""The sync server interceptor, and the helpers the aio one shares with it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import grpc

import resilience as rs
from resilience._clock import Clock, resolve_clock
from resilience._deadline import _DEADLINE, tighter

from ._common import END, check_pipeline, emitter, method_name
from ._status import StatusError, status_for

__all__ = ["IDEMPOTENCY_KEY", "ResilienceServerInterceptor", "idempotency_key"]

if TYPE_CHECKING:
    _ServerInterceptor = grpc.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.ServerInterceptor

#: Metadata carrying the client's idempotency key.
IDEMPOTENCY_KEY = "idempotency-key"
_KEY: ContextVar[str | None] = ContextVar("resilience_grpc_idempotency_key", default=None)
_NO_DEADLINE = 1e9  # grpc reports ~9.2e18 s remaining when the client set no deadline


def idempotency_key() -> str | None:
    """The ``idempotency-key`` metadata of the RPC being served (for an idempotency ``key=``).

    Example:
        >>> idempotency_key() is None
        True
    """
    return _KEY.get()


def valid_key(value: object) -> str | None:
    """An idempotency key if ``value`` is 1-255 visible ASCII characters, else ``None``."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or not 1 <= len(value) <= 255:
        return None
    if not all("\x21" <= ch <= "\x7e" for ch in value):
        return None
    return value


def compose_pipeline(pipeline: rs.Policy | None, idempotency: rs.Policy | None) -> rs.Policy | None:
    """The server policy: the pipeline, then the idempotency hook innermost."""
    if idempotency is None:
        return pipeline
    if pipeline is None:
        return idempotency
    return rs.Pipeline(pipeline, idempotency, name=pipeline.name)


def deadline_token(context: Any, clock: Clock) -> Any:
    """Publish the inbound deadline (``context.time_remaining()``); a reset token or ``None``."""
    left = context.time_remaining()
    if left is None or left > _NO_DEADLINE:
        return None
    return _DEADLINE.set(tighter(clock.monotonic() + max(0.0, left), clock))


def key_check(context: Any, required: bool) -> tuple[str | None, str | None]:
    """(key, error message) from the ``idempotency-key`` metadata."""
    raw = None
    count = 0
    for k, v in context.invocation_metadata() or ():
        if k == IDEMPOTENCY_KEY:
            raw = v
            count += 1
    if count == 0:
        return None, ("missing idempotency-key metadata" if required else None)
    key = valid_key(raw) if count == 1 else None
    if key is None:
        return None, "idempotency-key must be one value of 1-255 visible ASCII characters"
    return key, None


def enter_scope(
    context: Any, clock: Clock, idempotency: bool, required: bool
) -> tuple[Any, Any, str | None]:
    """Publish the deadline and the idempotency key: (tokens..., error message or None)."""
    dl = deadline_token(context, clock)
    if not idempotency:
        return dl, None, None
    key, error = key_check(context, required)
    if error is not None:
        if dl is not None:
            _DEADLINE.reset(dl)
        return None, None, error
    return dl, _KEY.set(key), None


def exit_scope(tokens: tuple[Any, ...]) -> None:
    """Undo :func:`enter_scope` (tolerating a generator closed in another context)."""
    try:
        if tokens[1] is not None:
            _KEY.reset(tokens[1])
        if tokens[0] is not None:
            _DEADLINE.reset(tokens[0])
    except ValueError:  # pragma: no cover - closed by the garbage collector elsewhere
        pass


class ContextProxy:
    """Passes a ``ServicerContext`` through, but raises a failed status inside the pipeline.

    ``abort`` / ``abort_with_status`` raise :class:`StatusError` (the interceptor aborts the
    real RPC with the same status once the pipeline saw the failure); ``set_code`` is recorded so
    a handler that returns after setting a non-OK code counts as a failure too.
    """

    __slots__ = ("_code", "_ctx", "_details")

    def __init__(self, context: Any) -> None:
        self._ctx = context
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


def rejection(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """What to abort with for an exception the pipeline raised, or re-raise it."""
    if isinstance(exc, StatusError):
        return exc.code(), exc.details() or "", ()
    mapped = status_for(exc)
    if mapped is None:
        raise exc
    return mapped[0], str(exc), mapped[1]


# -- sync -------------------------------------------------------------------------------------
def _unary_body(user: Callable[..., Any]) -> Callable[[Any, ContextProxy], Any]:
    def body(request: Any, proxy: ContextProxy) -> Any:
        result = user(request, proxy)
        failed = proxy.failure(result)
        if failed is not None:
            raise failed
        return result

    return body


def _stream_body(user: Callable[..., Any]) -> Callable[[Any, ContextProxy], Any]:
    def body(request: Any, proxy: ContextProxy) -> Any:
        it = iter(user(request, proxy))
        try:
            first = next(it)
        except StopIteration:
            first = END
        failed = proxy.failure(None)
        if failed is not None:
            raise failed
        return it, first

    return body


def _abort(context: Any, exc: BaseException) -> Any:
    if isinstance(exc, StatusError) and not exc.aborted:
        return exc.response  # the handler set the code itself and returned
    code, details, trailing = rejection(exc)
    if trailing:
        context.set_trailing_metadata(trailing)
    context.abort(code, details)
    return None  # pragma: no cover - abort raises


class ResilienceServerInterceptor(_ServerInterceptor):
    """Serve every RPC through a resilience pipeline (sync ``grpc.server``).

    Pass it in ``grpc.server(executor, interceptors=[...])``. For each RPC it

    * publishes the client's deadline (``context.time_remaining()``) as the handler's deadline,
      so ``resilience.remaining()`` and outbound calls through
      :class:`ResilienceClientInterceptor` see it (deadline propagation);
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

    Args:
        pipeline: a policy or :class:`resilience.Pipeline` (``None``: only deadline propagation).
        idempotency: hook for an idempotency policy, composed innermost; while it runs,
            :func:`idempotency_key` returns the ``idempotency-key`` metadata. A malformed key
            (or a missing one with ``idempotency_required``) is ``INVALID_ARGUMENT``.
        idempotency_required: reject calls without an ``idempotency-key``.
        clock: time source for the published deadline.

    Example:
        >>> from concurrent import futures
        >>> import grpc, resilience as rs
        >>> from interceptors.grpc import ResilienceServerInterceptor
        >>> server = grpc.server(futures.ThreadPoolExecutor(2),
        ...     interceptors=[ResilienceServerInterceptor(pipeline=rs.Timeout(5))])
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
        return policy._compose_sync(body, emitter(policy, method))

    def _wrap(self, handler: Any, method: str) -> Any:
        if handler.unary_unary is not None:
            unary = self._unary(self._compose(_unary_body(handler.unary_unary), method))
            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_unary is not None:
            unary = self._unary(self._compose(_unary_body(handler.stream_unary), method))
            return grpc.stream_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            stream = self._stream(self._compose(_stream_body(handler.unary_stream), method))
            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        stream = self._stream(self._compose(_stream_body(handler.stream_stream), method))
        return grpc.stream_stream_rpc_method_handler(
            stream, handler.request_deserializer, handler.response_serializer
        )

    def _enter(self, context: Any) -> tuple[Any, Any, Any]:
        """Publish the deadline and the idempotency key; returns reset tokens."""
        tokens = enter_scope(
            context, self._clock, self.idempotency is not None, self.idempotency_required
        )
        if tokens[2] is not None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, tokens[2])
        return tokens

    @staticmethod
    def _exit(tokens: tuple[Any, ...]) -> None:
        exit_scope(tokens)

    def _unary(self, run: Callable[..., Any]) -> Callable[[Any, Any], Any]:
        enter, leave = self._enter, self._exit

        def resilient_unary(request: Any, context: Any) -> Any:
            tokens = enter(context)
            try:
                return run(request, ContextProxy(context))
            except Exception as exc:
                return _abort(context, exc)
            finally:
                leave(tokens)

        return resilient_unary

    def _stream(self, run: Callable[..., Any]) -> Callable[[Any, Any], Iterator[Any]]:
        enter, leave = self._enter, self._exit

        def resilient_stream(request: Any, context: Any) -> Iterator[Any]:
            tokens = enter(context)
            try:
                proxy = ContextProxy(context)
                try:
                    it, first = run(request, proxy)
                except Exception as exc:
                    _abort(context, exc)
                    return
                if first is END:
                    return
                yield first
                try:
                    yield from it
                except StatusError as exc:
                    _abort(context, exc)
            finally:
                leave(tokens)

        return resilient_stream
