"""A Hedge inside AsyncResilientTransport, against a real uvicorn server whose first response to
each path is slow: only requests safe to send twice are hedged."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import resilience as rs
from interceptors.asgi._common import Receive, Scope, Send
from interceptors.httpx import AsyncResilientTransport
from resilience.events import HedgeCancelled, HedgeStarted, HedgeWon
from resilience.testing import RecordingListener

from ..._server import serve


class SlowFirst:
    """The first request to a path waits for a second one to arrive (at most ``patience`` s),
    then another second: a hedge always answers first. Later requests answer at once."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self.second: dict[str, asyncio.Event] = {}
        self.patience = 0.5

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        n = self.seen[path] = self.seen.get(path, 0) + 1
        arrived = self.second.setdefault(path, asyncio.Event())
        if n == 1:
            try:
                await asyncio.wait_for(arrived.wait(), self.patience)
                await asyncio.sleep(1.0)  # the slow first response
            except TimeoutError:
                pass
        else:
            arrived.set()
        body = f"attempt-{n}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[SlowFirst, str]]:
    app = SlowFirst()
    with serve(app) as url:
        yield app, url


async def send(url: str, method: str, rec: RecordingListener, **kwargs: Any) -> httpx.Response:
    transport = AsyncResilientTransport(rs.Hedge(delay=0.05, listeners=[rec]))
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.request(method, url, **kwargs)
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert others == []  # the loser's task is gone
    return response


@pytest.mark.parametrize(
    ("method", "headers"),
    [("GET", {}), ("PUT", {}), ("POST", {"Idempotency-Key": "k-1"})],
)
def test_safe_requests_are_hedged_and_the_slow_first_is_cancelled(
    server: tuple[SlowFirst, str], method: str, headers: dict[str, str]
) -> None:
    app, url = server
    path = f"/{uuid.uuid4().hex}"
    rec = RecordingListener()
    response = asyncio.run(send(url + path, method, rec, headers=headers, content=b"{}"))
    assert response.text == "attempt-2"
    assert app.seen[path] == 2
    assert [type(e) for e in rec.events] == [HedgeStarted, HedgeWon, HedgeCancelled]
    assert rec.of(HedgeStarted)[0].operation == f"{method} {url.removeprefix('http://')}"


def test_a_post_without_idempotency_key_is_never_sent_twice(server: tuple[SlowFirst, str]) -> None:
    app, url = server
    path = f"/{uuid.uuid4().hex}"
    rec = RecordingListener()
    response = asyncio.run(send(url + path, "POST", rec, content=b"{}"))
    assert response.text == "attempt-1"  # the primary continued
    assert app.seen[path] == 1
    assert rec.events == []


def test_the_transport_can_add_the_key_that_makes_a_post_hedgeable(
    server: tuple[SlowFirst, str],
) -> None:
    app, url = server
    path = f"/{uuid.uuid4().hex}"
    rec = RecordingListener()

    async def main() -> httpx.Response:
        transport = AsyncResilientTransport(
            rs.Hedge(delay=0.05, listeners=[rec]), idempotency_key=True
        )
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.post(url + path, content=b"{}")

    assert asyncio.run(main()).text == "attempt-2"
    assert app.seen[path] == 2


class Tracked(httpx.AsyncByteStream):
    def __init__(self, closed: list[int], n: int) -> None:
        self.closed, self.n = closed, n

    async def __aiter__(self) -> Any:
        yield b"busy"

    async def aclose(self) -> None:
        self.closed.append(self.n)


def test_every_response_not_returned_is_closed() -> None:
    closed: list[int] = []
    sent: list[int] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        n = len(sent) + 1
        sent.append(n)
        await asyncio.sleep(0)
        return httpx.Response(503, stream=Tracked(closed, n))

    async def main() -> httpx.Response:
        hedge = rs.Hedge(delay=0, attempts=3, on_result=lambda r: r.status_code >= 500)
        transport = AsyncResilientTransport(hedge, transport=httpx.MockTransport(handler))
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.get("http://a.local/", extensions={})

    response = asyncio.run(main())
    assert response.status_code == 503
    assert sent == [1, 2, 3]
    # each closed exactly once: the two discarded by the transport, the returned one by httpx
    # after reading it (without the transport's bookkeeping, a replaced response leaked)
    assert sorted(closed) == [1, 2, 3]


def test_the_sync_transport_refuses_a_hedge() -> None:
    from interceptors.httpx import ResilientTransport

    inner = httpx.MockTransport(lambda request: httpx.Response(204))
    client = httpx.Client(transport=ResilientTransport(rs.Hedge(delay=0.1), transport=inner))
    with pytest.raises(rs.ConfigurationError, match="coroutine functions only"):
        client.get("http://a.local/")
