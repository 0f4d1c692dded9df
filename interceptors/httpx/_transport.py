"""The sync and async transports: one composition per operation, safe re-sends, deadlines.

Sending is written once, as async code (``_AsyncSend``); the sync ``_SyncSend`` is generated
from it by ``scripts/twins.py``.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeAlias

import httpx

from resilience import Policy, attach_retry_after, cap_to_deadline
from resilience._clock import Clock, resolve_clock
from resilience._types import check_listeners, method_names
from resilience.errors import ConfigurationError, TimeoutExceededError
from resilience.events import Listener

from ._hints import IDEMPOTENT_METHODS, KEYED_METHODS, SENDING, may_resend, server_delay

__all__ = ["AsyncResilientTransport", "ResilientTransport"]

_MAX_OPERATIONS = 1024


# -- the transports -------------------------------------------------------------------------


class _Unsafe(BaseException):
    """Raised inside the pipeline to stop an unsafe re-send (a BaseException: never retried)."""


class _Attempts:
    """Per-request state shared by the attempts of one request."""

    __slots__ = ("error", "last", "methods", "n", "received", "request", "stale", "timeout")

    def __init__(
        self,
        request: httpx.Request,
        methods: Collection[str],
        received: Callable[[_Attempts, httpx.Response], None],
    ) -> None:
        self.request = request
        self.methods = methods
        #: the transport's bookkeeping of a response received (an injected one included)
        self.received = received
        self.n = 0
        self.last: httpx.Response | None = None
        self.error: BaseException | None = None
        self.timeout: Any = request.extensions.get("timeout")
        #: responses of concurrent (hedged) attempts replaced in ``last``, closed at the end
        self.stale: list[httpx.Response] | None = None

    def __resilience_may_hedge__(self) -> bool:
        """A ``rs.Hedge`` may send this request twice (idempotent, or with a key)."""
        return may_resend(self.request, None, self.methods)

    def __resilience_injected__(self, outcome: object) -> object:
        """What a chaos policy injects instead of sending, made what a real attempt gives: an
        httpx error or response tied to the request being sent (the retry predicates read it),
        recorded as this attempt's outcome (the re-send check, the responses closed at the
        end), a response's delay hint attached."""
        self.n += 1
        if isinstance(outcome, httpx.Response):
            self.received(self, outcome)
        elif isinstance(outcome, BaseException):
            self.error = outcome
            if isinstance(outcome, httpx.RequestError):
                try:
                    outcome.request  # noqa: B018 - raises RuntimeError while unset
                except RuntimeError:
                    outcome.request = self.request
        return outcome

    def leftovers(self, keep: object) -> list[httpx.Response]:
        """Every response received and not returned (``keep``), to close."""
        out = [r for r in self.stale or () if r is not keep]
        if self.last is not None and self.last is not keep:
            out.append(self.last)
        return out


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


_AsyncInner: TypeAlias = httpx.AsyncBaseTransport
_SyncInner: TypeAlias = httpx.BaseTransport
#: inner transport kind -> (the other kind, the wrapper for that one, the default inner transport)
_KINDS: dict[type, tuple[type, str, Callable[[], Any]]] = {
    httpx.BaseTransport: (httpx.AsyncBaseTransport, "AsyncResilientTransport", httpx.HTTPTransport),
    httpx.AsyncBaseTransport: (httpx.BaseTransport, "ResilientTransport", httpx.AsyncHTTPTransport),
}


def _inner(transport: object, kind: type) -> Any:
    """``transport`` checked to be a ``kind`` (``None``: httpx's default transport of that kind)."""
    other, wrapper, default = _KINDS[kind]
    if transport is None:
        return default()
    if not isinstance(transport, kind):
        hint = f" (use {wrapper} for that transport)" if isinstance(transport, other) else ""
        raise ConfigurationError(
            f"transport must be an httpx.{kind.__name__}, got {transport!r}{hint}"
        )
    return transport


