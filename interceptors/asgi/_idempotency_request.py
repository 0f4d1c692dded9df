"""Reading an idempotent request: its ``Idempotency-Key``, principal, body and fingerprint."""

from __future__ import annotations

import hashlib
import re
from collections import deque

from resilience.idempotency import BufferBudget

from ._common import Message, Receive, Scope, Send
from ._idempotency_response import retry_after_header, send_idempotency_problem

__all__ = ["default_principal", "parse_idempotency_key", "read_request", "too_large"]

_MAX_HEADER = 8192


# an sf-string (RFC 9651 §3.3.3) of visible characters only (no space): visible ASCII other
# than DQUOTE and backslash, and the two escapes (backslash DQUOTE, backslash backslash)
_QUOTED = re.compile(rb'"([!#-\[\]-~]*(?:\\["\\][!#-\[\]-~]*)*)"').fullmatch
_ESCAPE = re.compile(rb"\\(.)")
_KEY = re.compile(rb"[!-~]{1,255}").fullmatch  # 1-255 visible ASCII characters


def parse_idempotency_key(raw: bytes) -> str | None:
    """Parse one ``Idempotency-Key`` field value; ``None`` when it is malformed.

    Accepts the RFC 9651 sf-string form (``"abc"``, with ``\\"`` and ``\\\\`` escapes, without
    parameters) and the bare form; after unquoting the key must be 1-255 visible ASCII
    characters (0x21-0x7E). A bare value with a comma is a list and is refused.

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
        quoted = _QUOTED(value)
        if quoted is None:
            return None
        value = quoted.group(1)
        if b"\\" in value:
            value = _ESCAPE.sub(rb"\1", value)
        if not 0 < len(value) <= 255:  # the pattern admits visible characters only
            return None
    elif b"," in value or _KEY(value) is None:
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


async def read_request(
    scope: Scope, receive: Receive, send: Send, *, limit: int, budget: BufferBudget, held: list[int]
) -> tuple[str, Receive] | None:
    """Read, buffer and fingerprint an idempotent request's body.

    The fingerprint is a SHA-256 of the content-type, the query string and the body, hashed as
    it is read; at most ``limit`` bytes (413 over it, a ``Content-Length`` over it refused before
    reading), and the buffered bytes are reserved from the shared ``budget`` (503 when a chunk
    does not fit); ``held[0]`` counts the bytes reserved, which the caller releases.

    Returns the fingerprint and a ``receive`` re-delivering the body byte-identical with its
    ``more_body`` framing, or ``None`` when the request was answered or its client went away.
    """
    # read and fingerprint the body; it is re-delivered to the app unchanged
    digest = hashlib.sha256()
    content_type = b""
    for k, v in scope["headers"]:
        if k == b"content-type":
            content_type = v
        elif k == b"content-length" and v.isdigit() and int(v) > limit:
            await too_large(send, limit)  # refused before reading any of it
            return None
    digest.update(len(content_type).to_bytes(4, "big") + content_type)
    query = scope.get("query_string", b"")
    digest.update(len(query).to_bytes(4, "big") + query)
    buffered: deque[Message] = deque()
    total = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away before sending it all
            return None
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            await too_large(send, limit)
            return None
        if chunk and not budget.reserve(len(chunk)):
            budget.release(held[0])
            held[0] = 0
            buffered.clear()
            await send_idempotency_problem(
                send,
                503,
                "buffers-full",
                "Too many request bytes buffered",
                "too many idempotent request bodies are being read right now; retry later",
                retry_after_header(1),
            )
            return None
        held[0] += len(chunk)
        digest.update(chunk)
        buffered.append(message)
        if not message.get("more_body", False):
            break

    async def replay_receive() -> Message:
        if buffered:
            return buffered.popleft()
        return await receive()

    return digest.hexdigest()[:32], replay_receive


async def too_large(send: Send, limit: int) -> None:
    """Answer 413: the idempotent request's body is over ``limit`` bytes."""
    await send_idempotency_problem(
        send,
        413,
        "request-too-large",
        "Request body too large",
        f"an idempotent request body may be at most {limit} bytes",
    )
