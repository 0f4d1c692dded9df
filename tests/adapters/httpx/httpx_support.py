"""httpx test helpers: a scripted ASGI server, a sync/async request driver, tracking and failing
transports.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

import resilience as rs
from interceptors.asgi._common import Receive, Scope, Send
from interceptors.httpx import (
    AsyncResilientTransport,
    ResilientTransport,
    http_retry,
)
from resilience.testing import FakeClock

# -- the scripted server ---------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0


class ScriptedApp:
    """``/<id>``: the n-th request plays ``replies[id][n]`` (the last one repeats)."""

    def __init__(self) -> None:
        self.replies: dict[str, list[Reply]] = {}
        self.seen: dict[str, list[dict[str, Any]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        sid = scope["path"].strip("/")
        seen = self.seen.setdefault(sid, [])
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        seen.append({"method": scope["method"], "headers": headers, "body": body})
        replies = self.replies.get(sid) or [Reply()]
        reply = replies[min(len(seen), len(replies)) - 1]
        if reply.delay:
            await asyncio.sleep(reply.delay)  # a slow server: the real-deadline test cuts it short
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [(k.encode(), v.encode()) for k, v in reply.headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})


class Script:
    def __init__(self, app: ScriptedApp, url: str, replies: list[Reply]) -> None:
        self.id = uuid.uuid4().hex
        self.app = app
        self.url = f"{url}/{self.id}"
        app.replies[self.id] = replies

    @property
    def seen(self) -> list[dict[str, Any]]:
        return self.app.seen.get(self.id, [])


def fetch(
    mode: str,
    pipeline: rs.Policy | None,
    method: str,
    url: str,
    *,
    transport_kw: dict[str, Any] | None = None,
    **kw: Any,
) -> httpx.Response:
    """One request through a resilient transport (sync or async), body read."""
    tkw = dict(transport_kw or {})
    if mode == "sync":
        with httpx.Client(transport=ResilientTransport(pipeline, **tkw), timeout=10) as client:
            return client.request(method, url, **kw)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=AsyncResilientTransport(pipeline, **tkw), timeout=10
        ) as client:
            return await client.request(method, url, **kw)

    return asyncio.run(go())


def retry(clock: FakeClock, **kw: Any) -> rs.Retry:
    kw.setdefault("backoff", rs.backoff.constant(0.5))
    return http_retry(clock=clock, **kw)


# -- server hints reach any Retry, not only http_retry() ---------------------------------------


def plain_retry(clock: FakeClock, **kw: Any) -> rs.Retry:
    """A Retry knowing nothing about HTTP headers: it must still get the server's hint."""
    kw.setdefault("backoff", rs.backoff.constant(0.01))
    return rs.Retry(
        on=httpx.TransportError,
        on_result=lambda r: r.status_code in (429, 503),
        attempts=3,
        clock=clock,
        **kw,
    )


class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that is not read up front (so closing it is observable)."""

    def __iter__(self) -> Iterator[bytes]:
        yield b"body"

    async def __aiter__(self) -> Any:
        yield b"body"


class Tracking(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An inner transport whose responses record whether they were closed."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.responses: list[httpx.Response] = []
        self.requests: list[httpx.Request] = []

    def _next(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.statuses[min(len(self.responses), len(self.statuses) - 1)]
        response = httpx.Response(status, stream=Body(), request=request)
        self.responses.append(response)
        return response

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._next(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self._next(request)


def run_transport(mode: str, pipeline: rs.Policy | None, inner: Any, **kw: Any) -> Any:
    request = httpx.Request(kw.pop("method", "GET"), kw.pop("url", "http://svc.local/x"), **kw)
    if mode == "sync":
        return ResilientTransport(pipeline, transport=inner).handle_request(request)

    async def go() -> Any:
        return await AsyncResilientTransport(pipeline, transport=inner).handle_async_request(
            request
        )

    return asyncio.run(go())


# -- transport errors --------------------------------------------------------------------------


class Failing(Tracking):
    def __init__(self, errors: list[Exception | None]) -> None:
        super().__init__([200])
        self.errors = errors

    def _next(self, request: httpx.Request) -> httpx.Response:
        n = len(self.requests)
        if n < len(self.errors) and self.errors[n] is not None:
            self.requests.append(request)
            raise self.errors[n]  # type: ignore[misc]
        return super()._next(request)
