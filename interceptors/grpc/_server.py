"""The sync server interceptor, and the helpers the aio one shares with it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import grpc

import resilience as rs
from resilience._clock import Clock, resolve_clock
from resilience._deadline import (
    _DEADLINE,
    DEFAULT_MAX_DEADLINE,
    check_max_deadline,
    clamp_inbound,
    tighter,
)
from resilience._types import Duration, seconds
from resilience.errors import ConfigurationError, RejectedError
from resilience.idempotency import _CALLER, BufferBudget, CallerScope, IdempotencyRecords

from ._common import END, check_pipeline, emitter, method_name
from ._status import StatusError, status_for

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

#: Metadata carrying the client's idempotency key.
IDEMPOTENCY_KEY = "idempotency-key"
_KEY: ContextVar[str | None] = ContextVar("resilience_grpc_idempotency_key", default=None)
#: Trailing metadata marking a response replayed from an idempotency record.
REPLAYED_KEY = "idempotent-replayed"
_NO_DEADLINE = 1e9  # grpc reports ~9.2e18 s remaining when the client set no deadline
_DESERIALIZE_FAILED = "Exception deserializing request!"  # grpc's own wording
_STREAM_KEY_REFUSED = (
    "idempotency-key is not supported on streaming-response methods "
    "(a response stream cannot be replayed)"
)


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


def _digest(value: str | bytes) -> str:
    raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)
    return hashlib.sha256(raw).hexdigest()[:32]


def default_principal(context: Any) -> str | None:
    """Who is calling, for scoping idempotency records (the default ``principal=``).

    In order: the TLS peer identities (``context.peer_identities()``, hashed), a hash of the
    ``authorization`` metadata, else the peer address without its port (``context.peer()``).
    Behind a proxy or NAT many clients share an address: pass your own ``principal=`` that
    reads your authentication (and runs after it).

    Example:
        >>> class Ctx:
        ...     def peer_identities(self): return None
        ...     def invocation_metadata(self): return ()
        ...     def peer(self): return "ipv6:[::1]:51000"
        >>> default_principal(Ctx())
        'peer:ipv6:[::1]'
    """
    try:
        identities = context.peer_identities()
    except Exception:  # pragma: no cover - a context without peer_identities
        identities = None
    if identities:
        return "tls:" + _digest(b"\x00".join(bytes(i) for i in identities))
    for k, v in context.invocation_metadata() or ():
        if k == "authorization":
            return "auth:" + _digest(v)
    peer = context.peer()
    if not isinstance(peer, str) or not peer:
        return None
    if peer.startswith(("ipv4:", "ipv6:")):
        peer = peer.rpartition(":")[0]
    return "peer:" + peer


_STREAM_TOO_LARGE = "the request stream is larger than the idempotency max_buffered_bytes"
_BUFFERS_FULL = "too many request bytes are buffered for idempotency right now; retry later"


class StreamBuffer:
    """A request stream's messages, held within the records' :class:`BufferBudget`.

    :meth:`take` reserves each message before it is kept: a stream that can never fit the
    budget raises ``RESOURCE_EXHAUSTED``, one that does not fit *now* (other calls hold the
    budget) a :class:`~resilience.RejectedError` (``UNAVAILABLE``, pushback 1 s); nothing more
    of the stream is read. :meth:`release` returns the bytes when the call is done.
    """

    __slots__ = ("budget", "held")

    def __init__(self, budget: BufferBudget) -> None:
        self.budget = budget
        self.held = 0

    def take(self, message: Any) -> bytes:
        n = len(message)
        if not self.budget.reserve(n):
            if self.held + n > self.budget.limit:
                raise StatusError(grpc.StatusCode.RESOURCE_EXHAUSTED, _STREAM_TOO_LARGE)
            raise RejectedError(_BUFFERS_FULL, policy="idempotency", retry_after=1.0)
        self.held += n
        return bytes(message)

    def release(self) -> None:
        if self.held:
            self.budget.release(self.held)
            self.held = 0


def stream_fingerprint(messages: list[bytes]) -> bytes:
    """The fingerprint input of a request stream: its serialized messages, length-prefixed."""
    return b"".join(len(m).to_bytes(8, "big") + m for m in messages)


class IdempotencyConfig:
    """The ``idempotency=`` hook of a server interceptor, resolved at construction."""

    __slots__ = ("policy", "principal", "records", "required", "wait")

    def __init__(
        self,
        idempotency: object,
        required: bool,
        wait: Duration,
        principal: Callable[[Any], str | None] | None,
        scope: Callable[[Any], str | None] | None = None,
    ) -> None:
        self.records: IdempotencyRecords | None = None
        self.policy: rs.Policy | None = None
        if isinstance(idempotency, IdempotencyRecords):
            self.records = idempotency
        elif idempotency is not None:
            if not isinstance(idempotency, rs.Policy):
                raise ConfigurationError(
                    "idempotency must be an rs.IdempotencyRecords (or a resilience policy), "
                    f"got {idempotency!r}"
                )
            self.policy = idempotency
        self.required = bool(required)
        self.wait = seconds(wait, "idempotency_wait")
        if scope is not None and principal is not None:
            raise ConfigurationError("pass scope= or its older name principal=, not both")
        if scope is None:
            scope = principal
        if scope is None:
            scope = default_principal
        elif not callable(scope):
            raise ConfigurationError(
                f"scope must be a callable(context) -> str | None, got {scope!r}"
            )
        self.principal = scope

    @property
    def enabled(self) -> bool:
        return self.records is not None or self.policy is not None

    def wait_now(self) -> float:
        """``wait``, bounded by the time left before the published deadline."""
        d = _DEADLINE.get()
        if d is None:
            return self.wait
        return max(0.0, min(self.wait, d.remaining()))

    def principal_of(self, context: Any) -> str | None:
        """The caller's principal (``None``: run without deduplication)."""
        principal: object = self.principal(context)
        if principal is not None and (not isinstance(principal, str) or not principal):
            raise ConfigurationError(
                f"scope must return a non-empty str or None, got {principal!r}"
            )
        return principal

    @property
    def scope_hook(self) -> Callable[[Any], str | None] | None:
        """The principal hook :func:`enter_scope` applies (only for a policy ``idempotency=``)."""
        return self.principal_of if self.policy is not None else None


