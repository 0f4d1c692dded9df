""":class:`Dashboard`: the live state of the policies as a mountable ASGI app (a page, its
script and style, a JSON snapshot and a server-sent-event stream of one snapshot a second).

The dashboard exposes internals (policy names, failure rates, breaker states): serve it on
loopback or behind authentication (``auth=``), never on a public listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from importlib.resources import files
from typing import Any, Protocol

from resilience.errors import ConfigurationError
from resilience.instrumentation import default_live

from ._common import Receive, Scope, Send

__all__ = ["Dashboard", "SnapshotSource"]

_log = logging.getLogger("resilience")


_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
#: Sent with every answer: no inline script or style, nothing from another origin, no framing.
SECURITY_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        b"img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)


class SnapshotSource(Protocol):
    """What a dashboard shows: a :class:`resilience.instrumentation.Live` (this process) or a
    :class:`resilience.instrumentation.Fleet` (every process publishing to a Redis store)."""

    def snapshot(self) -> dict[str, Any]:
        """The current state, JSON-ready."""
        ...


def _asset(name: str) -> bytes:
    return (files("interceptors.asgi") / "dashboard" / name).read_bytes()


class Dashboard:
    """The live dashboard, an ASGI app to mount (e.g. under ``/_resilience/``) or to serve on
    its own (``python -m resilience dashboard``).

    Routes, relative to where it is mounted: ``/`` (the page), ``/dashboard.js``,
    ``/dashboard.css``, ``/snapshot.json`` and ``/events`` (``text/event-stream``, one JSON
    snapshot every ``interval`` seconds).

    Args:
        source: what to show; default the process-wide
            :func:`~resilience.instrumentation.default_live` collector.
        auth: called with the ASGI scope of every request (sync or async); a false answer
            refuses it with 401. Without it anyone who reaches the app sees everything.
        allowed_hosts: if given, requests whose ``Host`` header (port ignored) is not one of
            these are refused with 403 (a defence against DNS rebinding of a loopback port).
        interval: seconds between two snapshots of the event stream.
        max_streams: at most this many event streams at once; more are refused with 503.

    Example:
        >>> import resilience as rs
        >>> from interceptors.asgi import Dashboard
        >>> live = rs.instrumentation.Live()
        >>> app = Dashboard(live, allowed_hosts=["127.0.0.1", "localhost"])
    """

    def __init__(
        self,
        source: SnapshotSource | None = None,
        *,
        auth: Callable[[Scope], bool | Awaitable[bool]] | None = None,
        allowed_hosts: Sequence[str] | None = None,
        interval: float = 1.0,
        max_streams: int = 16,
    ) -> None:
        if not interval > 0:
            raise ConfigurationError(f"interval must be positive, got {interval!r}")
        self.source: SnapshotSource = source if source is not None else default_live()
        self.auth = auth
        self.allowed_hosts = (
            None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        )
        self.interval = interval
        self.max_streams = max_streams
        self._streams = 0
        self._blocking = bool(getattr(self.source, "blocking", False))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets: not served (the connection is closed unanswered)
        root = scope.get("root_path", "")
        path: str = scope["path"]
        if root and path.startswith(root):
            path = path[len(root) :]
        if not self._host_allowed(scope):
            await _answer(send, 403, b"host not allowed\n")
        elif self.auth is not None and not await self._authorized(scope):
            await _answer(send, 401, b"unauthorized\n")
        elif scope["method"] not in ("GET", "HEAD"):
            await _answer(send, 405, b"method not allowed\n", ((b"allow", b"GET, HEAD"),))
        elif path == "":  # mounted at /x and asked for /x: relative links need /x/
            location = (root + "/").encode("latin-1", "replace")
            await _answer(send, 308, b"", ((b"location", location),))
        elif path in _ASSETS:
            name, ctype = _ASSETS[path]
            await _answer(send, 200, _asset(name), content_type=ctype, head=_head(scope))
        elif path == "/snapshot.json":
            snap = await self._snapshot()
            status = 503 if "error" in snap else 200
            body = json.dumps(snap).encode()
            await _answer(send, status, body, content_type="application/json", head=_head(scope))
        elif path == "/events":
            await self._stream(receive, send)
        else:
            await _answer(send, 404, b"not found\n")

    def _host_allowed(self, scope: Scope) -> bool:
        if self.allowed_hosts is None:
            return True
        host = ""
        for k, v in scope.get("headers", ()):
            if k == b"host":
                host = v.decode("latin-1").lower()
        # the port is dropped: [::1]:8000 -> [::1], localhost:8000 -> localhost
        host = host[: host.find("]") + 1] if host.startswith("[") else host.rsplit(":", 1)[0]
        return host in self.allowed_hosts

    async def _authorized(self, scope: Scope) -> bool:
        assert self.auth is not None
        verdict = self.auth(scope)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return bool(verdict)

    async def _snapshot(self) -> dict[str, Any]:
        # the source failing (Redis down for a fleet view) is shown, not raised: the page
        # says so and keeps its last picture until the source answers again
        try:
            if self._blocking:
                return await asyncio.to_thread(self.source.snapshot)
            return self.source.snapshot()
        except Exception as exc:
            _log.warning("resilience: the dashboard's source failed", exc_info=True)
            return {"version": 1, "error": f"the source failed ({type(exc).__name__})"}

    async def _stream(self, receive: Receive, send: Send) -> None:
        if self._streams >= self.max_streams:
            await _answer(send, 503, b"too many dashboard streams\n", ((b"retry-after", b"5"),))
            return
        self._streams += 1
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"x-accel-buffering", b"no"),
                        *SECURITY_HEADERS,
                    ],
                }
            )
            retry = b"retry: 2000\n\n"  # the browser reconnects 2 s after a lost stream
            await send({"type": "http.response.body", "body": retry, "more_body": True})
            while not gone.is_set():
                # json.dumps escapes newlines inside strings: one snapshot is one data line
                data = b"data: " + json.dumps(await self._snapshot()).encode() + b"\n\n"
                await send({"type": "http.response.body", "body": data, "more_body": True})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gone.wait(), self.interval)
        except OSError:  # the client went away mid-write
            pass
        finally:
            self._streams -= 1
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def _head(scope: Scope) -> bool:
    return bool(scope["method"] == "HEAD")


async def _answer(
    send: Send,
    status: int,
    body: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    content_type: str = "text/plain; charset=utf-8",
    head: bool = False,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                *headers,
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
