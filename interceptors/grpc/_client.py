"""The sync client interceptor: one pipeline around every attempt of every call shape."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import grpc

import resilience as rs

from ._common import (
    END,
    NOTHING,
    AttemptState,
    ClientCore,
    ReplayBuffer,
    attempt_metadata,
    attempt_timeout,
    publish_timeout,
)
from ._injected import InjectedCall, injected_stream

__all__ = ["ResilienceClientInterceptor"]

if TYPE_CHECKING:
    _UnaryUnaryClientInterceptor = grpc.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStreamClientInterceptor = grpc.UnaryStreamClientInterceptor[Any, Any]
    _StreamUnaryClientInterceptor = grpc.StreamUnaryClientInterceptor[Any, Any]
    _StreamStreamClientInterceptor = grpc.StreamStreamClientInterceptor[Any, Any]
    _Future = grpc.Future[Any]
else:
    _UnaryUnaryClientInterceptor = grpc.UnaryUnaryClientInterceptor
    _UnaryStreamClientInterceptor = grpc.UnaryStreamClientInterceptor
    _StreamUnaryClientInterceptor = grpc.StreamUnaryClientInterceptor
    _StreamStreamClientInterceptor = grpc.StreamStreamClientInterceptor
    _Future = grpc.Future


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _CallDetails(_Details, grpc.ClientCallDetails):
    """Concrete ``grpc.ClientCallDetails`` for one attempt."""


class _Attempts(AttemptState):
    """The per-call state the composed attempt function is driven with."""

    __slots__ = ("streaming",)

    def __init__(
        self,
        continuation: Any,
        details: Any,
        request: Any,
        replay: ReplayBuffer | None,
        streaming: bool,
    ) -> None:
        super().__init__(continuation, details, request, replay)
        self.streaming = streaming

    def __resilience_injected__(self, outcome: object) -> object:
        """An injected value as what the call shape's attempt returns: a finished call for a
        unary response, ``(call, first message)`` for a streaming one (see the base class for
        an injected error)."""
        outcome = super().__resilience_injected__(outcome)
        if isinstance(outcome, BaseException | grpc.Call):
            return outcome
        if self.streaming:
            return injected_stream(outcome, END)
        return InjectedCall(outcome)

    def start(self) -> Any:
        """Start the next attempt: the deadline-bounded timeout and the attempt metadata."""
        d = self.details
        n = self.n
        self.n = n + 1
        timeout = attempt_timeout(d.timeout)
        if n == 0 and timeout is d.timeout:
            details = d
        else:
            details = _CallDetails(
                d.method,
                timeout,
                attempt_metadata(d.metadata, n) if n else d.metadata,
                d.credentials,
                d.wait_for_ready,
                getattr(d, "compression", None),
            )
        replay = self.replay
        request = self.request if replay is None else replay.messages()
        return self.continuation(details, request)


def _unary_attempt(state: _Attempts) -> Any:
    outcome = state.start()
    try:
        outcome.result()
    except Exception as exc:
        state.failed(exc)
        raise
    return outcome


def _stream_attempt(state: _Attempts) -> tuple[Any, Any]:
    call = state.start()
    try:
        first = next(call)
    except StopIteration:
        first = END
    except Exception as exc:
        state.failed(exc)
        raise
    return call, first


class _ResponseStream(grpc.Call, _Future):
    """The response iterator handed to the caller of a streaming-response RPC.

    The resilience pipeline runs (in the caller's context at call time) when the stream is first
    used, up to the first response message; after that message the call is committed and later
    errors are raised to the caller without retry.
    """

    def __init__(
        self,
        start: Callable[[], tuple[Any, Any]],
        refused: Callable[[rs.RejectedError], BaseException],
    ) -> None:
        self._start: Callable[[], tuple[Any, Any]] | None = start
        self._refused = refused
        self._call: Any = None
        self._first: Any = NOTHING
        self._error: BaseException | None = None

    def _ensure(self) -> Any:
        start = self._start
        if start is not None:
            self._start = None
            try:
                self._call, self._first = start()
            except Exception as exc:
                error = self._refused(exc) if isinstance(exc, rs.RejectedError) else exc
                self._error = error
                if isinstance(error, grpc.Call):
                    self._call = error
        if self._call is None:
            assert self._error is not None
            raise self._error
        return self._call

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        call = self._ensure() if self._call is None or self._start is not None else self._call
        first = self._first
        if first is not NOTHING:
            self._first = NOTHING
            if first is END:
                raise StopIteration
            return first
        if self._error is not None:
            raise self._error
        return next(call)

    # grpc.Call / grpc.Future, delegated to the current attempt's call
    def is_active(self) -> bool:
        return bool(self._ensure().is_active())

    def time_remaining(self) -> float:
        return float(self._ensure().time_remaining())

    def cancel(self) -> bool:
        if self._start is not None:
            self._start = None
            self._error = grpc.FutureCancelledError()
            return True
        return bool(self._call.cancel()) if self._call is not None else False

    def add_callback(self, callback: Any) -> bool:
        return bool(self._ensure().add_callback(callback))

    def initial_metadata(self) -> Any:
        return self._ensure().initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._ensure().trailing_metadata()

    def code(self) -> Any:
        return self._ensure().code()

    def details(self) -> Any:
        return self._ensure().details()

    def cancelled(self) -> bool:
        return bool(self._ensure().cancelled())

    def running(self) -> bool:
        return bool(self._ensure().running())

    def done(self) -> bool:
        return bool(self._ensure().done())

    def result(self, timeout: float | None = None) -> Any:
        return self._ensure().result(timeout)

    def exception(self, timeout: float | None = None) -> Any:
        return self._ensure().exception(timeout)

    def traceback(self, timeout: float | None = None) -> Any:
        return self._ensure().traceback(timeout)

    def add_done_callback(self, fn: Any) -> None:
        self._ensure().add_done_callback(fn)


class ResilienceClientInterceptor(
    ClientCore,
    _UnaryUnaryClientInterceptor,
    _UnaryStreamClientInterceptor,
    _StreamUnaryClientInterceptor,
    _StreamStreamClientInterceptor,
):
    """Run every attempt of every outgoing RPC through a resilience pipeline (sync channels).

    Use it with ``grpc.intercept_channel(channel, interceptor)``. The ``pipeline`` wraps each
    *attempt*: a :func:`grpc_retry` (or any :class:`resilience.Retry` whose ``on`` predicate
    receives the ``grpc.RpcError``) re-runs it, a circuit breaker / rate limiter / bulkhead gates
    it, and a :class:`resilience.Timeout` bounds it. Events name the RPC method as operation.

    * Deadlines: the caller's ``timeout=`` is the deadline of the whole call (all attempts); each
      attempt is sent with ``timeout = min(caller's timeout, resilience.remaining())``, so a
      ``Timeout`` in the pipeline, or an inbound deadline published by
      :class:`ResilienceServerInterceptor`, bounds the outgoing RPC. A timeout grpcio cannot
      represent (a far-off deadline) is sent as 10**8 s instead of failing at once.
    * Retries carry ``grpc-previous-rpc-attempts`` metadata.
    * Server pushback reaches *any* :class:`resilience.Retry` in the pipeline (not only
      :func:`grpc_retry`): ``grpc-retry-pushback-ms`` is attached to the ``grpc.RpcError`` as
      its delay hint, so a valid value is the exact delay (within the deadline) and a negative
      or unparseable one stops retrying (gRFC A6). A ``retry_after=`` hook of the ``Retry``
      wins.
    * Streaming responses: the pipeline covers the call up to its first response message; once a
      message was delivered the call is committed and never retried. The stream starts when the
      caller first uses it (iteration or any ``grpc.Call`` method).
    * Streaming requests: up to ``replay_limit`` sent messages are remembered so a retry can
      resend them; a longer request stream commits the call (no more retries).
    * Unary calls block in the interceptor, also for ``.future()`` (a retrying future cannot be
      returned before its attempts ran).
    * Policy refusals (an open breaker's ``CircuitOpenError``, ``RateLimitedError``,
      ``BulkheadFullError``: the call was not sent) reach the caller as a
      :class:`ResilienceRpcError`, a ``grpc.RpcError`` with status ``UNAVAILABLE`` and the
      retry delay in ``grpc-retry-pushback-ms``, which is also an instance of the refusal's
      class and carries it as ``resilience_error``; ``native_errors=False`` raises the
      refusal itself. Other policy errors (``TimeoutExceededError``) reach the caller as
      they are; RPC failures as the ``grpc.RpcError``.

    Args:
        pipeline: a policy or :class:`resilience.Pipeline` (``None``: only deadline handling).
        replay_limit: request messages remembered for retrying streaming-request calls.
        clock: time source of the call deadline (the pipeline's policies have their own).
        native_errors: refusals as :class:`ResilienceRpcError` (default) or as raised.
        listeners: receive the events of the pipeline's policies (besides their own
            listeners), with ``operation`` the RPC method.

    Example:
        >>> import grpc, resilience as rs
        >>> from interceptors.grpc import ResilienceClientInterceptor, grpc_retry
        >>> interceptor = ResilienceClientInterceptor(pipeline=rs.Pipeline(
        ...     rs.Timeout(2.0), grpc_retry(codes=[grpc.StatusCode.UNAVAILABLE], attempts=3)))
        >>> channel = grpc.intercept_channel(grpc.insecure_channel("127.0.0.1:1"), interceptor)
        >>> channel.close()
    """

    _attempt_fns = (_unary_attempt, _stream_attempt)

    def _unary(self, continuation: Any, details: Any, request: Any, stream_req: bool) -> Any:
        state = _Attempts(
            continuation,
            details,
            request,
            ReplayBuffer(request, self.replay_limit) if stream_req else None,
            False,
        )
        run = self._composed(details.method, False)
        token = publish_timeout(details.timeout, self._clock)
        try:
            return run(state)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Future):
                return exc  # grpc raises it from .result(), like an uninterceptedcall
            raise
        except rs.RejectedError as exc:
            refused = self.refused(exc)
            if isinstance(refused, grpc.Future):
                return refused  # a ResilienceRpcError: raised from .result(), like grpc's own
            raise
        finally:
            if token is not None:
                rs.reset_deadline(token)

    def _stream(self, continuation: Any, details: Any, request: Any, stream_req: bool) -> Any:
        state = _Attempts(
            continuation,
            details,
            request,
            ReplayBuffer(request, self.replay_limit) if stream_req else None,
            True,
        )
        run = self._composed(details.method, True)
        token = publish_timeout(details.timeout, self._clock)
        try:
            ctx = contextvars.copy_context()
        finally:
            if token is not None:
                rs.reset_deadline(token)
        return _ResponseStream(lambda: ctx.run(run, state), self.refused)

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        """Intercept a unary-unary call."""
        return self._unary(continuation, client_call_details, request, False)

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Intercept a stream-unary call."""
        return self._unary(continuation, client_call_details, request_iterator, True)

    def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        """Intercept a unary-stream call."""
        return self._stream(continuation, client_call_details, request, False)

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Intercept a stream-stream call."""
        return self._stream(continuation, client_call_details, request_iterator, True)
