"""``IdempotencyMiddleware``: the IETF ``Idempotency-Key`` header for any ASGI app.

Behaviour (draft-ietf-httpapi-idempotency-key-header, as Stripe does it):

* Only requests whose method is in ``methods`` (default POST and PATCH) and which
  ``include`` / ``exclude`` / ``when`` select (every request by default) are considered; the
  others and every non-HTTP scope (``lifespan``, ``websocket``) pass through untouched.
* The key: one ``Idempotency-Key`` field holding an sf-string (``"abc"``) or a bare token, 1 to
  255 visible ASCII characters after unquoting. Missing (when ``required``), malformed, or sent
  as two fields → **400** problem+json; nothing is stored and the key is never echoed.
* Records are scoped by principal + method + path + key, so one client's response is never
  replayed to another. The principal comes from ``scope=`` (a callable receiving the ASGI scope
  and returning a ``str``, or ``None`` for "unknown principal": the request then passes
  through without deduplication); the default is a hash of the ``Authorization`` header, else
  the client's socket address. Put authentication *before* this middleware.
* The request is fingerprinted (SHA-256 of content-type, query string and body, hashed as it
  is read); the body is re-delivered to the app byte-identical with its ``more_body`` framing.
  A body over ``max_request_body`` (10 MiB; a ``Content-Length`` over it is refused before
  reading) → **413**. The bodies buffered at once, summed over every in-flight request, stay
  within ``max_buffered_bytes`` (64 MiB): a request whose next chunk does not fit → **503**
  with ``Retry-After: 1``, without reading more; its bytes are released at once, and every
  request's bytes when it completes or its client disconnects.
* First request: runs. A response within ``max_response_bytes`` (1 MiB, the cap every
  idempotency adapter shares), which is buffered for storing anyway, is held (its
  ``http.response.start`` too) until its outcome is stored, with the completion retries while
  the lease is held, and then sent unchanged; if the outcome could not be recorded it carries
  ``Idempotency-Outcome: unrecorded`` (the request ran; a retry after the lease runs it
  again). A larger response streams through unchanged and its outcome (not retained) is
  stored just before the final body chunk is sent; a failure to store it is only logged and
  emitted (``StoreFailed(decision="unrecorded")``). Either way a retry that sees the response
  also sees the record (when it could be stored).
* Duplicate while running → **409** with ``Retry-After`` (or, with ``wait > 0``, a wait for
  the replay): how long requests to that method and path took so far (a smoothed duration
  plus four smoothed deviations, :class:`DurationHints`), rounded up to whole seconds, at
  least 1, at most the lease left on the first request's claim (the lease left until one
  completed); same key with a different request → **422**; completed → replay of the status,
  the allow-listed headers and the byte-identical body, plus ``Idempotent-Replayed: true``.
* What is stored (``store_errors="ambiguous"``, the default, at-most-once): every response
  the handler produced, including 4xx and 500/502/504, and an app exception (replayed as a 500
  problem+json). Released (a retry runs again): 429 and 503 from the handler, statuses listed in
  ``release_statuses``, and every response this middleware generates itself.
  ``store_errors="never"`` also releases on 5xx and exceptions (at-least-once).
* A response larger than ``max_response_bytes`` is recorded as *not retained*: a retry gets
  **409** with problem type ``…#response-not-retained``, never an empty or truncated replay.
* Store failure: ``on_store_error="closed"`` (default) → **503** with ``Retry-After: 1``, the
  app does not run; ``"open"`` → the app runs unprotected, with ``Idempotency-Status:
  unavailable``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from resilience._clock import Clock
from resilience._types import (
    Duration,
    check_listeners,
    header_names,
    method_names,
    positive_int,
    seconds,
    status_codes,
)
from resilience.errors import (
    ConfigurationError,
    StoreError,
)
from resilience.events import (
    CallRejected,
    Event,
    IdempotentReplay,
    Listener,
    Origin,
    StoreFailed,
    emit,
    error_type,
)
from resilience.idempotency import (
    MAX_BUFFERED_BYTES,
    MAX_RESPONSE_BYTES,
    IdempotencyRecords,
)

from .._duration_hints import DurationHints
from ._common import ASGIApp, Message, Receive, RouteFilter, Scope, Send, send_refusal
from ._idempotency_request import default_principal, parse_idempotency_key, read_request
from ._idempotency_response import (
    _IN_PROGRESS,
    _KEY_REUSED,
    _NEVER_REPLAYED,
    _STORE_UNAVAILABLE,
    DEFAULT_REPLAY_HEADERS,
    ResponseRecorder,
    retry_after_header,
    send_idempotency_problem,
)

__all__ = ["IdempotencyMiddleware", "default_principal", "parse_idempotency_key"]


class IdempotencyMiddleware(ResponseRecorder):
    """Pure ASGI middleware implementing the ``Idempotency-Key`` header (see the module doc).

    Args:
        app: the ASGI app to protect (put authentication before this middleware).
        store: a :class:`resilience.stores.Store` shared by every worker (default: a private
            ``MemoryStore(max_entries=10_000)``, which protects one process only).
        methods: methods that honour the header.
        required: answer 400 when the header is missing on those methods.
        ttl: seconds a completed record is kept (from completion).
        scope: ``callable(asgi_scope) -> str | None`` giving the principal.
        lease: seconds an in-flight claim lives without renewal (renewed every ``lease / 3``).
        wait: seconds a concurrent duplicate waits for the replay instead of a 409.
        max_response_bytes: largest response body stored for replay (bytes; default
            ``MAX_RESPONSE_BYTES``, 1 MiB); over it the response is not retained (a retry: 409).
        max_body: the older name of ``max_response_bytes``.
        max_request_body: largest request body accepted for fingerprinting (bytes; 413 over).
        max_buffered_bytes: bound on request bytes buffered at once for fingerprinting, summed
            over every in-flight request (default 64 MiB; 503 with ``Retry-After`` over it).
        replay_headers: extra response header names replayed (case-insensitive).
        release_statuses: handler statuses that release the key instead of being stored
            (e.g. ``{401, 403, 404, 408, 409, 425}``); 429 and 503 always release.
        store_errors: ``"ambiguous"`` (default: store 5xx and exceptions, at-most-once) or
            ``"never"`` (release them, at-least-once).
        on_store_error: ``"closed"`` (503) or ``"open"`` (run unprotected).
        name: namespace of the records in the store (and the ``policy`` of its events).
        clock: time source of the default store, leases and waits.
        listeners: event listeners, ``policy`` this middleware's ``name``, ``operation`` the
            HTTP method: :class:`~resilience.events.IdempotentReplay` for a replayed response,
            :class:`~resilience.events.CallRejected` (``reason="idempotency_conflict"``) for a
            409 in progress or a 422 reused key, :class:`~resilience.events.StoreFailed` for a
            store failure (``decision`` ``"closed"``: answered 503, ``"open"``: run
            unprotected; ``"unrecorded"``: an outcome that could not be recorded).
        include / exclude / when: which requests are deduplicated (path prefixes, a predicate
            over the ASGI scope; as for every middleware); the others pass through untouched.

    Example:
        >>> async def app(scope, receive, send):
        ...     await send({"type": "http.response.start", "status": 201, "headers": []})
        ...     await send({"type": "http.response.body", "body": b"created"})
        >>> mw = IdempotencyMiddleware(app, required=True)
        >>> sorted(mw.methods)
        ['PATCH', 'POST']
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: Any = None,
        methods: Iterable[str] = ("POST", "PATCH"),
        required: bool = False,
        ttl: Duration = 86400,
        scope: Callable[[Scope], str | None] = default_principal,
        lease: Duration = 60,
        wait: Duration = 0.0,
        max_response_bytes: int | None = None,
        max_body: int | None = None,
        max_request_body: int = 10 << 20,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
        replay_headers: Iterable[str] = (),
        release_statuses: Iterable[int] = (),
        store_errors: Literal["ambiguous", "never"] = "ambiguous",
        on_store_error: Literal["closed", "open"] = "closed",
        name: str = "http",
        clock: Clock | None = None,
        listeners: Sequence[Listener] = (),
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        when: Callable[[Scope], bool] | None = None,
    ) -> None:
        if not callable(app):
            raise ConfigurationError(f"app must be an ASGI callable, got {app!r}")
        self.app = app
        if isinstance(methods, str):
            raise ConfigurationError("methods must be a collection of method names, not a str")
        self.methods = method_names(methods, "methods")
        if not self.methods:
            raise ConfigurationError("methods must name at least one HTTP method")
        self.required = bool(required)
        if not callable(scope):
            raise ConfigurationError(
                f"scope must be a callable(asgi_scope) -> str | None, got {scope!r}"
            )
        self.scope_fn = scope
        self.wait = seconds(wait, "wait")
        if max_response_bytes is not None and max_body is not None:
            raise ConfigurationError("pass max_response_bytes= or its older name max_body=")
        cap = max_response_bytes if max_response_bytes is not None else max_body
        self.max_body = positive_int(
            MAX_RESPONSE_BYTES if cap is None else cap, "max_response_bytes", minimum=0
        )
        self.max_request_body = positive_int(max_request_body, "max_request_body", minimum=0)
        if positive_int(max_buffered_bytes, "max_buffered_bytes") < self.max_request_body:
            raise ConfigurationError(
                f"max_buffered_bytes ({max_buffered_bytes}) must be at least max_request_body "
                f"({self.max_request_body}): such a request could never be accepted"
            )
        extra = {h.encode("latin-1") for h in header_names(replay_headers, "replay_headers")}
        forbidden = sorted(h.decode("latin-1") for h in extra & _NEVER_REPLAYED)
        if forbidden:
            raise ConfigurationError(f"replay_headers may not include {forbidden}")
        self.replay_headers = DEFAULT_REPLAY_HEADERS | extra
        self.release_statuses = status_codes(release_statuses, "release_statuses") | {429, 503}
        if store_errors not in ("ambiguous", "never"):
            raise ConfigurationError(
                f"store_errors must be 'ambiguous' or 'never', got {store_errors!r}"
            )
        self.store_errors = store_errors
        if on_store_error not in ("closed", "open"):
            raise ConfigurationError(
                f"on_store_error must be 'closed' or 'open', got {on_store_error!r}"
            )
        self.records = IdempotencyRecords(
            store=store,
            ttl=ttl,
            lease=lease,
            namespace=f"idem:{name}",
            on_store_error=on_store_error,
            max_response_bytes=self.max_body,
            max_buffered_bytes=max_buffered_bytes,
            clock=clock,
        )
        self.buffers = self.records.buffers
        self.durations = DurationHints()
        self.name = name
        self.listeners = check_listeners(listeners)
        self._routes = RouteFilter(include, exclude, when)
        self._all_routes = self._routes.everything

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in self.methods
            or not (self._all_routes or self._routes(scope))
        ):
            await self.app(scope, receive, send)
            return
        raw = [v for k, v in scope["headers"] if k == b"idempotency-key"]
        if not raw:
            if self.required:
                await send_idempotency_problem(
                    send,
                    400,
                    "missing-key",
                    "Idempotency-Key required",
                    "this request requires an Idempotency-Key header",
                )
                return
            await self.app(scope, receive, send)
            return
        key = parse_idempotency_key(raw[0]) if len(raw) == 1 else None
        if key is None:
            await send_idempotency_problem(
                send,
                400,
                "malformed-key",
                "Malformed Idempotency-Key",
                "Idempotency-Key must be one field of 1-255 visible ASCII characters "
                '(an sf-string "..." or a bare token)',
            )
            return
        principal = self.scope_fn(scope)
        if principal is None:
            await self.app(scope, receive, send)
            return
        held = [0]  # request bytes this request holds in the shared buffer budget
        try:
            await self._deduplicate(scope, receive, send, principal, key, held)
        finally:
            if held[0]:
                self.buffers.release(held[0])

    async def _deduplicate(
        self, scope: Scope, receive: Receive, send: Send, principal: str, key: str, held: list[int]
    ) -> None:
        read = await read_request(
            scope, receive, send, limit=self.max_request_body, budget=self.buffers, held=held
        )
        if read is None:  # answered (413, 503) or the client went away
            return
        fingerprint, replay_receive = read
        path = scope.get("root_path", "") + scope.get("path", "")
        records = self.records
        rkey = records.key(principal, scope["method"], path, key)
        try:
            claim = await records.aclaim(rkey, fingerprint, wait=self.wait)
        except StoreError as exc:
            self._emit(
                StoreFailed,
                scope,
                decision="closed",
                error_type=error_type(exc.__cause__ or exc) or "StoreError",
            )
            await send_refusal(
                send,
                _STORE_UNAVAILABLE,
                detail="the request was not processed; retry later",
                headers=retry_after_header(1),
            )
            return
        status = claim.status
        if status == "claimed":
            await self._run(claim, scope, replay_receive, send)
        elif status == "replay":
            self._emit(IdempotentReplay, scope)
            await self._replay(claim, send)
        elif status == "in_progress":
            hint = self.durations.hint(f"{scope['method']} {path}", claim.retry_after)
            self._emit(CallRejected, scope, reason="idempotency_conflict", retry_after=hint)
            await send_refusal(
                send,
                _IN_PROGRESS,
                detail="a request with this Idempotency-Key is still being processed",
                headers=retry_after_header(hint),
            )
        elif status == "reused":
            self._emit(CallRejected, scope, reason="idempotency_conflict")
            await send_refusal(
                send,
                _KEY_REUSED,
                detail="this Idempotency-Key was already used with a different request",
            )
        else:  # unprotected: the store failed and on_store_error="open"
            self._emit(StoreFailed, scope, decision="open", error_type="StoreError")

            async def mark(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message = dict(message)
                    message["headers"] = [
                        *message.get("headers", ()),
                        (b"idempotency-status", b"unavailable"),
                    ]
                await send(message)

            await self.app(scope, replay_receive, mark)

    def _emit(self, cls: type[Event], scope: Scope, **fields: Any) -> None:
        """One event of this middleware (``policy`` its ``name``, ``operation`` the method)."""
        if self.listeners:
            origin: Origin = {
                "policy": self.name,
                "pipeline": None,
                "operation": str(scope["method"]),
            }
            emit(self.listeners, cls(**origin, **fields))
