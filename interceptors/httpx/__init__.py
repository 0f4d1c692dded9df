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

from ._breaker import BREAKER_STATUSES, http_breaker, is_backpressure
from ._hints import (
    IDEMPOTENT_METHODS,
    RETRY_STATUSES,
    http_retry,
    may_resend,
    parse_retry_after,
    server_delay,
)
from ._transport import AsyncResilientTransport, ResilientTransport

__all__ = [
    "BREAKER_STATUSES",
    "IDEMPOTENT_METHODS",
    "RETRY_STATUSES",
    "AsyncResilientTransport",
    "ResilientTransport",
    "http_breaker",
    "http_retry",
    "is_backpressure",
    "may_resend",
    "parse_retry_after",
    "server_delay",
]