def refuse_key(context: Any) -> str | None:
    """The error for an ``idempotency-key`` sent to a method that cannot be deduplicated."""
    for k, _ in context.invocation_metadata() or ():
        if k == IDEMPOTENCY_KEY:
            return _STREAM_KEY_REFUSED
    return None


def compose_pipeline(pipeline: rs.Policy | None, idempotency: rs.Policy | None) -> rs.Policy | None:
    """The server policy: the pipeline, then the idempotency hook innermost."""
    if idempotency is None:
        return pipeline
    if pipeline is None:
        return idempotency
    return rs.Pipeline(pipeline, idempotency, name=pipeline.name)


def deadline_token(context: Any, clock: Clock, max_deadline: float | None = None) -> Any:
    """Publish the inbound deadline (``context.time_remaining()``, clamped to ``max_deadline``).

    Returns a reset token, or ``None`` when the client set no deadline.
    """
    left = context.time_remaining()
    if left is None or left > _NO_DEADLINE:
        return None
    left = clamp_inbound(max(0.0, left), max_deadline)
    return _DEADLINE.set(tighter(clock.monotonic() + left, clock))


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
    context: Any,
    clock: Clock,
    idempotency: bool,
    required: bool,
    scope_of: Callable[[Any], str | None] | None = None,
    max_deadline: float | None = None,
) -> tuple[Any, Any, Any, str | None]:
    """Publish the deadline and the idempotency key: (tokens..., error message or None).

    With ``scope_of`` (an ``idempotency=`` policy), a call carrying a key also enters the
    caller's :class:`~resilience.idempotency.CallerScope`, so the policy's records are the
    caller's own; a caller without a principal gets no key (the policy does not deduplicate).
    """
    dl = deadline_token(context, clock, max_deadline)
    if not idempotency:
        return dl, None, None, None
    key, error = key_check(context, required)
    caller = None
    if error is None and key is not None and scope_of is not None:
        try:
            principal = scope_of(context)
        except BaseException:
            if dl is not None:
                _DEADLINE.reset(dl)
            raise
        if principal is None:
            key = None
        else:
            caller = _CALLER.set(CallerScope(principal))
    if error is not None:
        if dl is not None:
            _DEADLINE.reset(dl)
        return None, None, None, error
    return dl, _KEY.set(key), caller, None


def exit_scope(tokens: tuple[Any, ...]) -> None:
    """Undo :func:`enter_scope` (tolerating a generator closed in another context)."""
    try:
        if tokens[2] is not None:
            _CALLER.reset(tokens[2])
        if tokens[1] is not None:
            _KEY.reset(tokens[1])
        if tokens[0] is not None:
            _DEADLINE.reset(tokens[0])
    except ValueError:  # pragma: no cover - closed by the garbage collector elsewhere
        pass


def mark_replayed(context: Any) -> None:
    """Add ``idempotent-replayed: true`` when the call's policy replayed a stored outcome."""
    caller = _CALLER.get()
    if caller is not None and caller.replayed:
        context.set_trailing_metadata(((REPLAYED_KEY, "true"),))


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


def rejection(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """What to abort with for an exception the pipeline raised, or re-raise it."""
    if isinstance(exc, StatusError):
        return exc.code(), exc.details() or "", ()
    mapped = status_for(exc)
    if mapped is None:
        raise exc
    return mapped[0], str(exc), mapped[1]


# -- sync -------------------------------------------------------------------------------------
def unscoped() -> Any:
    """Leave the caller's idempotency scope for the handler itself (a reset token or None).

    The scope is for the interceptor's ``idempotency=`` policy only: idempotent functions the
    handler calls keep their own (cross-caller) records.
    """
    return None if _CALLER.get() is None else _CALLER.set(None)


def _unary_body(user: Callable[..., Any]) -> Callable[[Any, ContextProxy], Any]:
    def body(request: Any, proxy: ContextProxy) -> Any:
        token = unscoped()
        try:
            result = user(request, proxy)
        finally:
            if token is not None:
                _CALLER.reset(token)
        failed = proxy.failure(result)
        if failed is not None:
            raise failed
        return result

    return body


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
                _CALLER.reset(token)
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


def _identity(value: Any) -> Any:
    return value


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
        return policy._compose_sync(body, emitter(policy, method))

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
                    _CALLER.set(None)  # the rest of the stream is the handler's own code
                yield first
                try:
                    yield from it
                except StatusError as exc:
                    _abort(context, exc)
            finally:
                leave(tokens)

        return resilient_stream
