"""``RateLimitMiddleware``: per-client rate limits with the IETF ``RateLimit`` fields."""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, cast

from resilience import refused_by_policy
from resilience.errors import ConfigurationError, RateLimitedError
from resilience.ratelimit import Decision as _RsDecision
from resilience.ratelimit import RateLimiter

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

#: The largest sf-integer (RFC 9651 §3.3.1: at most 15 digits); larger values are sent as it.
_SF_MAX = 999_999_999_999_999
_SF_MAX_BYTES = b"%d" % _SF_MAX
#: The most distinct quotas whose ``RateLimit-Policy`` field is kept ready (per middleware).
_POLICY_CACHE = 256
_MISSING: Any = object()


class Decision(Protocol):
    """What ``limiter.try_acquire`` returns."""

    @property
    def allowed(self) -> bool: ...  # pragma: no cover - protocol

    @property
    def retry_after(self) -> float | None: ...  # pragma: no cover - protocol

    @property
    def remaining(self) -> float | int: ...  # pragma: no cover - protocol


def _sf_string(text: str) -> bytes:
    """A structured-field string (RFC 8941 §3.3.3), dropping characters it cannot carry."""
    clean = "".join(c for c in text if " " <= c <= "~")
    return b'"' + clean.replace("\\", "\\\\").replace('"', '\\"').encode("ascii") + b'"'


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


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
        name = getattr(limiter, "name", None)
        self._name_text = name if isinstance(name, str) and name else "default"
        self._name = _sf_string(self._name_text)
        rate = _number(getattr(limiter, "rate", None))
        per = _number(getattr(limiter, "per", None))
        self._rate_per = (rate, per) if rate and per else None
        self._policies: dict[int, tuple[bytes, bytes] | None] = {}

    def _fields(self, decision: Any, denied_after: bytes | None) -> Headers:
        """The ``RateLimit-Policy`` and ``RateLimit`` fields of ``decision`` (``denied_after``:
        the ``Retry-After`` value of a refusal, ``None`` when admitted)."""
        if denied_after is None and decision.__class__ is _RsDecision and not decision.windows:
            # the hot path, an admitted one-window rs.RateLimiter decision: the policy field
            # comes from a cache (it depends on the quota only), the state field is one format;
            # the same bytes as _any_fields (which handles everything else)
            limit, remaining, reset = decision.limit, decision.remaining, decision.reset_after
            if (
                limit.__class__ is int
                and remaining.__class__ is int
                and reset.__class__ is float
                and 0.0 <= reset < _SF_MAX
            ):
                policy = self._policies.get(limit, _MISSING)
                if policy is _MISSING:
                    policy = self._policy_field(float(limit))
                    if len(self._policies) < _POLICY_CACHE:
                        self._policies[limit] = policy
                if remaining < 0:
                    remaining = 0
                elif remaining > _SF_MAX:
                    remaining = _SF_MAX
                state = (b"ratelimit", self._name + b";r=%d;t=%d" % (remaining, math.ceil(reset)))
                return [state] if policy is None else [policy, state]
        return self._any_fields(decision, denied_after)

    def _policy_field(self, limit: float | None) -> tuple[bytes, bytes] | None:
        """The ``RateLimit-Policy`` field for a quota of ``limit`` (``None``: unknown)."""
        if self._rate_per is not None:
            rate, per = self._rate_per
            quota = limit if limit is not None else rate
            q = math.floor(quota)
            w = math.ceil(per * quota / rate)
            if q > _SF_MAX or w > _SF_MAX:
                q, w = min(q, _SF_MAX), min(w, _SF_MAX)
            return (b"ratelimit-policy", self._name + b";q=%d;w=%d" % (q, w))
        if limit is not None:
            q = math.floor(limit)
            if q > _SF_MAX:
                q = _SF_MAX
            return (b"ratelimit-policy", self._name + b";q=%d" % q)
        return None

    def _any_fields(self, decision: Any, denied_after: bytes | None) -> Headers:
        """:meth:`_fields` for any decision (duck-typed, multi-window, refused)."""
        windows = getattr(decision, "windows", None)
        if windows:
            return self._window_fields(windows, denied_after is not None)
        limit = _number(getattr(decision, "limit", None))
        remaining = _number(getattr(decision, "remaining", None))
        out: Headers = []
        policy = self._policy_field(limit)
        if policy is not None:
            out.append(policy)
        if remaining is None:
            return out
        r = math.floor(remaining)
        if r < 0:
            r = 0
        elif r > _SF_MAX:
            r = _SF_MAX
        if denied_after is not None:
            t = denied_after
        else:
            reset = _number(getattr(decision, "reset_after", None))
            if reset is None and self._rate_per is not None and limit is not None:
                rate, per = self._rate_per
                reset = max(0.0, limit - remaining) * per / rate
            t = format_retry_after(reset) or b"0"
        if len(t) > 15:  # a Retry-After beyond the sf-integer range
            t = _SF_MAX_BYTES
        out.append((b"ratelimit", self._name + b";r=%d;t=" % r + t))
        return out

    def _window_fields(self, windows: Sequence[Any], denied: bool) -> Headers:
        """One ``RateLimit-Policy`` and one ``RateLimit`` item per window of a multi-window
        decision (``"<limiter>/<window>"``); a window that refused gives its own retry-after as
        ``t``, the others the seconds until they are full again."""
        policies: list[bytes] = []
        states: list[bytes] = []
        for w in windows:
            item = _sf_string(f"{self._name_text}/{w.name}")
            q = min(max(0, math.floor(w.limit)), _SF_MAX)
            span = min(math.ceil(w.window), _SF_MAX)
            policies.append(item + (b";q=%d;w=%d" % (q, span) if span else b";q=%d" % q))
            r = min(max(0, math.floor(w.remaining)), _SF_MAX)
            seconds = w.retry_after if denied and w.retry_after > 0 else w.reset_after
            t = format_retry_after(seconds) or b"0"
            if len(t) > 15:
                t = _SF_MAX_BYTES
            states.append(item + b";r=%d;t=" % r + t)
        return [(b"ratelimit-policy", b", ".join(policies)), (b"ratelimit", b", ".join(states))]

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

    async def _give_back(self, decision: Any) -> None:
        """Refund ``decision``: a policy further in refused the request it admitted."""
        result = cast(Callable[[Any], Any], self._refund)(decision)
        if self._refund_async:
            await result
