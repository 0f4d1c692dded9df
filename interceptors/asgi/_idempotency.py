"""``IdempotencyMiddleware``: the IETF ``Idempotency-Key`` header for any ASGI app.

Behaviour (draft-ietf-httpapi-idempotency-key-header, as Stripe does it):

* Only requests whose method is in ``methods`` (default POST and PATCH) are considered; other
  methods and every non-HTTP scope (``lifespan``, ``websocket``) pass through untouched.
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
  the replay); same key with a different request → **422**; completed → replay of the status,
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

import contextlib
import hashlib
import json
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any, Literal

from resilience._clock import Clock
from resilience._policy import _check_listeners
from resilience._types import (
    Duration,
    header_names,
    method_names,
    positive_int,
    seconds,
    status_codes,
)
from resilience.errors import (
    ConfigurationError,
    IdempotencyInProgressError,
    IdempotencyKeyReusedError,
    StoreError,
)
from resilience.events import Listener, StoreFailed, emit, error_type
from resilience.idempotency import (
    MAX_BUFFERED_BYTES,
    MAX_RESPONSE_BYTES,
    Claim,
    IdempotencyRecords,
    StoredOutcome,
)

from ._common import refusal_row, send_problem, send_refusal

__all__ = ["IdempotencyMiddleware", "default_principal", "parse_idempotency_key"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_PROBLEM = "urn:resilience:problem:idempotency"
# Refusals that are resilience errors answer per the shared table (interceptors.errors).
_IN_PROGRESS = refusal_row(IdempotencyInProgressError)
_KEY_REUSED = refusal_row(IdempotencyKeyReusedError)
_STORE_UNAVAILABLE = refusal_row(StoreError)
#: Response headers a replay may carry (never Set-Cookie, Authorization, hop-by-hop or Date).
DEFAULT_REPLAY_HEADERS = frozenset(
    {b"content-type", b"content-language", b"location", b"etag", b"link", b"cache-control"}
)
_NEVER_REPLAYED = frozenset(
    {
        b"set-cookie",
        b"authorization",
        b"proxy-authenticate",
        b"www-authenticate",
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"trailer",
        b"date",
        b"content-length",
    }
)
_MAX_HEADER = 8192
#: Added to a held (retained) response whose outcome could not be recorded.
UNRECORDED_HEADER = b"idempotency-outcome"
_UNRECORDED = (UNRECORDED_HEADER, b"unrecorded")
_log = logging.getLogger("resilience")


def parse_idempotency_key(raw: bytes) -> str | None:
    """Parse one ``Idempotency-Key`` field value; ``None`` when it is malformed.

    Accepts the RFC 8941 sf-string form (``"abc"``, with ``\\"`` and ``\\\\`` escapes) and the
    bare form; after unquoting the key must be 1-255 visible ASCII characters (0x21-0x7E). A
    bare value with a comma is a list and is refused.

    Example:
        >>> parse_idempotency_key(b'"8e03978e-40d5"'), parse_idempotency_key(b"8e03978e-40d5")
        ('8e03978e-40d5', '8e03978e-40d5')
        >>> parse_idempotency_key(b""), parse_idempotency_key(b"a b"), parse_idempotency_key(b"a,b")
        (None, None, None)
    """
    if len(raw) > _MAX_HEADER:
        return None
    value = raw.strip(b" \t")
    if value[:1] == b'"':
        if len(value) < 2 or value[-1:] != b'"':
            return None
        inner = value[1:-1]
        out = bytearray()
        i, n = 0, len(inner)
        while i < n:
            c = inner[i]
            if c == 0x5C:  # backslash escape: only \" and \\ are valid
                i += 1
                if i >= n or inner[i] not in (0x22, 0x5C):
                    return None
                out.append(inner[i])
            elif c == 0x22:
                return None
            else:
                out.append(c)
            i += 1
        value = bytes(out)
    elif b"," in value:
        return None
    if not 1 <= len(value) <= 255:
        return None
    for c in value:
        if c < 0x21 or c > 0x7E:
            return None
    return value.decode("ascii")


def default_principal(scope: Scope) -> str | None:
    """The default principal: a hash of the ``Authorization`` header, else the socket peer.

    Example:
        >>> default_principal({"headers": [], "client": ("10.0.0.7", 51000)})
        'ip:10.0.0.7'
        >>> default_principal({"headers": [(b"authorization", b"Bearer t")]})[:5]
        'auth:'
        >>> default_principal({"headers": []}) is None
        True
    """
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            return "auth:" + hashlib.sha256(value).hexdigest()[:32]
    client = scope.get("client")
    if client:
        return f"ip:{client[0]}"
    return None


def _problem_body(status: int, slug: str, title: str, detail: str) -> bytes:
    return json.dumps(
        {"type": f"{_PROBLEM}#{slug}", "title": title, "status": status, "detail": detail},
        separators=(",", ":"),
    ).encode()


async def _send_problem(
    send: Send,
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    await send_problem(
        send, status, title, type_=f"{_PROBLEM}#{slug}", detail=detail, headers=headers
    )


def _retry_after(value: float | None) -> list[tuple[bytes, bytes]]:
    secs = 1 if value is None else max(1, math.ceil(value))
    return [(b"retry-after", str(secs).encode())]


class IdempotencyMiddleware:
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
        listeners: event listeners (:class:`~resilience.events.StoreFailed` with
            ``decision="unrecorded"`` for an outcome that could not be recorded).

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
        self.name = name
        self.listeners = _check_listeners(listeners)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self.methods:
            await self.app(scope, receive, send)
            return
        raw = [v for k, v in scope["headers"] if k == b"idempotency-key"]
        if not raw:
            if self.required:
                await _send_problem(
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
            await _send_problem(
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

    async def _too_large(self, send: Send) -> None:
        await _send_problem(
            send,
            413,
            "request-too-large",
            "Request body too large",
            f"an idempotent request body may be at most {self.max_request_body} bytes",
        )

    async def _deduplicate(
        self, scope: Scope, receive: Receive, send: Send, principal: str, key: str, held: list[int]
    ) -> None:
        # read and fingerprint the body; it is re-delivered to the app unchanged
        digest = hashlib.sha256()
        content_type = b""
        for k, v in scope["headers"]:
            if k == b"content-type":
                content_type = v
            elif k == b"content-length" and v.isdigit() and int(v) > self.max_request_body:
                await self._too_large(send)  # refused before reading any of it
                return
        digest.update(len(content_type).to_bytes(4, "big") + content_type)
        query = scope.get("query_string", b"")
        digest.update(len(query).to_bytes(4, "big") + query)
        buffered: deque[Message] = deque()
        budget = self.buffers
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away before sending it all
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_request_body:
                await self._too_large(send)
                return
            if chunk and not budget.reserve(len(chunk)):
                budget.release(held[0])
                held[0] = 0
                buffered.clear()
                await _send_problem(
                    send,
                    503,
                    "buffers-full",
                    "Too many request bytes buffered",
                    "too many idempotent request bodies are being read right now; retry later",
                    _retry_after(1),
                )
                return
            held[0] += len(chunk)
            digest.update(chunk)
            buffered.append(message)
            if not message.get("more_body", False):
                break

        async def replay_receive() -> Message:
            if buffered:
                return buffered.popleft()
            return await receive()

        path = scope.get("root_path", "") + scope.get("path", "")
        records = self.records
        rkey = records.key(principal, scope["method"], path, key)
        try:
            claim = await records.aclaim(rkey, digest.hexdigest()[:32], wait=self.wait)
        except StoreError:
            await send_refusal(
                send,
                _STORE_UNAVAILABLE,
                detail="the request was not processed; retry later",
                headers=_retry_after(1),
            )
            return
        status = claim.status
        if status == "claimed":
            await self._run(claim, scope, replay_receive, send)
        elif status == "replay":
            await self._replay(claim, send)
        elif status == "in_progress":
            await send_refusal(
                send,
                _IN_PROGRESS,
                detail="a request with this Idempotency-Key is still being processed",
                headers=_retry_after(claim.retry_after),
            )
        elif status == "reused":
            await send_refusal(
                send,
                _KEY_REUSED,
                detail="this Idempotency-Key was already used with a different request",
            )
        else:  # unprotected: the store failed and on_store_error="open"

            async def mark(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message = dict(message)
                    message["headers"] = [
                        *message.get("headers", ()),
                        (b"idempotency-status", b"unavailable"),
                    ]
                await send(message)

            await self.app(scope, replay_receive, mark)

    async def _replay(self, claim: Claim, send: Send) -> None:
        if claim.payload is None:
            await _send_problem(
                send,
                409,
                "response-not-retained",
                "Response not retained",
                "the original request completed but its response was too large or streamed "
                "and was not stored; it cannot be replayed",
            )
            return
        try:
            stored = StoredOutcome.decode(claim.payload)
            if stored.kind != "http" or not isinstance(stored.body, bytes):
                raise ValueError(f"a {stored.kind!r} outcome, not an HTTP response")
            status, body = stored.status, stored.body
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in stored.headers]
        except ValueError:  # also a header that is not latin-1 (UnicodeEncodeError)
            await send_refusal(
                send,
                _STORE_UNAVAILABLE,
                detail="the stored response could not be read; the request was not processed",
                headers=_retry_after(1),
            )
            return
        headers.append((b"content-length", str(len(body)).encode()))
        headers.append((b"idempotent-replayed", b"true"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _payload(self, status: int, headers: list[tuple[str, str]], body: bytes) -> str:
        return StoredOutcome("http", body, status=status, headers=tuple(headers)).encode()

    async def _run(self, claim: Claim, scope: Scope, receive: Receive, send: Send) -> None:
        records = self.records
        beat = records.astart_heartbeat(claim)
        allowed = self.replay_headers
        max_body = self.max_body
        status = 0
        headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []
        size = 0
        retained = True
        finished = False
        # a response that will be retained is held (its start and body) until its outcome is
        # recorded, so the start can say when it could not be; None: messages pass through
        held: list[Message] | None = None

        async def flush(unrecorded: bool = False) -> None:
            nonlocal held
            pending, held = held, None
            if not pending:
                return
            if unrecorded:
                start = dict(pending[0])
                start["headers"] = [*start.get("headers", ()), _UNRECORDED]
                pending[0] = start
            for message in pending:
                await send(message)

        async def finish(
            payload: str | None, store: bool, size: int | None = None, told: bool = False
        ) -> bool:
            """Complete (or release) the claim; False when the outcome could not be recorded."""
            nonlocal finished
            finished = True
            if not store:
                beat.stop()
                await records.arelease(claim)
                return True
            try:  # the heartbeat keeps the lease while the completion is retried
                recorded = await records._acomplete(claim, payload, size)
            finally:
                beat.stop()
            if recorded is True:
                return True
            self._unrecorded(scope, recorded, told=told and held is not None)
            return False

        async def capture(message: Message) -> None:
            nonlocal status, headers, size, retained, held
            kind = message["type"]
            if kind == "http.response.start" and not finished:
                status = int(message["status"])
                headers = [
                    (k.decode("latin-1"), v.decode("latin-1"))
                    for k, v in message.get("headers", ())
                    if k.lower() in allowed
                ]
                if not self._releases(status):
                    held = [message]
                    return
            elif kind == "http.response.body" and not finished and status:
                chunk = message.get("body", b"")
                if retained:
                    size += len(chunk)
                    if size > max_body:  # streamed through from here on, not retained
                        retained = False
                        chunks.clear()
                        await flush()
                    elif chunk:
                        chunks.append(chunk)
                if not message.get("more_body", False):
                    if self._releases(status):
                        await finish(None, store=False)
                    elif retained:
                        body = b"".join(chunks)
                        chunks.clear()
                        payload = self._payload(status, headers, body)
                        recorded = await finish(payload, True, size, told=True)
                        if held is not None:  # else its start went out already (an extension)
                            held.append(message)
                            await flush(unrecorded=not recorded)
                            return
                    else:
                        await finish(None, True, size)
                elif held is not None:
                    held.append(message)
                    return
            elif held is not None:  # anything else (an extension): keep the order, stop holding
                await flush()
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except BaseException:
            if not finished:
                await self._abandoned(finish, status)
            with contextlib.suppress(Exception):  # what the app sent before it failed
                await flush()
            raise
        if not finished:  # the app returned without completing a response
            await self._abandoned(finish, status)
        await flush()

    def _releases(self, status: int) -> bool:
        """Whether a response with ``status`` releases the key instead of being stored."""
        return status in self.release_statuses or (status >= 500 and self.store_errors == "never")

    def _unrecorded(self, scope: Scope, recorded: bool | StoreError, *, told: bool) -> None:
        """A finished response whose outcome could not be recorded: log it and emit an event
        (a claim taken over after its lease was already logged by the records)."""
        if not isinstance(recorded, StoreError):
            return
        _log.warning(
            "resilience: the outcome of %s %s (Idempotency-Key) could not be recorded (%s); %s; "
            "a retry after the lease (%g s) runs the request again",
            scope.get("method"),
            scope.get("path"),
            recorded,
            "the response carries Idempotency-Outcome: unrecorded"
            if told
            else "its response had started (streamed), so the client was not told",
            self.records.lease,
        )
        if self.listeners:
            emit(
                self.listeners,
                StoreFailed(
                    policy=self.name,
                    pipeline=None,
                    operation=str(scope.get("method", "HTTP")),
                    decision="unrecorded",
                    error_type=error_type(recorded.__cause__ or recorded) or "StoreError",
                ),
            )

    async def _abandoned(
        self, finish: Callable[[str | None, bool], Awaitable[bool]], status: int
    ) -> None:
        """The handler raised (or returned) before completing its response."""
        if self.store_errors == "never":
            await finish(None, False)
        elif status:  # a partial response went out: record it as not replayable
            await finish(None, True)
        else:
            body = _problem_body(
                500,
                "handler-failed",
                "Internal Server Error",
                "the original request failed while being processed",
            )
            await finish(
                self._payload(500, [("content-type", "application/problem+json")], body), True
            )
