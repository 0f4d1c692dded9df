"""``RateLimitMiddleware``: per-client rate limits with the IETF ``RateLimit`` fields."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, cast

from resilience import refused_by_policy
from resilience._types import check_listeners
from resilience.errors import ConfigurationError, RateLimitedError
from resilience.events import CallRejected, Listener, emit
from resilience.ratelimit import RateLimiter

from .._ratelimit_fields import RateLimitFields, _number
from ._common import (
    REFUSALS_KEY,
    ASGIApp,
    Headers,
    Message,
    Network,
    Receive,
    RouteFilter,
    Scope,
    Send,
    TrustedProxies,
    format_retry_after,
    mark_refused,
    refusal_row,
    send_refusal,
)

__all__ = ["RateLimitMiddleware"]

_RATE_LIMITED = refusal_row(RateLimitedError)


class Decision(Protocol):
    """What ``limiter.try_acquire`` returns."""

    @property
    def allowed(self) -> bool: ...  # pragma: no cover - protocol

    @property
    def retry_after(self) -> float | None: ...  # pragma: no cover - protocol

    @property
    def remaining(self) -> float | int: ...  # pragma: no cover - protocol


class RateLimitMiddleware:
    """Per-client rate limiting for HTTP requests (pure ASGI).

    Each selected request takes ``cost`` permits from ``limiter`` under the key ``key(scope)``
    (default: the client address, honouring ``X-Forwarded-For`` only from ``trusted_proxies``).
    A refused request gets ``429`` problem+json with ``Retry-After`` (whole seconds, rounded
    up) and, like every limited response, the IETF ``RateLimit-Policy`` and ``RateLimit``
    fields (``"<limiter>";q=<quota>;w=<window>`` and ``"<limiter>";r=<remaining>;t=<seconds>``);
    a limiter with several windows (a decision with ``windows``, e.g. ``rs.RateLimiter(...,
    limits=[...])``) gets one item per window in each, ``"<limiter>/<window name>"``.
    A key of ``None`` means "no principal": the request is not limited. The key is passed to
    the limiter as is, so a limiter with per-key tiers (``limits=`` a callable of the key) sees
    the principal ``key`` returns, e.g. ``key=lambda scope: scope["state"]["plan_and_user"]``.
    ``lifespan``, ``websocket`` and unknown scopes pass through untouched.

    A refused request spends nothing: when a resilience policy *inside* (a
    :class:`~interceptors.asgi.ResilienceMiddleware` whose limiter, bulkhead or breaker
    answers 429 / 503, an inner ``RateLimitMiddleware``, or a refusal stamped by a policy that
    escapes the app) refuses a request this middleware admitted, its permits are given back
    with the limiter's ``refund`` (one round trip with a Redis store), so one client's refused
    requests do not drain a budget it shares with others (e.g. per IP). Inner middlewares report
    refusals through the scope (see :func:`~interceptors.asgi.mark_refused`); a 429 or 503
    the application chose itself keeps the permit.

    The limiter is anything with ``try_acquire(key=..., cost=...)`` (or an awaitable
    ``atry_acquire``, preferred when present) returning a decision with ``.allowed``,
    ``.retry_after`` and ``.remaining`` (and optionally ``.limit``), and optionally
    ``refund(decision)`` (or an awaitable ``arefund``), like :class:`resilience.RateLimiter`.

    Args:
        app: the ASGI application.
        limiter: the rate limiter.
        key: maps the ASGI scope to the client key (``str``) or ``None``.
        trusted_proxies: CIDRs of reverse proxies whose ``X-Forwarded-For`` is believed.
        cost: permits per request, or a callable of the scope returning them.
        include / exclude / when: which requests are limited (path prefixes, predicate).
        headers: send the ``RateLimit`` / ``RateLimit-Policy`` fields on allowed responses too.
        listeners: receive a :class:`~resilience.events.CallRejected` (``reason=
            "rate_limited"``, ``policy`` the limiter's name, ``operation`` the HTTP method) for
            every request answered 429 (the limiter's own events go to its own listeners).

    Example:
        >>> async def app(scope, receive, send): ...
        >>> class Limiter:
        ...     name = "api"
        ...     def try_acquire(self, *, key, cost=1): ...
        >>> app = RateLimitMiddleware(app, limiter=Limiter(), trusted_proxies=["10.0.0.0/8"])
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: Any,
        key: Callable[[Scope], str | None] | None = None,
        trusted_proxies: Iterable[str | Network] = (),
        cost: int | Callable[[Scope], int] = 1,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        when: Callable[[Scope], bool] | None = None,
        headers: bool = True,
        listeners: Sequence[Listener] = (),
    ) -> None:
        atry = getattr(limiter, "atry_acquire", None)
        sync = getattr(limiter, "try_acquire", None)
        # an in-memory rs.RateLimiter: its async variants are its sync ones (one generated code
        # path, nothing to await), so skip the coroutine per request
        local = type(limiter) is RateLimiter and limiter.store is None
        self._acquire: Callable[..., Any]
        if local:
            self._acquire, self._async = limiter.try_acquire, False
        elif atry is not None and inspect.iscoroutinefunction(atry):
            self._acquire, self._async = atry, True
        elif callable(sync):
            self._acquire = sync
            self._async = inspect.iscoroutinefunction(sync)
        else:
            raise ConfigurationError(
                f"limiter must provide try_acquire(key=..., cost=...), got {limiter!r}"
            )
        arefund = getattr(limiter, "arefund", None)
        refund = getattr(limiter, "refund", None)
        self._refund: Callable[[Any], Any] | None = None
        self._refund_async = False
        if local:
            self._refund = limiter.refund
        elif arefund is not None and inspect.iscoroutinefunction(arefund):
            self._refund, self._refund_async = arefund, True
        elif callable(refund):
            self._refund, self._refund_async = refund, inspect.iscoroutinefunction(refund)
        if key is not None and not callable(key):
            raise ConfigurationError(f"key must be a callable of the ASGI scope, got {key!r}")
        if not callable(cost) and (
            isinstance(cost, bool) or not isinstance(cast(object, cost), int) or cost < 1
        ):
            raise ConfigurationError(f"cost must be an integer >= 1 or a callable, got {cost!r}")
        self.app = app
        self.limiter = limiter
        self._proxies = TrustedProxies(trusted_proxies)
        self._key = key or self._proxies.client_ip
        self._cost = cost
        self._cost_fn: Callable[[Scope], int] | None = cost if callable(cost) else None
        self._routes = RouteFilter(include, exclude, when)
        self._all_routes = self._routes.everything
        self._headers = headers
        self.listeners = check_listeners(listeners)
        self._format = RateLimitFields(limiter)

    def _fields(self, decision: Any, denied_after: bytes | None) -> Headers:
        return self._format.fields(decision, denied_after)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != "http" or not (self._all_routes or self._routes(scope)):
            await self.app(scope, receive, send)
            return
        key = self._key(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        cost = self._cost if self._cost_fn is None else self._cost_fn(scope)
        decision = self._acquire(key=key, cost=cost)
        if self._async:
            decision = await decision
        if not decision.allowed:
            mark_refused(scope)  # a policy inside the enclosing limiters refused
            if self.listeners:
                self._rejected(scope, decision)
            after = format_retry_after(decision.retry_after)
            headers = self._fields(decision, after or b"0")
            if after is not None:
                headers.append((b"retry-after", after))
            await send_refusal(
                send,
                _RATE_LIMITED,
                detail="the client's request quota is exhausted",
                headers=headers,
            )
            return
        app_send = send
        if self._headers:
            fields = self._fields(decision, None)

            # a plain function returning send's awaitable: no coroutine of its own per message
            def send_with_fields(message: Message) -> Awaitable[None]:
                if message["type"] == "http.response.start":
                    message = dict(message)
                    message["headers"] = [*message.get("headers", ()), *fields]
                return send(message)

            app_send = send_with_fields
        if self._refund is None:
            await self.app(scope, receive, app_send)
            return
        refusals = scope.get(REFUSALS_KEY)
        if refusals is None:
            refusals = scope[REFUSALS_KEY] = []
        before = len(refusals)
        try:
            await self.app(scope, receive, app_send)
        except Exception as exc:
            if refused_by_policy(exc) or len(refusals) > before:
                with contextlib.suppress(Exception):  # never mask the app's exception
                    await self._give_back(decision)
            raise
        if len(refusals) > before:
            await self._give_back(decision)

    def _rejected(self, scope: Scope, decision: Any) -> None:
        retry_after = _number(decision.retry_after)
        emit(
            self.listeners,
            CallRejected(
                policy=self._format.name_text,
                pipeline=None,
                operation=str(scope.get("method", "HTTP")),
                reason="rate_limited",
                retry_after=retry_after,
            ),
        )

    async def _give_back(self, decision: Any) -> None:
        """Refund ``decision``: a policy further in refused the request it admitted."""
        result = cast(Callable[[Any], Any], self._refund)(decision)
        if self._refund_async:
            await result
