"""httpx transports that run every request through a resilience pipeline.

``ResilientTransport`` / ``AsyncResilientTransport`` wrap any inner httpx transport. The pipeline
sees each *attempt* as a call returning an :class:`httpx.Response` (so a ``Retry``'s
``on_result`` can look at status codes, and a breaker counts failures) or raising an httpx
error. :func:`http_retry` builds the retry policy HTTP usually wants.

What the transports guarantee:

* A response that is retried is closed before the next attempt (no pool exhaustion), and every
  response the caller does not get is closed.
* A request is re-sent only when that is safe: its body is replayable (bytes, not a generator
  or async iterator), and its method is idempotent (``GET``, ``HEAD``, ``OPTIONS``, ``PUT``,
  ``DELETE``, ``TRACE``) or it carries an ``Idempotency-Key`` (``idempotency_key=True`` adds
  one, the same on every attempt) or the previous attempt failed to connect (nothing was sent).
  When a retry policy asks for an unsafe re-send anyway, the previous outcome is returned or
  raised as is.
* Each attempt's timeouts are capped by the remaining deadline (:func:`resilience.remaining`,
  published by ``rs.Timeout`` or an inbound-deadline middleware) and at 10**8 s (about three
  years: a far-off deadline never overflows the socket timeout); an expired deadline raises
  :class:`resilience.TimeoutExceededError` without sending.
* The server's delay hint (``Retry-After`` as seconds or an HTTP-date, else the ``t`` of an
  exhausted IETF ``RateLimit`` quota; malformed values are ignored) is attached to each
  response, so *any* :class:`resilience.Retry` in the pipeline, not only :func:`http_retry`,
  waits as long as the server asked (within the deadline) before retrying that response. A
  ``retry_after=`` hook given to the ``Retry`` wins.
* An open circuit breaker in the pipeline raises :class:`resilience.CircuitOpenError` before
  anything is sent.
* Events carry the operation name ``"<METHOD> <host[:port]>"``. Re-sends are recorded on the
  current OpenTelemetry span (if ``opentelemetry`` is in use) as ``resilience.http.resend``
  events with ``http.request.resend_count``; the official httpx instrumentation, wrapping the
  inner transport, still produces one client span per attempt.

Example:
    >>> import httpx, resilience as rs
    >>> from interceptors.httpx import ResilientTransport, http_retry
    >>> def handler(request):
    ...     return httpx.Response(200, text="hello")
    >>> transport = ResilientTransport(
    ...     rs.Pipeline(rs.Timeout(10), http_retry(attempts=3)),
    ...     transport=httpx.MockTransport(handler),
    ... )
    >>> with httpx.Client(transport=transport) as client:
    ...     client.get("http://service.local/").text
    'hello'
"""

from __future__ import annotations

import re
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from resilience._clock import Clock, RandomLike, resolve_clock
from resilience._deadline import MAX_TIMEOUT, remaining
from resilience._policy import Policy
from resilience._types import method_names, positive_number, status_codes
from resilience.backoff import Backoff, exponential
from resilience.budget import Budget
from resilience.errors import ConfigurationError, TimeoutExceededError
from resilience.events import Listener
from resilience.retry import Retry, attach_retry_after, retry_after_attribute

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRY_STATUSES",
    "AsyncResilientTransport",
    "ResilientTransport",
    "http_retry",
    "may_resend",
    "parse_retry_after",
    "server_delay",
]

#: Methods whose requests may be re-sent without an ``Idempotency-Key`` (RFC 9110 §9.2.2).
IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
#: Statuses :func:`http_retry` retries by default.
RETRY_STATUSES: frozenset[int] = frozenset({429, 502, 503, 504})
_KEYED_METHODS = frozenset({"POST", "PATCH"})
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_MAX_OPERATIONS = 1024


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
    return request.method in _KEYED_METHODS and "idempotency-key" in request.headers


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


def _hint_hook(clock: Clock, max_delay: float | None) -> Callable[[object], float | None]:
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
    allows. The delay is the server's when it sent one (``Retry-After`` as seconds or an
    HTTP-date, else the ``t`` of an exhausted IETF ``RateLimit`` quota; malformed values are
    ignored), else the ``backoff``'s (exponential, full jitter, 0.1 s initial, 5 s cap); a
    server delay above ``max_retry_after`` seconds ends retrying with the response at hand.
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
        retry_after=_hint_hook(clk, max_retry_after),
        name=name,
        clock=clk,
        random=random,
        listeners=listeners,
    )


# -- the transports -------------------------------------------------------------------------


class _Unsafe(BaseException):
    """Raised inside the pipeline to stop an unsafe re-send (a BaseException: never retried)."""


