"""Retry hints for HTTP: when a request may be re-sent, server delay hints, ``http_retry``."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from contextvars import ContextVar
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Protocol

import httpx

from resilience import Budget, Retry, retry_after_attribute
from resilience._clock import Clock, RandomLike, resolve_clock
from resilience._types import method_names, positive_number, status_codes
from resilience.backoff import Backoff, exponential
from resilience.errors import TimeoutExceededError
from resilience.events import Listener

__all__ = [
    "IDEMPOTENT_METHODS",
    "KEYED_METHODS",
    "RETRY_STATUSES",
    "hint_hook",
    "http_retry",
    "may_resend",
    "parse_retry_after",
    "server_delay",
]

#: Methods whose requests may be re-sent without an ``Idempotency-Key`` (RFC 9110 §9.2.2).
IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
#: Statuses :func:`http_retry` retries by default.
RETRY_STATUSES: frozenset[int] = frozenset({429, 502, 503, 504})
#: Methods that may be re-sent when they carry an ``Idempotency-Key``.
KEYED_METHODS = frozenset({"POST", "PATCH"})
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class Sending(Protocol):
    """What a resilient transport publishes about the request it is sending."""

    request: httpx.Request
    #: the transport's ``methods=`` (re-sent without a key)
    methods: Collection[str]


#: The request a resilient transport is sending (its pipeline runs inside): what a retry
#: predicate looks at for an error that carries no request (a per-attempt Timeout's).
SENDING: ContextVar[Sending | None] = ContextVar("resilience_http_sending", default=None)


# -- when may a request be sent again ------------------------------------------------------


def _replayable(request: httpx.Request) -> bool:
    return isinstance(request.stream, httpx.ByteStream)


def may_resend(
    request: httpx.Request,
    error: BaseException | None = None,
    methods: Collection[str] = IDEMPOTENT_METHODS,
) -> bool:
    """Whether ``request`` may be sent again after ``error`` (or after a response).

    Example:
        >>> import httpx
        >>> may_resend(httpx.Request("GET", "http://x/"))
        True
        >>> may_resend(httpx.Request("POST", "http://x/", content=b"{}"))
        False
        >>> may_resend(httpx.Request("POST", "http://x/", headers={"Idempotency-Key": "k1"}))
        True
        >>> may_resend(httpx.Request("POST", "http://x/"), httpx.ConnectError("refused"))
        True
    """
    if not _replayable(request):
        return False
    if request.method in methods or isinstance(error, _NOT_SENT):
        return True
    return request.method in KEYED_METHODS and "idempotency-key" in request.headers


# -- server-directed delays -----------------------------------------------------------------

_DIGITS = re.compile(r"\A[0-9]{1,10}\Z")
_RL_ITEM = re.compile(r'\A\s*(?:"(?:[^"\\]|\\.)*"|[A-Za-z*][A-Za-z0-9_.*:%/-]*)((?:\s*;[^;]*)*)\Z')


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or an HTTP-date).

    A date in the past gives ``0.0``; a malformed value gives ``None`` (use the backoff).

    Example:
        >>> parse_retry_after("120", now=0.0)
        120.0
        >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412475.0)
        5.0
        >>> parse_retry_after("soon", now=0.0) is None
        True
    """
    if value is None:
        return None
    value = value.strip()
    if _DIGITS.match(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _ratelimit_reset(value: str | None) -> float | None:
    """The ``t`` of the exhausted quotas in an IETF ``RateLimit`` field (largest), or ``None``."""
    if not value:
        return None
    waits: list[float] = []
    for item in value.split(","):
        m = _RL_ITEM.match(item)
        if m is None:
            return None
        params: dict[str, str] = {}
        for part in m.group(1).split(";")[1:]:
            k, _, v = part.strip().partition("=")
            params[k.strip()] = v.strip()
        r, t = params.get("r"), params.get("t")
        if t is None or not _DIGITS.match(t):
            continue
        if r is not None and r.strip() == "0":
            waits.append(float(t))
    return max(waits) if waits else None


def server_delay(headers: httpx.Headers, now: float) -> float | None:
    """The server's delay hint in response headers, or ``None`` (malformed values are ignored).

    ``Retry-After`` (seconds or an HTTP-date; present exactly once), else the ``t`` of an
    exhausted IETF ``RateLimit`` quota.

    Example:
        >>> server_delay(httpx.Headers({"Retry-After": "3"}), now=0.0)
        3.0
        >>> server_delay(httpx.Headers({"RateLimit": '"q";r=0;t=7'}), now=0.0)
        7.0
        >>> server_delay(httpx.Headers({"Retry-After": "soon"}), now=0.0) is None
        True
    """
    values = headers.get_list("retry-after")
    delay = parse_retry_after(values[0], now) if len(values) == 1 else None
    if delay is None:
        delay = _ratelimit_reset(headers.get("ratelimit"))
    return delay


def hint_hook(clock: Clock, max_delay: float | None) -> Callable[[object], float | None]:
    def retry_after(outcome: object) -> float | None:
        if isinstance(outcome, httpx.Response):
            delay = server_delay(outcome.headers, clock.time())
        else:
            delay = retry_after_attribute(outcome)
        if delay is not None and max_delay is not None and delay > max_delay:
            return -1.0  # the server asks for longer than we wait: give up with this outcome
        return delay

    return retry_after


def http_retry(
    *,
    attempts: int = 3,
    statuses: Collection[int] = RETRY_STATUSES,
    methods: Collection[str] = IDEMPOTENT_METHODS,
    backoff: Backoff | None = None,
    max_retry_after: float | None = 60.0,
    max_elapsed: float | None = None,
    budget: Budget | None = None,
    name: str = "http_retry",
    clock: Clock | None = None,
    random: RandomLike | None = None,
    listeners: Sequence[Listener] = (),
) -> Retry:
    """A :class:`resilience.Retry` with HTTP defaults, for the resilient transports.

    Retries responses whose status is in ``statuses`` (429, 502, 503, 504) and transport errors
    (connect failures, timeouts, broken connections), only for requests :func:`may_resend`
    allows. A :class:`resilience.TimeoutExceededError` raised by a ``rs.Timeout`` *inside* the
    retry (a per-attempt timeout: ``rs.Pipeline(http_retry(), rs.Timeout(2))``) is a failed
    attempt too: it is retried for requests that may be re-sent after a response (idempotent
    methods, or a ``POST`` / ``PATCH`` with an ``Idempotency-Key``; the request may have
    reached the server), within ``attempts``, ``max_elapsed`` and the enclosing deadline.

    The delay is the server's when it sent one (``Retry-After`` as seconds or an HTTP-date,
    else the ``t`` of an exhausted IETF ``RateLimit`` quota; malformed values are ignored),
    else the ``backoff``'s (exponential, full jitter, 0.1 s initial, 5 s cap); a server delay
    above ``max_retry_after`` seconds ends retrying with the response at hand.
    ``on_result`` receives the :class:`httpx.Response`.

    Example:
        >>> import resilience as rs
        >>> retry = http_retry(attempts=4, statuses={503})
        >>> retry.attempts
        4
    """
    statuses = status_codes(statuses, "statuses")
    methods = method_names(methods, "methods")
    if max_retry_after is not None:
        max_retry_after = positive_number(max_retry_after, "max_retry_after", allow_zero=True)
    clk = resolve_clock(clock)

    def on_error(exc: BaseException) -> bool:
        if isinstance(exc, TimeoutExceededError):
            # a per-attempt Timeout's (it names its policy); the transport's own "deadline
            # expired before sending" names none: the deadline is gone, nothing to retry
            sending = SENDING.get()
            return (
                bool(exc.policy)
                and sending is not None
                and may_resend(sending.request, None, methods)
                and may_resend(sending.request, None, sending.methods)  # the transport agrees
            )
        if not isinstance(exc, httpx.TransportError) or isinstance(
            exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError
        ):
            return False
        try:
            request = exc.request
        except RuntimeError:
            return False
        return may_resend(request, exc, methods)

    def on_result(response: object) -> bool:
        return (
            isinstance(response, httpx.Response)
            and response.status_code in statuses
            and may_resend(response.request, None, methods)
        )

    return Retry(
        on=on_error,
        attempts=attempts,
        backoff=backoff if backoff is not None else exponential(initial=0.1, maximum=5.0),
        max_elapsed=max_elapsed,
        budget=budget,
        on_result=on_result,
        retry_after=hint_hook(clk, max_retry_after),
        name=name,
        clock=clk,
        random=random,
        listeners=listeners,
    )
