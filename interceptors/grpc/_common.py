"""Logic shared by the sync and aio interceptors: composition, attempts, deadlines, retry helper."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, cast

import grpc

import resilience as rs
from resilience import Clock, attach_retry_after
from resilience._clock import RandomLike, resolve_clock
from resilience._types import Duration, check_listeners, positive_int
from resilience.backoff import Backoff, exponential
from resilience.errors import ConfigurationError
from resilience.events import Listener

from ._refusal import native_refusal
from ._status import PREVIOUS_ATTEMPTS_KEY, code_of, grpc_retry_after, pushback_of, retryable

__all__ = [
    "AttemptState",
    "ClientCore",
    "GrpcRetry",
    "MAX_ATTEMPTS",
    "check_pipeline",
    "grpc_retry",
    "method_key",
    "method_name",
]

#: gRFC A6 caps ``maxAttempts`` at 5.
MAX_ATTEMPTS = 5
END = object()  # a response stream that ended before its first message
NOTHING = object()


def method_name(method: str | bytes) -> str:
    """The RPC method as text (``/package.Service/Method``)."""
    return method.decode() if isinstance(method, bytes) else method


def method_key(*args: Any, **kwargs: Any) -> str:
    """A ``key=`` for keyed policies in an interceptor's pipeline: the RPC's full method name.

    Works in the ``pipeline=`` of every client and server interceptor, e.g. one rate-limit
    bucket per method: ``rs.RateLimiter("per-method", rate=100, key=method_key)``.

    Example:
        >>> from types import SimpleNamespace
        >>> attempt = SimpleNamespace(details=SimpleNamespace(method=b"/shop.Orders/Create"))
        >>> method_key(attempt)
        '/shop.Orders/Create'
    """
    for arg in args[:2]:
        details = getattr(arg, "details", None)  # a client attempt
        method = getattr(details, "method", None)
        if method is None:
            method = getattr(arg, "_method", None)  # a server ContextProxy
        if method:
            return method_name(method)
    raise ConfigurationError(
        "method_key is a key= for policies in the pipeline= of a gRPC interceptor"
    )


def check_pipeline(pipeline: object) -> rs.Policy | None:
    """Validate a ``pipeline=`` argument (a policy, a pipeline or ``None``)."""
    if pipeline is not None and not isinstance(pipeline, rs.Policy):
        raise ConfigurationError(
            f"pipeline must be a resilience policy or rs.Pipeline, got {pipeline!r}"
        )
    return pipeline


def publish_timeout(timeout: float | None, clock: Clock) -> Any:
    """Publish the caller's ``timeout=`` as the call's deadline; returns a reset token or None."""
    if timeout is None:
        return None
    return rs.publish_deadline(timeout if timeout > 0 else 0.0, clock=clock)


def attempt_timeout(timeout: float | None) -> float | None:
    """The ``timeout=`` of one attempt: the time left before the published deadline.

    Capped at 10**8 s (:func:`resilience.cap_to_deadline`): grpcio treats a timeout it cannot
    represent (above ~7e9 s) as already expired, so a far-off deadline must not be passed on.
    """
    return rs.cap_to_deadline(timeout)


def attempt_metadata(metadata: Any, previous: int) -> list[tuple[str, str | bytes]]:
    """Metadata for a retry: the caller's, plus ``grpc-previous-rpc-attempts``."""
    out = [(k, v) for k, v in (metadata or ()) if k != PREVIOUS_ATTEMPTS_KEY]
    out.append((PREVIOUS_ATTEMPTS_KEY, str(previous)))
    return out


def mark_committed(exc: BaseException) -> None:
    """Flag an error of a call that can no longer be retried (see ``retryable``)."""
    try:
        exc._resilience_committed = True  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - exceptions with __slots__
        pass
    attach_retry_after(exc, -1.0)  # any Retry: do not retry


def attempt_failed(exc: BaseException, replay: ReplayBuffer | None) -> None:
    """Note what any ``Retry`` in the pipeline must know about a failed attempt.

    A call whose streamed request outgrew the replay buffer is committed (never retried); else
    the server's ``grpc-retry-pushback-ms`` is attached as the outcome's delay hint (a negative
    or unparseable value: do not retry, per gRFC A6).
    """
    if replay is not None and replay.overflowed:
        mark_committed(exc)
        return
    if isinstance(exc, grpc.RpcError):
        hint = pushback_of(exc)
        if hint is not None:
            attach_retry_after(exc, hint)