class _Attempts:
    """Per-request state shared by the attempts of one request."""

    __slots__ = ("error", "last", "n", "request", "timeout")

    def __init__(self, request: httpx.Request) -> None:
        self.request = request
        self.n = 0
        self.last: httpx.Response | None = None
        self.error: BaseException | None = None
        self.timeout: Any = request.extensions.get("timeout")


def _trace_resend(request: httpx.Request, count: int) -> None:
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(
            "resilience.http.resend",
            {
                "http.request.resend_count": count,
                "http.request.method": request.method,
                "server.address": request.url.host,
            },
        )


class _Core:
    """What the sync and async transports share: configuration and per-attempt decisions."""

    def __init__(
        self,
        pipeline: Policy | None,
        per_host: Callable[[str], Policy] | None,
        idempotency_key: bool,
        methods: Collection[str],
        clock: Clock | None,
    ) -> None:
        if pipeline is not None and not isinstance(pipeline, Policy):
            raise ConfigurationError(
                f"pipeline must be a resilience policy or Pipeline, got {pipeline!r}"
            )
        if per_host is not None and not callable(per_host):
            raise ConfigurationError(
                f"per_host must be a callable returning a policy for a host, got {per_host!r}"
            )
        if pipeline is None and per_host is None:
            raise ConfigurationError("give a pipeline, a per_host factory, or both")
        self.pipeline = pipeline
        self._per_host = per_host
        self._auto_key = bool(idempotency_key)
        self._methods = method_names(methods, "methods")
        self._clock = resolve_clock(clock)
        self._hosts: dict[str, Policy] = {}
        self._ops: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def host_policy(self, host: str) -> Policy | None:
        """The per-host policy for ``host`` (built once per host by ``per_host``)."""
        if self._per_host is None:
            return None
        policy = self._hosts.get(host)
        if policy is None:
            with self._lock:
                policy = self._hosts.get(host)
                if policy is None:
                    policy = self._per_host(host)
                    if not isinstance(policy, Policy):
                        raise ConfigurationError(
                            f"per_host({host!r}) must return a resilience policy, got {policy!r}"
                        )
                    self._hosts[host] = policy
        return policy

    def _compose(self, request: httpx.Request, make: Callable[[str], Any]) -> Any:
        host = request.url.netloc.decode("ascii", "replace")
        key = (request.method, host)
        wrapped = self._ops.get(key)
        if wrapped is None:
            fn = make(f"{request.method} {host}")
            hp = self.host_policy(host)
            if hp is not None:
                fn = hp(fn)
            wrapped = self.pipeline(fn) if self.pipeline is not None else fn
            if len(self._ops) < _MAX_OPERATIONS:
                self._ops[key] = wrapped
        return wrapped

    def _prepare(self, request: httpx.Request) -> _Attempts:
        if (
            self._auto_key
            and request.method in _KEYED_METHODS
            and "idempotency-key" not in request.headers
        ):
            request.headers["Idempotency-Key"] = str(uuid.uuid4())
        return _Attempts(request)

    def _received(self, att: _Attempts, response: httpx.Response) -> None:
        """Keep the attempt's response; attach the server's delay hint for any Retry."""
        response.request = att.request  # transports leave it unset; on_result reads it
        att.last = response
        headers = response.headers
        if "retry-after" in headers or "ratelimit" in headers:
            delay = server_delay(headers, self._clock.time())
            if delay is not None:
                attach_retry_after(response, delay)

    def _begin(self, att: _Attempts) -> httpx.Response | None:
        """Start an attempt: check a re-send is safe, apply the deadline.

        Returns the previous response, which the caller closes before sending again.
        """
        att.n += 1
        request = att.request
        prev = None
        if att.n > 1:
            if not may_resend(request, att.error, self._methods):
                raise _Unsafe
            prev, att.last, att.error = att.last, None, None
            _trace_resend(request, att.n - 1)
        left = remaining()
        if left is not None:
            if left <= 0:
                raise TimeoutExceededError("the deadline expired before the request was sent")
            left = min(left, MAX_TIMEOUT)  # a far deadline must not overflow the socket timeout
            base = att.timeout if isinstance(att.timeout, dict) else {}
            request.extensions["timeout"] = {
                k: left if base.get(k) is None else min(base[k], left)
                for k in ("connect", "read", "write", "pool")
            }
        elif att.n > 1 and att.timeout is not None:
            request.extensions["timeout"] = att.timeout
        return prev


