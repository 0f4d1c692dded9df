"""IdempotencyMiddleware and bodies: streamed and oversized responses, request bodies redelivered
and buffered within bounds, the store down, expiry.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

import resilience as rs
from interceptors.asgi import IdempotencyMiddleware
from resilience.idempotency import MAX_RESPONSE_BYTES
from resilience.testing import FakeClock

from ..._server import serve
from ...helpers import BrokenStore
from .idempotency_app import App, client


async def test_large_response_streams_through_and_is_not_replayed(app: App) -> None:
    mw = IdempotencyMiddleware(app.app, max_body=2500)
    async with client(mw) as c:
        h = {"Idempotency-Key": "k"}
        r1 = await c.post("/big", headers=h)
        r2 = await c.post("/big", headers=h)
    assert r1.status_code == 200
    assert len(r1.content) == 4000
    assert r2.status_code == 409
    assert r2.json()["type"].endswith("#response-not-retained")
    assert app.runs == 1


async def test_request_body_is_redelivered_with_its_framing() -> None:
    seen: list[tuple[bytes, bool]] = []

    async def raw_app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            seen.append((msg.get("body", b""), msg.get("more_body", False)))
            if not msg.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    mw = IdempotencyMiddleware(raw_app)
    incoming = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    ]
    sent: list[Any] = []

    async def receive() -> Any:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(msg: Any) -> None:
        sent.append(msg)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/x",
        "headers": [(b"idempotency-key", b"k")],
        "client": ("127.0.0.1", 1),
        "query_string": b"",
    }
    await mw(scope, receive, send)
    assert seen == [(b"ab", True), (b"", True), (b"cd", False)]
    assert sent[0]["status"] == 200


async def test_request_too_large_is_413(app: App) -> None:
    mw = IdempotencyMiddleware(app.app, max_request_body=10)
    async with client(mw) as c:
        r = await c.post("/orders", content=b"x" * 11, headers={"Idempotency-Key": "k"})
    assert r.status_code == 413
    assert app.runs == 0


async def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def raw_app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    mw = IdempotencyMiddleware(raw_app)

    async def nothing() -> Any:
        return {}

    async def sink(msg: Any) -> None:
        return None

    await mw({"type": "lifespan"}, nothing, sink)
    await mw({"type": "websocket", "headers": []}, nothing, sink)
    assert seen == ["lifespan", "websocket"]


async def test_store_down_is_503_closed_or_runs_open(app: App) -> None:
    closed = IdempotencyMiddleware(app.app, store=BrokenStore("down", error=ConnectionError))
    opened = IdempotencyMiddleware(
        app.app, store=BrokenStore("down", error=ConnectionError), on_store_error="open"
    )
    async with client(closed) as c:
        r = await c.post("/orders", headers={"Idempotency-Key": "k"})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert app.runs == 0
    async with client(opened) as c:
        r = await c.post("/orders", headers={"Idempotency-Key": "k"})
    assert r.status_code == 201
    assert r.headers["idempotency-status"] == "unavailable"


async def test_expired_key_executes_again(app: App) -> None:
    clock = FakeClock()
    mw = IdempotencyMiddleware(app.app, ttl=60, clock=clock)
    async with client(mw) as c:
        h = {"Idempotency-Key": "k"}
        await c.post("/orders", headers=h)
        clock.advance(61)
        r = await c.post("/orders", headers=h)
    assert r.json()["run"] == 2


# -- bounded memory: retained responses and request bodies buffered for fingerprinting ---------
def test_every_adapter_shares_the_response_cap() -> None:
    async def noop(scope: Any, receive: Any, send: Any) -> None:
        return None

    assert IdempotencyMiddleware(noop).records.max_response_bytes == MAX_RESPONSE_BYTES
    assert rs.IdempotencyRecords().max_response_bytes == MAX_RESPONSE_BYTES
    assert IdempotencyMiddleware(noop, max_response_bytes=10).max_body == 10
    with pytest.raises(rs.ConfigurationError):
        IdempotencyMiddleware(noop, max_response_bytes=10, max_body=10)
    with pytest.raises(rs.ConfigurationError):  # a body it accepts must fit the budget
        IdempotencyMiddleware(noop, max_request_body=2 << 20, max_buffered_bytes=1 << 20)


async def test_large_response_over_max_response_bytes_is_not_retained(app: App) -> None:
    mw = IdempotencyMiddleware(app.app, max_response_bytes=2500)
    async with client(mw) as c:
        h = {"Idempotency-Key": "k"}
        r1 = await c.post("/big", headers=h)
        r2 = await c.post("/big", headers=h)
    assert (r1.status_code, len(r1.content)) == (200, 4000)
    assert r2.status_code == 409
    assert r2.json()["type"].endswith("#response-not-retained")
    assert app.runs == 1


class Uploads:
    """A raw ASGI app that reads the body, then holds the request until ``release`` is set."""

    def __init__(self) -> None:
        self.entered = 0
        self.release = threading.Event()
        self.peak = 0
        self.mw: IdempotencyMiddleware | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        size = 0
        while True:
            msg = await receive()
            size += len(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        self.entered += 1
        assert self.mw is not None
        self.peak = max(self.peak, self.mw.buffers.in_use)
        assert await asyncio.to_thread(self.release.wait, 20)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})


def test_real_server_bounds_bytes_buffered_across_concurrent_requests() -> None:
    uploads = Uploads()
    budget, body = 4 << 20, b"x" * (3 << 19)  # six concurrent 1.5 MiB bodies, 4 MiB of buffer
    mw = IdempotencyMiddleware(uploads, max_request_body=2 << 20, max_buffered_bytes=budget)
    uploads.mw = mw

    async def main(url: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=10)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:
            tasks = [
                asyncio.create_task(
                    c.post("/upload", content=body, headers={"Idempotency-Key": f"k{i}"})
                )
                for i in range(6)
            ]
            # every request is either inside the app (holding its bytes) or already refused
            for _ in range(2000):
                if uploads.entered + sum(t.done() for t in tasks) == 6:
                    break
                await asyncio.sleep(0.01)
            held = mw.buffers.in_use
            uploads.release.set()
            out = await asyncio.gather(*tasks)
            assert held == uploads.entered * len(body) <= budget
            # a body over max_request_body (its Content-Length) is 413, nothing buffered
            big = await c.post(
                "/upload", content=b"x" * (3 << 20), headers={"Idempotency-Key": "b"}
            )
            assert big.status_code == 413
            return out

    with serve(mw) as url:
        responses = asyncio.run(main(url))
    codes = [r.status_code for r in responses]
    admitted = codes.count(201)
    assert admitted >= 1
    assert codes.count(503) == 6 - admitted >= 1
    assert admitted * len(body) <= budget
    assert uploads.peak <= budget
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1"
            assert r.json()["type"].endswith("#buffers-full")
        else:
            assert r.content == str(len(body)).encode()
    assert mw.buffers.in_use == 0  # every request's bytes were given back


async def test_disconnect_mid_body_releases_its_buffered_bytes() -> None:
    mw = IdempotencyMiddleware(Uploads())
    seen: list[int] = []
    incoming = [{"type": "http.request", "body": b"a" * 1000, "more_body": True}]

    async def receive() -> Any:
        if incoming:
            return incoming.pop(0)
        seen.append(mw.buffers.in_use)  # the first chunk is held while waiting for more
        return {"type": "http.disconnect"}

    async def send(msg: Any) -> None:
        raise AssertionError(f"nothing is sent to a client that went away: {msg}")

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/x",
        "headers": [(b"idempotency-key", b"k")],
        "client": ("127.0.0.1", 1),
        "query_string": b"",
    }
    await mw(scope, receive, send)
    assert seen == [1000]
    assert mw.buffers.in_use == 0
