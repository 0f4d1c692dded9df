"""The IETF ``RateLimit-Policy`` / ``RateLimit`` fields of a rate-limit decision.

Shared by :class:`~interceptors.asgi.RateLimitMiddleware` (HTTP response headers) and
:class:`~interceptors.grpc.RateLimitServerInterceptor` (gRPC trailing metadata): one item
``"<limiter>";q=<quota>;w=<window>`` / ``"<limiter>";r=<remaining>;t=<seconds>``, or, for a
decision with several windows (a multi-window or tiered :class:`resilience.RateLimiter`), one
item per window, ``"<limiter>/<window name>"``.

Example:
    >>> import resilience as rs
    >>> limiter = rs.RateLimiter("api", rate=2, clock=rs.testing.FakeClock())
    >>> RateLimitFields(limiter).fields(limiter.try_acquire(key="k"), None)
    [(b'ratelimit-policy', b'"api";q=2;w=1'), (b'ratelimit', b'"api";r=1;t=1')]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from resilience.ratelimit import Decision as _RsDecision

__all__ = ["RateLimitFields", "format_retry_after"]

Headers = list[tuple[bytes, bytes]]

#: The largest sf-integer (RFC 9651 §3.3.1: at most 15 digits); larger values are sent as it.
_SF_MAX = 999_999_999_999_999
_SF_MAX_BYTES = b"%d" % _SF_MAX
#: The most distinct quotas whose ``RateLimit-Policy`` field is kept ready (per limiter).
_POLICY_CACHE = 256
_MISSING: Any = object()


def format_retry_after(seconds: float | None) -> bytes | None:
    """A ``Retry-After`` delay-seconds value: whole seconds, rounded up (never early).

    ``None``, negative, NaN or infinite inputs give ``None`` (send no header).

    Example:
        >>> format_retry_after(0.2), format_retry_after(float("inf"))
        (b'1', None)
    """
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return str(math.ceil(seconds)).encode("ascii")


def _sf_string(text: str) -> bytes:
    """A structured-field string (RFC 8941 §3.3.3), dropping characters it cannot carry."""
    clean = "".join(c for c in text if " " <= c <= "~")
    return b'"' + clean.replace("\\", "\\\\").replace('"', '\\"').encode("ascii") + b'"'


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


class RateLimitFields:
    """The fields of ``limiter``'s decisions (its ``name``, ``rate`` and ``per`` read once)."""

    def __init__(self, limiter: Any) -> None:
        name = getattr(limiter, "name", None)
        self.name_text = name if isinstance(name, str) and name else "default"
        self.name = _sf_string(self.name_text)
        rate = _number(getattr(limiter, "rate", None))
        per = _number(getattr(limiter, "per", None))
        self.rate_per = (rate, per) if rate and per else None
        self._policies: dict[int, tuple[bytes, bytes] | None] = {}

    def fields(self, decision: Any, denied_after: bytes | None) -> Headers:
        """``[(b"ratelimit-policy", ...), (b"ratelimit", ...)]`` for ``decision``
        (``denied_after``: the refusal's ``Retry-After`` value, ``None`` when admitted)."""
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
                state = (b"ratelimit", self.name + b";r=%d;t=%d" % (remaining, math.ceil(reset)))
                return [state] if policy is None else [policy, state]
        return self._any_fields(decision, denied_after)

    def _policy_field(self, limit: float | None) -> tuple[bytes, bytes] | None:
        """The ``RateLimit-Policy`` field for a quota of ``limit`` (``None``: unknown)."""
        if self.rate_per is not None:
            rate, per = self.rate_per
            quota = limit if limit is not None else rate
            q = math.floor(quota)
            w = math.ceil(per * quota / rate)
            if q > _SF_MAX or w > _SF_MAX:
                q, w = min(q, _SF_MAX), min(w, _SF_MAX)
            return (b"ratelimit-policy", self.name + b";q=%d;w=%d" % (q, w))
        if limit is not None:
            q = math.floor(limit)
            if q > _SF_MAX:
                q = _SF_MAX
            return (b"ratelimit-policy", self.name + b";q=%d" % q)
        return None

    def _any_fields(self, decision: Any, denied_after: bytes | None) -> Headers:
        """:meth:`fields` for any decision (duck-typed, multi-window, refused)."""
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
            if reset is None and self.rate_per is not None and limit is not None:
                rate, per = self.rate_per
                reset = max(0.0, limit - remaining) * per / rate
            t = format_retry_after(reset) or b"0"
        if len(t) > 15:  # a Retry-After beyond the sf-integer range
            t = _SF_MAX_BYTES
        out.append((b"ratelimit", self.name + b";r=%d;t=" % r + t))
        return out

    def _window_fields(self, windows: Sequence[Any], denied: bool) -> Headers:
        """One ``RateLimit-Policy`` and one ``RateLimit`` item per window of a multi-window
        decision (``"<limiter>/<window>"``); a window that refused gives its own retry-after as
        ``t``, the others the seconds until they are full again."""
        policies: list[bytes] = []
        states: list[bytes] = []
        for w in windows:
            item = _sf_string(f"{self.name_text}/{w.name}")
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