class AttemptState:
    """The per-call state a client interceptor drives its composed attempt function with
    (each flavour adds ``start``, which sends the next attempt)."""

    __slots__ = ("continuation", "details", "n", "replay", "request")

    def __init__(
        self, continuation: Any, details: Any, request: Any, replay: ReplayBuffer | None
    ) -> None:
        self.continuation = continuation
        self.details = details
        self.request = request
        self.replay = replay
        self.n = 0

    def failed(self, exc: BaseException) -> None:
        attempt_failed(exc, self.replay)

    def __resilience_injected__(self, outcome: object) -> object:
        """What a chaos policy injects instead of an attempt counts as one (the next attempt
        carries ``grpc-previous-rpc-attempts``), and an injected error is noted like a failed
        attempt's (its ``grpc-retry-pushback-ms`` becomes the delay hint of any ``Retry``)."""
        self.n += 1
        if isinstance(outcome, BaseException):
            self.failed(outcome)
        return outcome


class ClientCore:
    """What both client interceptors hold: the pipeline, the replay limit, the call-deadline
    clock, and one composed attempt function per ``(method, streaming)``."""

    #: The flavour's (unary attempt, streaming attempt) functions.
    _attempt_fns: tuple[Callable[[Any], Any], Callable[[Any], Any]]

    def __init__(
        self,
        *,
        pipeline: rs.Policy | None,
        replay_limit: int = 128,
        clock: Clock | None = None,
        native_errors: bool = True,
        listeners: Sequence[Listener] = (),
    ) -> None:
        self.pipeline = check_pipeline(pipeline)
        self.listeners = check_listeners(listeners)
        self.replay_limit = positive_int(replay_limit, "replay_limit", minimum=0)
        self._clock = resolve_clock(clock)
        self._cache: dict[tuple[Any, bool], Callable[[Any], Any]] = {}
        if not isinstance(cast(object, native_errors), bool):
            raise ConfigurationError(f"native_errors must be a bool, got {native_errors!r}")
        self.native_errors = native_errors

    def refused(self, exc: rs.RejectedError) -> BaseException:
        """What the caller gets for a policy's refusal: a :class:`ResilienceRpcError`
        (``native_errors=True``, the default) or the refusal itself."""
        return native_refusal(exc) if self.native_errors else exc

    def _composed(self, method: Any, streaming: bool) -> Callable[[Any], Any]:
        key = (method, streaming)
        fn = self._cache.get(key)
        if fn is None:
            fn = self._attempt_fns[1 if streaming else 0]
            if self.pipeline is not None:
                fn = self.pipeline.wrap(fn, operation=method_name(method), listeners=self.listeners)
            self._cache[key] = fn
        return fn


class ReplayBuffer:
    """Remembers streamed request messages so a retry can send them again (up to ``limit``).

    Past ``limit`` messages the call is *committed*: it is no longer retried.
    """

    __slots__ = ("_buf", "_limit", "_lock", "_source", "overflowed")

    def __init__(self, source: Any, limit: int) -> None:
        self._source = source
        self._buf: list[Any] = []
        self._limit = limit
        self._lock = threading.Lock()
        self.overflowed = False

    def _keep(self, item: Any) -> None:
        if self.overflowed:
            return
        if len(self._buf) >= self._limit:
            self.overflowed = True
            self._buf.clear()
        else:
            self._buf.append(item)

    def messages(self) -> Iterator[Any]:
        """The request stream of one attempt: the remembered messages, then the source's."""
        if not hasattr(self._source, "__next__"):
            self._source = iter(self._source)
        i = 0
        while True:
            with self._lock:
                if i < len(self._buf):
                    item = self._buf[i]
                else:
                    try:
                        item = next(self._source)
                    except StopIteration:
                        return
                    self._keep(item)
            i += 1
            yield item

    async def amessages(self) -> AsyncIterator[Any]:
        """The async request stream of one attempt (the source may be sync or async)."""
        src = self._source
        if hasattr(src, "__aiter__"):
            src = self._source = src.__aiter__()
            is_async = True
        else:
            if not hasattr(src, "__next__"):
                src = self._source = iter(src)
            is_async = False
        i = 0
        while True:
            if i < len(self._buf):
                item = self._buf[i]
            else:
                try:
                    item = await anext(src) if is_async else next(src)
                except (StopIteration, StopAsyncIteration):
                    return
                self._keep(item)
            i += 1
            yield item


class _ThrottleGate:
    """A budget view of a :class:`resilience.RetryThrottle` whose outcomes are recorded per A6.

    Everything but outcomes goes to the throttle, refunds included: an attempt refused by a
    policy inside the retry (a local limiter, bulkhead or open breaker) gives back what it took.
    """

    def __init__(self, throttle: rs.RetryThrottle | rs.RetryBudget) -> None:
        self.throttle = throttle

    def deposit(self) -> None:
        self.throttle.deposit()

    def refund(self, *, retry: bool = False) -> None:
        self.throttle.refund(retry=retry)

    def record(self, success: bool) -> None:
        """Outcomes are recorded by :class:`GrpcRetry` with the status code in hand."""

    # twin: async atry_withdraw=try_withdraw
    async def atry_withdraw(self) -> bool:
        """The throttle's decision (with a store: one round trip)."""
        return await self.throttle.atry_withdraw()

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def try_withdraw(self) -> bool:
        """The throttle's decision (with a store: one round trip)."""
        return self.throttle.try_withdraw()

    # twin: end

    def __repr__(self) -> str:
        return repr(self.throttle)


