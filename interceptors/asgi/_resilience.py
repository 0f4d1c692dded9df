"""``ResilienceMiddleware``: run each HTTP request through a server-side pipeline."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from interceptors.errors import classify, retry_delay
from resilience import Policy, publish_deadline, refused_by_policy, reset_deadline
from resilience._clock import Clock, resolve_clock
from resilience._types import Duration, check_listeners, header_names
from resilience.errors import ConfigurationError, TimeoutExceededError
from resilience.events import Listener
from resilience.idempotency import CURRENT_CALLER, CallerScope

from .._deadline import DEFAULT_MAX_DEADLINE, check_max_deadline, clamp_inbound
from ._common import (
    PROBLEM_BASE,
    ASGIApp,
    Message,
    Receive,
    RouteFilter,
    Scope,
    Send,
    format_retry_after,
    mark_refused,
    parse_timeout,
    refusal_row,
    send_problem,
    send_refusal,
)
from ._idempotency import default_principal

__all__ = ["ResilienceMiddleware", "ServerErrorResponse"]

_MAX_OPERATIONS = 256
_NOT_REPLAYABLE = (
    "a request with this idempotency key already completed; an Idempotent policy does not "
    "store the response (IdempotencyMiddleware replays responses)"
)


class ServerErrorResponse(Exception):
    """Raised *inside* the pipeline after the app completed a response counted as a failure.

    The app returned normally but answered with a failure status (5xx by default), so circuit
    breakers in the pipeline must see a failure. The response has already been sent when this
    is raised; the middleware swallows it after the pipeline has recorded it. Configure a
    breaker's ``on=`` with this class to count such responses.

    Example:
        >>> ServerErrorResponse(502).status
        502
    """

    def __init__(self, status: int) -> None:
        super().__init__(f"the application answered {status}")
        self.status = status


class _Responder:
    """Per-request ``send`` wrapper: forwards every message at once, remembers the status.

    A plain callable returning the server's ``send`` awaitable (what the app awaits), so that
    forwarding a message adds no coroutine of its own.
    """

    __slots__ = ("send", "started", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False
        self.status = 0

    def __call__(self, message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            if self.started:
                raise RuntimeError("the application sent http.response.start twice")
            self.started = True
            self.status = message["status"]
        return self.send(message)


def _contains(description: dict[str, Any], kind: str) -> bool:
    if description.get("kind") == kind:
        return True
    return any(_contains(p, kind) for p in description.get("policies", ()))


class ResilienceMiddleware:
    """Run each HTTP request through a server-side pipeline (pure ASGI).

    Policy refusals become problem+json responses per :data:`interceptors.errors.ERROR_TABLE`
    (the table the gRPC interceptors use): ``RateLimitedError`` → 429, ``CircuitOpenError`` /
    ``BulkheadFullError`` / ``StoreError`` → 503, ``TimeoutExceededError`` → 504, idempotency
    conflicts → 409 / 422, with ``Retry-After`` when the error carries ``retry_after``.
    ``lifespan``, ``websocket`` and unknown scopes pass through untouched, as do requests not
    selected by ``include`` / ``exclude`` / ``when``.

    Streaming responses are forwarded message by message (never buffered). Once the response
    has started, the status can no longer change: an exception raised after that point (the
    app's own, or a ``TimeoutExceededError`` that cancelled a streaming body) is re-raised so
    that the server aborts the connection and the client sees a truncated response; no second
    ``http.response.start`` is ever sent. App exceptions propagate unchanged, after the
    pipeline's policies released their permits and recorded the failure. A completed response
    whose status matches ``failure_status`` (5xx by default) counts as a failure for the
    pipeline (as :class:`ServerErrorResponse`), without changing what the client received.

    An inbound deadline header (``Request-Timeout`` / ``X-Request-Timeout`` by default, in
    seconds, or the ``grpc-timeout`` form like ``250m``) becomes the request's deadline:
    handlers and outbound adapters see it through :func:`resilience.remaining`. An already
    expired deadline (``0``) is answered with 504 without running the app. The client chooses
    that deadline, so it is clamped to ``max_deadline`` (5 minutes by default): an absurd
    ``Request-Timeout: 9999999999`` becomes a 5-minute deadline instead of a value outbound
    transports cannot represent.

    Server pipelines must not contain a :class:`resilience.Retry`: a request body can only be
    read once and a response only sent once.

    An :class:`resilience.Idempotent` in the pipeline is scoped by caller: it runs inside
    :func:`resilience.idempotency.caller_scope` with the ``scope=`` principal (by default a hash
    of the ``Authorization`` header, else the client address, as for
    :class:`IdempotencyMiddleware`), so the same key sent by two callers names two records and
    one caller's outcome is never replayed to another. A request whose ``scope`` is ``None`` is
    not deduplicated (its records are its own). The app itself runs outside that scope:
    idempotent functions it calls keep their own records. The policy stores the outcome of the
    wrapped call, not the response, so a duplicate of a completed request is answered 409
    ``…idempotency#response-not-retained`` with ``Idempotent-Replayed: true`` (the app does
    not run); use :class:`IdempotencyMiddleware` to replay responses.

    Args:
        app: the ASGI application.
        pipeline: the policies (a :class:`resilience.Pipeline` or a single policy).
        include / exclude: path prefixes selecting the requests the pipeline guards.
        when: a predicate over the ASGI scope, also selecting requests.
        deadline_headers: request headers read as an inbound deadline (first present wins);
            ``()`` disables inbound deadlines.
        max_deadline: the furthest inbound deadline honoured, in seconds (default 300); a
            header asking for more gets this. ``None``: no clamp (outbound adapters still cap
            what they hand to a transport).
        operation: maps the scope to the low-cardinality operation name in events (default:
            the HTTP method); at most 256 distinct names are kept, the rest share ``"HTTP"``.
        failure_status: which response statuses count as failures for the pipeline.
        scope: ``callable(asgi_scope) -> str | None`` naming the caller an ``rs.Idempotent`` in
            the pipeline is scoped to (default: the one :class:`IdempotencyMiddleware` uses);
            only called when the pipeline contains one.
        clock: time source of the inbound deadline.
        listeners: receive the events of every policy of ``pipeline`` for the requests it
            guards (besides the policies' own listeners), tagged with the request's
            ``operation``, e.g. a :class:`resilience.testing.RecordingListener` or the
            dashboard's collector.

    Example:
        >>> import resilience as rs
        >>> async def app(scope, receive, send): ...
        >>> app = ResilienceMiddleware(app, pipeline=rs.Pipeline(rs.Timeout(10)))
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        pipeline: Policy,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        when: Callable[[Scope], bool] | None = None,
        deadline_headers: Sequence[str] = ("request-timeout", "x-request-timeout"),
        operation: Callable[[Scope], str] | None = None,
        failure_status: Callable[[int], bool] | None = None,
        max_deadline: Duration | None = DEFAULT_MAX_DEADLINE,
        scope: Callable[[Scope], str | None] = default_principal,
        clock: Clock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        if not isinstance(pipeline, Policy):
            raise ConfigurationError(
                f"pipeline must be a resilience policy or Pipeline, got {pipeline!r}"
            )
        description = pipeline.describe()
        if _contains(description, "retry"):
            raise ConfigurationError(
                "a server pipeline cannot contain a Retry: the request body is read once and "
                "the response sent once; retry on the client side instead"
            )
        if isinstance(deadline_headers, str):
            raise ConfigurationError("deadline_headers must be a sequence of header names")
        self.max_deadline = check_max_deadline(max_deadline)
        self.app = app
        self.pipeline = pipeline
        self._routes = RouteFilter(include, exclude, when)
        self._all_routes = self._routes.everything
        header_names(deadline_headers, "deadline_headers")  # validates; the order is kept
        self._deadline_headers = tuple(h.lower().encode("latin-1") for h in deadline_headers)
        if not callable(scope):
            raise ConfigurationError(
                f"scope must be a callable(asgi_scope) -> str | None, got {scope!r}"
            )
        self.scope_fn = scope
        self._scoped = _contains(description, "idempotency")
        for fn, what in ((operation, "operation"), (failure_status, "failure_status")):
            if fn is not None and not callable(fn):
                raise ConfigurationError(f"{what} must be a callable or None, got {fn!r}")
        self._operation = operation  # None: the HTTP method (read inline)
        self._failure_status = failure_status  # None: 5xx (compared inline)
        self._clock = resolve_clock(clock)
        self.listeners = check_listeners(listeners)
        self._wrapped: dict[str, Callable[[Scope, Receive, _Responder], Awaitable[None]]] = {}

    def _guarded(self, op: str) -> Callable[[Scope, Receive, _Responder], Awaitable[None]]:
        wrapped = self._wrapped.get(op)
        if wrapped is not None:
            return wrapped
        if len(self._wrapped) >= _MAX_OPERATIONS:
            op = "HTTP"
            wrapped = self._wrapped.get(op)
            if wrapped is not None:
                return wrapped
        app = self.app
        failed = self._failure_status

        async def run(scope: Scope, receive: Receive, responder: _Responder) -> None:
            # the caller's scope is for the pipeline's Idempotent, not for the app's own records
            token = None if CURRENT_CALLER.get() is None else CURRENT_CALLER.set(None)
            try:
                await app(scope, receive, responder)
            finally:
                if token is not None:
                    CURRENT_CALLER.reset(token)
            if responder.started:
                status = responder.status
                if status >= 500 if failed is None else failed(status):
                    raise ServerErrorResponse(status)

        wrapped = self.pipeline.wrap(run, operation=op, listeners=self.listeners)
        self._wrapped[op] = wrapped
        return wrapped

    def _inbound_timeout(self, scope: Scope) -> float | None:
        """The request's deadline from its headers, clamped (``None``: none well-formed)."""
        names = self._deadline_headers
        found = {k: v for k, v in scope.get("headers", ()) if k in names}
        for name in names:  # the first header present and well-formed wins
            if name in found:
                timeout = parse_timeout(found[name])
                if timeout is not None:
                    return clamp_inbound(timeout, self.max_deadline)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != "http" or not (self._all_routes or self._routes(scope)):
            await self.app(scope, receive, send)
            return
        # One coroutine for the whole request (each extra await level costs as much as a
        # policy): the deadline headers are looked up only when one of them is present.
        deadline = None
        names = self._deadline_headers
        if names:
            for name, _ in scope.get("headers", ()):
                if name in names:
                    timeout = self._inbound_timeout(scope)
                    if timeout is not None:
                        if timeout <= 0:
                            await send_refusal(
                                send,
                                refusal_row(TimeoutExceededError),
                                detail="the request's deadline had already expired",
                            )
                            return
                        deadline = publish_deadline(timeout, clock=self._clock)
                    break
        try:
            responder = _Responder(send)
            caller = self._caller(scope) if self._scoped else None
            token = None if caller is None else CURRENT_CALLER.set(caller)
            try:
                operation = self._operation
                op: str = scope.get("method", "HTTP") if operation is None else operation(scope)
                wrapped = self._wrapped.get(op)
                if wrapped is None:
                    wrapped = self._guarded(op)
                await wrapped(scope, receive, responder)
                if caller is not None and caller.replayed and not responder.started:
                    await send_problem(
                        send,
                        409,
                        "Response not retained",
                        type_=PROBLEM_BASE + "idempotency#response-not-retained",
                        detail=_NOT_REPLAYABLE,
                        headers=[(b"idempotent-replayed", b"true")],
                    )
            except ServerErrorResponse:
                if not responder.started:  # pragma: no cover - raised only after a start
                    raise
            except Exception as exc:
                row = classify(exc)
                if row is None or responder.started:
                    raise
                if refused_by_policy(exc):  # enclosing RateLimitMiddlewares refund this request
                    mark_refused(scope, exc)
                retry_after = format_retry_after(retry_delay(row, exc))
                headers = [(b"retry-after", retry_after)] if retry_after is not None else []
                await send_refusal(send, row, detail=str(exc) or None, headers=headers)
            finally:
                if token is not None:
                    CURRENT_CALLER.reset(token)
        finally:
            if deadline is not None:
                reset_deadline(deadline)

    def _caller(self, scope: Scope) -> CallerScope:
        """The caller scope of an ``rs.Idempotent`` in the pipeline (own one without principal)."""
        principal: object = self.scope_fn(scope)
        if principal is None:  # not deduplicated: a scope no other request shares
            return CallerScope("\x00request:" + uuid.uuid4().hex)
        if not isinstance(principal, str) or not principal:
            raise ConfigurationError(
                f"scope must return a non-empty str or None, got {principal!r}"
            )
        return CallerScope(principal)
