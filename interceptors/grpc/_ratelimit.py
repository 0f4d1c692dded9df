"""Per-principal rate limits for gRPC servers, with the IETF ``RateLimit`` fields as trailers.

``_AsyncLimitCore`` (the ``grpc.aio`` interceptor) is the source; ``_LimitCore`` (the sync
one) is generated from it by ``scripts/twins.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import grpc

from resilience._types import check_listeners
from resilience.errors import ConfigurationError
from resilience.events import CallRejected, Listener, emit

from .._ratelimit_fields import RateLimitFields, _number, format_retry_after
from ._common import method_name
from ._server_idempotency import default_principal
from ._status import PUSHBACK_KEY, format_pushback

__all__ = ["AsyncRateLimitServerInterceptor", "RateLimitServerInterceptor"]

_DETAILS = "the client's request quota is exhausted"
_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


class _Trailing:
    """The handler's context, with the rate-limit fields added to its trailing metadata
    (whatever the handler sets itself is kept, ours appended)."""

    def __init__(self, context: Any, fields: tuple[tuple[str, str], ...]) -> None:
        self._context = context
        self._fields = fields
        context.set_trailing_metadata(fields)

    def set_trailing_metadata(self, metadata: Any) -> None:
        self._context.set_trailing_metadata((*tuple(metadata or ()), *self._fields))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _check(limiter: Any, method: str, key: Any, cost: Any) -> Callable[..., Any]:
    take = getattr(limiter, method, None)
    if not callable(take):
        raise ConfigurationError(
            f"limiter must provide {method}(key=..., cost=...), got {limiter!r}"
        )
    if key is not None and not callable(key):
        raise ConfigurationError(f"key must be a callable of the servicer context, got {key!r}")
    if not callable(cost) and (
        isinstance(cost, bool) or not isinstance(cast(object, cost), int) or cost < 1
    ):
        raise ConfigurationError(f"cost must be an integer >= 1 or a callable, got {cost!r}")
    return cast(Callable[..., Any], take)


# twin: async _AsyncLimitCore=_LimitCore, atry_acquire=try_acquire, _aadmit=_admit
class _AsyncLimitCore:
    """The checks, the trailers and the handler wrapping of the rate-limit interceptor."""

    def __init__(
        self,
        *,
        limiter: Any,
        key: Callable[[Any], str | None] | None = None,
        cost: int | Callable[[Any], int] = 1,
        trailers: bool = True,
        listeners: Iterable[Listener] = (),
    ) -> None:
        self._take = _check(limiter, "atry_acquire", key, cost)
        self.listeners = check_listeners(listeners)
        self.limiter = limiter
        self._key = key or default_principal
        self._cost = cost
        self._trailers = trailers
        self._format = RateLimitFields(limiter)
        self._cache: dict[str, tuple[Any, Any]] = {}

    def _metadata(self, decision: Any, denied_after: bytes | None) -> tuple[tuple[str, str], ...]:
        fields = self._format.fields(decision, denied_after)
        return tuple((k.decode("ascii"), v.decode("ascii")) for k, v in fields)

    async def _aadmit(self, context: Any, method: str) -> Any:
        """Take the caller's permits: the context the handler gets (aborts when refused)."""
        key = self._key(context)
        if key is None:  # no principal: not limited
            return context
        cost = self._cost(context) if callable(self._cost) else self._cost
        decision = await self._take(key=key, cost=cost)
        if not decision.allowed:
            retry = decision.retry_after
            if self.listeners:
                self._rejected(method, retry)
            after = format_retry_after(retry)
            md = self._metadata(decision, after or b"0")
            if after is not None:
                md = (*md, (PUSHBACK_KEY, format_pushback(retry)))
            context.set_trailing_metadata(md)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, _DETAILS)
        if not self._trailers:
            return context
        return _Trailing(context, self._metadata(decision, None))

    def _rejected(self, method: str, retry_after: float | None) -> None:
        emit(
            self.listeners,
            CallRejected(
                policy=self._format.name_text,
                pipeline=None,
                operation=method,
                reason="rate_limited",
                retry_after=_number(retry_after),
            ),
        )

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        """Wrap the method handler (built once per method and cached)."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = method_name(handler_call_details.method)
        hit = self._cache.get(method)
        if hit is not None and hit[0] is handler:
            return hit[1]
        wrapped = self._wrap(handler, method)
        self._cache[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: Any, method: str) -> Any:
        admit = self._aadmit
        for kind, make in _KINDS:
            user = getattr(handler, kind)
            if user is None:
                continue
            if kind.endswith("_stream"):

                async def streaming(request: Any, context: Any, user: Any = user) -> Any:
                    ctx = await admit(context, method)
                    async for message in user(request, ctx):  # noqa: RUF100, UP028 (the sync twin)
                        yield message

                behaviour: Any = streaming
            else:

                async def unary(request: Any, context: Any, user: Any = user) -> Any:
                    ctx = await admit(context, method)
                    return await user(request, ctx)

                behaviour = unary
            return make(
                behaviour,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # pragma: no cover - a handler of no known kind


# twin: end
# twin: sync (generated from the block above by scripts/twins.py; do not edit)
class _LimitCore:
    """The checks, the trailers and the handler wrapping of the rate-limit interceptor."""

    def __init__(
        self,
        *,
        limiter: Any,
        key: Callable[[Any], str | None] | None = None,
        cost: int | Callable[[Any], int] = 1,
        trailers: bool = True,
        listeners: Iterable[Listener] = (),
    ) -> None:
        self._take = _check(limiter, "try_acquire", key, cost)
        self.listeners = check_listeners(listeners)
        self.limiter = limiter
        self._key = key or default_principal
        self._cost = cost
        self._trailers = trailers
        self._format = RateLimitFields(limiter)
        self._cache: dict[str, tuple[Any, Any]] = {}

    def _metadata(self, decision: Any, denied_after: bytes | None) -> tuple[tuple[str, str], ...]:
        fields = self._format.fields(decision, denied_after)
        return tuple((k.decode("ascii"), v.decode("ascii")) for k, v in fields)

    def _admit(self, context: Any, method: str) -> Any:
        """Take the caller's permits: the context the handler gets (aborts when refused)."""
        key = self._key(context)
        if key is None:  # no principal: not limited
            return context
        cost = self._cost(context) if callable(self._cost) else self._cost
        decision = self._take(key=key, cost=cost)
        if not decision.allowed:
            retry = decision.retry_after
            if self.listeners:
                self._rejected(method, retry)
            after = format_retry_after(retry)
            md = self._metadata(decision, after or b"0")
            if after is not None:
                md = (*md, (PUSHBACK_KEY, format_pushback(retry)))
            context.set_trailing_metadata(md)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, _DETAILS)
        if not self._trailers:
            return context
        return _Trailing(context, self._metadata(decision, None))

    def _rejected(self, method: str, retry_after: float | None) -> None:
        emit(
            self.listeners,
            CallRejected(
                policy=self._format.name_text,
                pipeline=None,
                operation=method,
                reason="rate_limited",
                retry_after=_number(retry_after),
            ),
        )

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        """Wrap the method handler (built once per method and cached)."""
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = method_name(handler_call_details.method)
        hit = self._cache.get(method)
        if hit is not None and hit[0] is handler:
            return hit[1]
        wrapped = self._wrap(handler, method)
        self._cache[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: Any, method: str) -> Any:
        admit = self._admit
        for kind, make in _KINDS:
            user = getattr(handler, kind)
            if user is None:
                continue
            if kind.endswith("_stream"):

                def streaming(request: Any, context: Any, user: Any = user) -> Any:
                    ctx = admit(context, method)
                    for message in user(request, ctx):  # noqa: RUF100, UP028 (the sync twin)
                        yield message

                behaviour: Any = streaming
            else:

                def unary(request: Any, context: Any, user: Any = user) -> Any:
                    ctx = admit(context, method)
                    return user(request, ctx)

                behaviour = unary
            return make(
                behaviour,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # pragma: no cover - a handler of no known kind


# twin: end

if TYPE_CHECKING:
    _ServerInterceptor = grpc.ServerInterceptor[Any, Any]
    _AioServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.ServerInterceptor
    _AioServerInterceptor = grpc.aio.ServerInterceptor

_DOC = """Per-principal rate limiting for a {server} (the IETF ``RateLimit`` fields as trailers).

    Each RPC takes ``cost`` permits from ``limiter`` under the key ``key(context)``, the
    caller's principal (default :func:`default_principal`: the TLS peer identity, else a hash
    of the ``authorization`` metadata, else the peer address). A key of ``None`` means "no
    principal": the call is not limited. The key is passed to the limiter as is, so a limiter
    with per-key tiers (``rs.RateLimiter(..., limits=tier)``, ``tier`` a callable of the key)
    gives each principal its own quota: ``key=`` returning ``"pro:bob"`` makes the tier
    function see ``"pro:bob"``.

    A refused call is aborted with ``RESOURCE_EXHAUSTED`` before the handler runs, with the
    trailing metadata ``grpc-retry-pushback-ms`` (gRFC A6) and the IETF ``ratelimit-policy``
    and ``ratelimit`` fields (``"<limiter>";q=<quota>;w=<window>``,
    ``"<limiter>";r=<remaining>;t=<seconds>``; one item per window, ``"<limiter>/<window>"``,
    for a limiter with several windows or tiers). With ``trailers`` (the default) an admitted
    call's trailing metadata carries the two fields too, after whatever the handler sets.
    Permits are spent when the call is admitted, even if a policy further in refuses it.
    Put it before a :class:`ResilienceServerInterceptor` in ``interceptors=`` to limit callers
    before the pipeline runs.

    The limiter is anything with ``{method}(key=..., cost=...)`` returning a decision with
    ``.allowed``, ``.retry_after`` and ``.remaining`` (optionally ``.limit``,
    ``.reset_after``, ``.windows``), like :class:`resilience.RateLimiter`.

    Args:
        limiter: the rate limiter.
        key: ``callable(context) -> str | None``, the caller's principal.
        cost: permits per call, or a callable of the context returning them.
        trailers: send the ``ratelimit`` / ``ratelimit-policy`` fields on admitted calls too.
        listeners: event listeners; each refused call emits a ``CallRejected`` event (reason
            ``"rate_limited"``).
"""


class AsyncRateLimitServerInterceptor(_AsyncLimitCore, _AioServerInterceptor):
    __doc__ = (
        _DOC.format(server="``grpc.aio`` server", method="atry_acquire")
        + """
    Example:
        >>> import resilience as rs
        >>> from interceptors.grpc import AsyncRateLimitServerInterceptor
        >>> limiter = rs.RateLimiter("api", rate=10)
        >>> interceptor = AsyncRateLimitServerInterceptor(limiter=limiter)
        >>> interceptor.limiter.name
        'api'
    """
    )


class RateLimitServerInterceptor(_LimitCore, _ServerInterceptor):
    __doc__ = (
        _DOC.format(server="sync ``grpc.server``", method="try_acquire")
        + """
    Example:
        >>> import resilience as rs
        >>> from interceptors.grpc import RateLimitServerInterceptor
        >>> tiers = {"pro": rs.Limit(100, per=60), "free": rs.Limit(10, per=60)}
        >>> limiter = rs.RateLimiter("api", limits=lambda key: tiers[key.split(":")[0]])
        >>> interceptor = RateLimitServerInterceptor(limiter=limiter,
        ...     key=lambda context: dict(context.invocation_metadata()).get("x-user"))
    """
    )