class GrpcRetry(rs.Retry):
    """A :class:`resilience.Retry` for gRPC status codes; build it with :func:`grpc_retry`.

    Example:
        >>> import grpc
        >>> retry = grpc_retry(codes=[grpc.StatusCode.UNAVAILABLE], attempts=9)
        >>> retry.attempts, retry.describe()["codes"]
        (5, ['UNAVAILABLE'])
    """

    def __init__(
        self,
        *,
        codes: Sequence[grpc.StatusCode],
        throttle: rs.RetryThrottle | rs.RetryBudget | None,
        **kwargs: Any,
    ) -> None:
        self.codes = frozenset(codes)
        self.throttle = throttle
        super().__init__(budget=None if throttle is None else _ThrottleGate(throttle), **kwargs)

    def describe(self) -> dict[str, Any]:
        """Plain data describing the configuration."""
        out = super().describe()
        out["codes"] = sorted(c.name for c in self.codes)
        return out

    def _outcome(self, exc: BaseException | None) -> None:
        throttle = self.throttle
        if throttle is None:
            return
        if exc is None:
            throttle.record(True)
        elif isinstance(exc, grpc.RpcError):
            # A6: retryable statuses and pushback count as failures, other statuses as successes.
            failed = code_of(exc) in self.codes or pushback_of(exc) is not None
            throttle.record(not failed)

    # twin: async
    def wrap_async(self, fn: Callable[..., Any], em: rs.Emitter) -> Callable[..., Any]:
        """The retry around ``fn``, recording each attempt's outcome in the throttle (A6)."""
        outcome = self._outcome

        async def recorded(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                outcome(exc)
                raise
            outcome(None)
            return result

        return super().wrap_async(recorded if self.throttle is not None else fn, em)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: Callable[..., Any], em: rs.Emitter) -> Callable[..., Any]:
        """The retry around ``fn``, recording each attempt's outcome in the throttle (A6)."""
        outcome = self._outcome

        def recorded(*args: Any, **kwargs: Any) -> Any:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                outcome(exc)
                raise
            outcome(None)
            return result

        return super().wrap_sync(recorded if self.throttle is not None else fn, em)

    # twin: end


def grpc_retry(
    *,
    codes: Sequence[grpc.StatusCode] = (grpc.StatusCode.UNAVAILABLE,),
    attempts: int = 3,
    backoff: Backoff | None = None,
    throttle: rs.RetryThrottle | rs.RetryBudget | None = None,
    max_elapsed: Duration | None = None,
    name: str = "grpc-retry",
    clock: Clock | None = None,
    random: RandomLike | None = None,
    listeners: Sequence[Listener] = (),
) -> GrpcRetry:
    """A retry policy for gRPC clients, following gRFC A6.

    * retries a ``grpc.RpcError`` whose status is in ``codes`` (``UNAVAILABLE`` by default);
    * ``attempts`` counts the first attempt and is capped at 5, as gRPC does;
    * ``grpc-retry-pushback-ms`` in the trailing metadata wins over the backoff: a valid value
      is the exact delay, a negative or unparseable one stops retrying;
    * ``throttle`` (an :class:`resilience.RetryThrottle`, shared per target) is fed as A6 says:
      retryable statuses and pushback cost a token, other outcomes earn ``token_ratio``;
    * the default backoff is exponential from 0.1 s to 5 s with "equal" jitter.

    Put it in the ``pipeline=`` of a :class:`ResilienceClientInterceptor`. Do not also enable
    the channel's own retries (``grpc.enable_retries`` with a ``retryPolicy``): both would retry.

    Example:
        >>> import grpc, resilience as rs
        >>> retry = grpc_retry(throttle=rs.RetryThrottle(max_tokens=10, token_ratio=0.1))
        >>> retry.describe()["attempts"], retry.describe()["codes"]
        (3, ['UNAVAILABLE'])
    """
    codes = tuple(codes) if isinstance(cast(object, codes), Iterable) else ()
    if not codes or not all(isinstance(c, grpc.StatusCode) for c in codes):
        raise ConfigurationError(
            f"codes must be a non-empty sequence of grpc.StatusCode, got {codes!r}"
        )
    if grpc.StatusCode.OK in codes:
        raise ConfigurationError("codes must not contain StatusCode.OK")
    attempts = min(positive_int(attempts, "attempts"), MAX_ATTEMPTS)
    if backoff is None:
        backoff = exponential(initial=0.1, maximum=5.0, jitter="equal")
    return GrpcRetry(
        codes=codes,
        throttle=throttle,
        on=retryable(codes),
        attempts=attempts,
        backoff=backoff,
        max_elapsed=max_elapsed,
        retry_after=grpc_retry_after,
        name=name,
        clock=clock,
        random=random,
        listeners=listeners,
    )