class _Core:
    """What the sync and async transports share: configuration and per-attempt decisions."""

    def __init__(
        self,
        pipeline: Policy | None,
        per_host: Callable[[str], Policy] | None,
        idempotency_key: bool,
        methods: Collection[str],
        clock: Clock | None,
        listeners: Sequence[Listener],
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
        self.listeners = check_listeners(listeners)
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

    def _compose(self, request: httpx.Request, make: Callable[[], Any]) -> Any:
        host = request.url.netloc.decode("ascii", "replace")
        key = (request.method, host)
        wrapped = self._ops.get(key)
        if wrapped is None:
            op = f"{request.method} {host}"
            wrapped = make()  # one attempt function (one composition) per operation
            hp = self.host_policy(host)
            if hp is not None:
                wrapped = hp.wrap(wrapped, operation=op, listeners=self.listeners)
            if self.pipeline is not None:
                wrapped = self.pipeline.wrap(wrapped, operation=op, listeners=self.listeners)
            if len(self._ops) < _MAX_OPERATIONS:
                self._ops[key] = wrapped
        return wrapped

    def _prepare(self, request: httpx.Request) -> _Attempts:
        if (
            self._auto_key
            and request.method in KEYED_METHODS
            and "idempotency-key" not in request.headers
        ):
            request.headers["Idempotency-Key"] = str(uuid.uuid4())
        return _Attempts(request, self._methods, self._received)

    def _received(self, att: _Attempts, response: httpx.Response) -> None:
        """Keep the attempt's response; attach the server's delay hint for any Retry."""
        response.request = att.request  # transports leave it unset; on_result reads it
        if att.last is not None:  # a concurrent (hedged) attempt's response, not yet closed
            if att.stale is None:
                att.stale = []
            att.stale.append(att.last)
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
        left = cap_to_deadline()  # at most 10**8 s: a far deadline must not overflow a socket
        if left is not None:
            if left <= 0:
                raise TimeoutExceededError("the deadline expired before the request was sent")
            base = att.timeout if isinstance(att.timeout, dict) else {}
            request.extensions["timeout"] = {
                k: left if base.get(k) is None else min(base[k], left)
                for k in ("connect", "read", "write", "pool")
            }
        elif att.n > 1 and att.timeout is not None:
            request.extensions["timeout"] = att.timeout
        return prev


# twin: async _AsyncSend=_SyncSend, _AsyncInner=_SyncInner, handle_async_request=handle_request
class _AsyncSend(_Core):
    """Construction and sending, written once for both transports (the async one is the source)."""

    transport: _AsyncInner

    def __init__(
        self,
        pipeline: Policy | None = None,
        *,
        transport: _AsyncInner | None = None,
        per_host: Callable[[str], Policy] | None = None,
        idempotency_key: bool = False,
        methods: Collection[str] = IDEMPOTENT_METHODS,
        clock: Clock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(pipeline, per_host, idempotency_key, methods, clock, listeners)
        self.transport = _inner(transport, _AsyncInner)

    def _make(self) -> Callable[[_Attempts], Any]:
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
                if isinstance(exc, httpx.RequestError):
                    try:
                        exc.request  # noqa: B018 - raises RuntimeError while unset
                    except RuntimeError:
                        exc.request = att.request  # the retry predicate reads it
                raise
            received(att, response)
            return response

        return attempt

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the pipeline."""
        att = self._prepare(request)
        token = SENDING.set(att)
        try:
            response: httpx.Response = await self._compose(request, self._make)(att)
        except _Unsafe:
            if att.error is not None:
                raise att.error from None
            assert att.last is not None
            return att.last
        except BaseException:
            for left in att.leftovers(None):
                await left.aclose()
            raise
        finally:
            SENDING.reset(token)
        if att.last is not response or att.stale is not None:
            for left in att.leftovers(response):
                await left.aclose()
        return response

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.transport.aclose()


# twin: end
# twin: sync (generated from the block above by scripts/twins.py; do not edit)
class _SyncSend(_Core):
    """Construction and sending, written once for both transports (the async one is the source)."""

    transport: _SyncInner

    def __init__(
        self,
        pipeline: Policy | None = None,
        *,
        transport: _SyncInner | None = None,
        per_host: Callable[[str], Policy] | None = None,
        idempotency_key: bool = False,
        methods: Collection[str] = IDEMPOTENT_METHODS,
        clock: Clock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(pipeline, per_host, idempotency_key, methods, clock, listeners)
        self.transport = _inner(transport, _SyncInner)

    def _make(self) -> Callable[[_Attempts], Any]:
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
                if isinstance(exc, httpx.RequestError):
                    try:
                        exc.request  # noqa: B018 - raises RuntimeError while unset
                    except RuntimeError:
                        exc.request = att.request  # the retry predicate reads it
                raise
            received(att, response)
            return response

        return attempt

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the pipeline."""
        att = self._prepare(request)
        token = SENDING.set(att)
        try:
            response: httpx.Response = self._compose(request, self._make)(att)
        except _Unsafe:
            if att.error is not None:
                raise att.error from None
            assert att.last is not None
            return att.last
        except BaseException:
            for left in att.leftovers(None):
                left.close()
            raise
        finally:
            SENDING.reset(token)
        if att.last is not response or att.stale is not None:
            for left in att.leftovers(response):
                left.close()
        return response

    def close(self) -> None:
        """Close the inner transport."""
        self.transport.close()


# twin: end


class ResilientTransport(_SyncSend, httpx.BaseTransport):
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
        listeners: receive the events of the policies of ``pipeline`` and of the ``per_host``
            policies (besides their own listeners), with ``operation`` ``"METHOD host"``.

    Example:
        >>> import httpx, resilience as rs
        >>> from interceptors.httpx import ResilientTransport, http_retry
        >>> transport = ResilientTransport(http_retry(), transport=httpx.MockTransport(
        ...     lambda request: httpx.Response(204)))
        >>> httpx.Client(transport=transport).get("http://a.local/").status_code
        204
    """


class AsyncResilientTransport(_AsyncSend, httpx.AsyncBaseTransport):
    """The async twin of :class:`ResilientTransport` (same arguments, async inner transport).

    Example:
        >>> import asyncio, httpx, resilience as rs
        >>> from interceptors.httpx import AsyncResilientTransport, http_retry
        >>> async def main() -> int:
        ...     inner = httpx.MockTransport(lambda request: httpx.Response(204))
        ...     async with httpx.AsyncClient(
        ...             transport=AsyncResilientTransport(http_retry(), transport=inner)) as c:
        ...         return (await c.get("http://a.local/")).status_code
        >>> asyncio.run(main())
        204
    """
