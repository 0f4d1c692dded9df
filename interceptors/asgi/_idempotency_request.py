"""Reading an idempotent request: its ``Idempotency-Key``, principal, body and fingerprint."""

from __future__ import annotations

import hashlib
from collections import deque

from resilience.idempotency import BufferBudget

from ._common import Message, Receive, Scope, Send
from ._idempotency_response import retry_after_header, send_idempotency_problem

__all__ = ["default_principal", "parse_idempotency_key", "read_request", "too_large"]

_MAX_HEADER = 8192


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
