"""IdempotencyMiddleware under concurrent duplicates: 409 while in progress, then replay; 100
duplicates on a real uvicorn server run once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from interceptors.asgi import IdempotencyMiddleware

from .idempotency_app import App, client


async def test_concurrent_duplicate_is_409_then_replayed(app: App) -> None:
    app.gate = asyncio.Event()
    app.entered = asyncio.Event()
    mw = IdempotencyMiddleware(app.app)
    async with client(mw) as c:
        h = {"Idempotency-Key": "k"}
        first = asyncio.create_task(c.post("/orders", content=b"x", headers=h))
        await asyncio.wait_for(app.entered.wait(), 5)  # the first request holds the claim
        dup = await c.post("/orders", content=b"x", headers=h)
        app.gate.set()
        r1 = await first
        r3 = await c.post("/orders", content=b"x", headers=h)
    assert dup.status_code == 409
    assert dup.headers["retry-after"] == "60"
    assert dup.json()["type"] == "urn:resilience:problem:idempotency#in-progress"
    assert r1.status_code == 201
    assert r3.headers["idempotent-replayed"] == "true"
    assert app.runs == 1


# -- a real server -----------------------------------------------------------------------------
@pytest.fixture
def server(app: App) -> Iterator[tuple[str, App, IdempotencyMiddleware]]:
    arrivals = _Arrivals(expected=100)
    slow = Starlette(routes=[Route("/pay", _slow_pay(app, arrivals), methods=["POST"])])
    mw = arrivals.inner = IdempotencyMiddleware(slow, wait=10)
    config = uvicorn.Config(arrivals, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(500):
        if srv.started:
            break
        threading.Event().wait(0.01)
    assert srv.started
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app, mw
    finally:
        srv.should_exit = True
        thread.join(10)


class _Arrivals:
    """An ASGI wrapper in front of the middleware counting the HTTP requests that reached the
    server; ``all_in`` is set once ``expected`` have."""

    def __init__(self, expected: int) -> None:
        self.inner: Any = None
        self.expected = expected
        self.count = 0
        self.all_in = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.count += 1
            if self.count >= self.expected:
                self.all_in.set()
        await self.inner(scope, receive, send)


def _slow_pay(app: App, arrivals: _Arrivals) -> Any:
    async def pay(request: Request) -> Response:
        app.runs += 1
        # the first run lasts until every duplicate has reached the server (no timed sleep)
        await asyncio.wait_for(arrivals.all_in.wait(), 10)
        return JSONResponse({"paid": await request.json(), "run": app.runs})

    return pay


async def test_100_concurrent_http_duplicates_execute_once(
    server: tuple[str, App, IdempotencyMiddleware],
) -> None:
    url, app, _mw = server
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as c:
        h = {"Idempotency-Key": '"pay-1"', "Authorization": "Bearer alice"}
        responses = await asyncio.gather(
            *(c.post("/pay", json={"amount": 5}, headers=h) for _ in range(100))
        )
    assert app.runs == 1
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    replayed = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
    assert len(replayed) == 99


async def test_real_server_conflicts_without_wait(app: App) -> None:
    arrivals = _Arrivals(expected=100)
    slow = Starlette(routes=[Route("/pay", _slow_pay(app, arrivals), methods=["POST"])])
    arrivals.inner = IdempotencyMiddleware(slow)
    config = uvicorn.Config(arrivals, host="127.0.0.1", port=0, log_level="warning")
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    for _ in range(500):
        if srv.started:
            break
        await asyncio.sleep(0.01)  # polling interval while uvicorn starts
    assert srv.started
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=httpx.Limits(max_connections=100)
        ) as c:
            h = {"Idempotency-Key": "pay-2"}
            responses = await asyncio.gather(
                *(c.post("/pay", json={"amount": 5}, headers=h) for _ in range(100))
            )
            other_user = await c.post(
                "/pay", json={"amount": 5}, headers={**h, "Authorization": "Bearer bob"}
            )
    finally:
        srv.should_exit = True
        await task
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 1  # every duplicate arrived while the first one ran
    assert codes.count(409) == 99
    assert app.runs == 2  # one for the anonymous-IP principal, one for bob
    assert other_user.status_code == 200
    assert "idempotent-replayed" not in other_user.headers
