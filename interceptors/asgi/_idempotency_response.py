"""Responses of an idempotent request: problem answers, capture and recording, replay."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Literal

from resilience.errors import (
    IdempotencyInProgressError,
    IdempotencyKeyReusedError,
    StoreError,
)
from resilience.events import Listener, StoreFailed, emit, error_type
from resilience.idempotency import (
    Claim,
    IdempotencyRecords,
    StoredOutcome,
)

from .._duration_hints import DurationHints
from ._common import ASGIApp, Message, Receive, Scope, Send, refusal_row, send_problem, send_refusal

__all__ = [
    "DEFAULT_REPLAY_HEADERS",
    "UNRECORDED_HEADER",
    "ResponseRecorder",
    "retry_after_header",
    "send_idempotency_problem",
]

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
#: Added to a held (retained) response whose outcome could not be recorded.
UNRECORDED_HEADER = b"idempotency-outcome"
_UNRECORDED = (UNRECORDED_HEADER, b"unrecorded")
_log = logging.getLogger("resilience")


def _problem_body(status: int, slug: str, title: str, detail: str) -> bytes:
    return json.dumps(
        {"type": f"{_PROBLEM}#{slug}", "title": title, "status": status, "detail": detail},
        separators=(",", ":"),
    ).encode()


async def send_idempotency_problem(
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


def retry_after_header(value: float | None) -> list[tuple[bytes, bytes]]:
    secs = 1 if value is None else max(1, math.ceil(value))
    return [(b"retry-after", str(secs).encode())]


class ResponseRecorder:
    """The response half of :class:`IdempotencyMiddleware`: run the app capturing its response
    (held until its outcome is recorded when it is retained), record it, and replay it."""

    app: ASGIApp
    records: IdempotencyRecords
    replay_headers: frozenset[bytes]
    max_body: int
    release_statuses: frozenset[int]
    store_errors: Literal["ambiguous", "never"]
    name: str
    listeners: tuple[Listener, ...]
    durations: DurationHints

    async def _replay(self, claim: Claim, send: Send) -> None:
        if claim.payload is None:
            await send_idempotency_problem(
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
                headers=retry_after_header(1),
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
        monotonic = records.clock.monotonic
        # named before the app runs: routing may rewrite the scope's path (a mount)
        operation = f"{scope['method']} {scope.get('root_path', '')}{scope.get('path', '')}"
        started = monotonic()
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
            self.durations.observe(operation, monotonic() - started)
            if not store:
                beat.stop()
                await records.arelease(claim)
                return True
            try:  # the heartbeat keeps the lease while the completion is retried
                recorded = await records.acomplete_or_error(claim, payload, size)
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