class ResilientTransport(_Core, httpx.BaseTransport):
    """An :class:`httpx.BaseTransport` running each request through ``pipeline``.

    Args:
        pipeline: policies around every request (e.g. ``rs.Pipeline(rs.Timeout(10),
            http_retry())``); optional when ``per_host`` is given.
        transport: the inner transport (default ``httpx.HTTPTransport()``).
        per_host: ``host -> policy`` factory, called once per ``host[:port]``; its policy runs
            inside ``pipeline`` (per attempt), the place for per-host breakers and limiters.
        idempotency_key: add an ``Idempotency-Key`` (a UUID, the same on every attempt) to
            ``POST`` / ``PATCH`` requests that have none, making them safe to re-send.
        methods: methods re-sent without a key.
        clock: wall-clock source for ``Retry-After`` HTTP-dates.

    Example:
        >>> import httpx, resilience as rs
        >>> transport = ResilientTransport(http_retry(), transport=httpx.MockTransport(
        ...     lambda request: httpx.Response(204)))
        >>> httpx.Client(transport=transport).get("http://a.local/").status_code
        204
    """

    def __init__(
        self,
        pipeline: Policy | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        per_host: Callable[[str], Policy] | None = None,
        idempotency_key: bool = False,
        methods: Collection[str] = IDEMPOTENT_METHODS,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(pipeline, per_host, idempotency_key, methods, clock)
        if transport is not None and not isinstance(transport, httpx.BaseTransport):
            raise ConfigurationError(
                f"transport must be an httpx.BaseTransport, got {transport!r}"
                + (
                    " (use AsyncResilientTransport for async transports)"
                    if isinstance(transport, httpx.AsyncBaseTransport)
                    else ""
                )
            )
        self.transport = transport if transport is not None else httpx.HTTPTransport()

    def _make(self, op: str) -> Callable[[_Attempts], httpx.Response]:
        inner = self.transport
        begin = self._begin
        received = self._received

        def attempt(att: _Attempts) -> httpx.Response:
            prev = begin(att)
            if prev is not None:
                prev.close()
            try:
                response = inner.handle_request(att.request)
            except Exception as exc:
                att.error = exc
                if isinstance(exc, httpx.RequestError) and exc._request is None:
                    exc.request = att.request  # the retry predicate reads it
                raise
            received(att, response)
            return response

        attempt.__qualname__ = attempt.__name__ = op
        return attempt

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the pipeline."""
        att = self._prepare(request)
        try:
            response: httpx.Response = self._compose(request, self._make)(att)
        except _Unsafe:
            if att.error is not None:
                raise att.error from None
            assert att.last is not None
            return att.last
        except BaseException:
            if att.last is not None:
                att.last.close()
            raise
        if att.last is not None and att.last is not response:
            att.last.close()
        return response

    def close(self) -> None:
        """Close the inner transport."""
        self.transport.close()


class AsyncResilientTransport(_Core, httpx.AsyncBaseTransport):
    """The async twin of :class:`ResilientTransport` (same arguments, async inner transport).

    Example:
        >>> import asyncio, httpx, resilience as rs
        >>> async def main() -> int:
        ...     inner = httpx.MockTransport(lambda request: httpx.Response(204))
        ...     async with httpx.AsyncClient(
        ...             transport=AsyncResilientTransport(http_retry(), transport=inner)) as c:
        ...         return (await c.get("http://a.local/")).status_code
        >>> asyncio.run(main())
        204
    """

    def __init__(
        self,
        pipeline: Policy | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        per_host: Callable[[str], Policy] | None = None,
        idempotency_key: bool = False,
        methods: Collection[str] = IDEMPOTENT_METHODS,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(pipeline, per_host, idempotency_key, methods, clock)
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise ConfigurationError(
                f"transport must be an httpx.AsyncBaseTransport, got {transport!r}"
            )
        self.transport = transport if transport is not None else httpx.AsyncHTTPTransport()

    def _make(self, op: str) -> Callable[[_Attempts], Awaitable[httpx.Response]]:
        inner = self.transport
        begin = self._begin
        received = self._received

        async def attempt(att: _Attempts) -> httpx.Response:
            prev = begin(att)
            if prev is not None:
                await prev.aclose()
            try:
                response = await inner.handle_async_request(att.request)
            except Exception as exc:
                att.error = exc
                if isinstance(exc, httpx.RequestError) and exc._request is None:
                    exc.request = att.request  # the retry predicate reads it
                raise
            received(att, response)
            return response

        attempt.__qualname__ = attempt.__name__ = op
        return attempt

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the pipeline."""
        att = self._prepare(request)
        try:
            response: httpx.Response = await self._compose(request, self._make)(att)
        except _Unsafe:
            if att.error is not None:
                raise att.error from None
            assert att.last is not None
            return att.last
        except BaseException:
            if att.last is not None:
                await att.last.aclose()
            raise
        if att.last is not None and att.last is not response:
            await att.last.aclose()
        return response

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.transport.aclose()
