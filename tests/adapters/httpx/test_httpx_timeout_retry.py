"""http_retry() retries a per-attempt rs.Timeout (a hung upstream) for re-sendable requests."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

import resilience as rs
from interceptors.httpx import AsyncResilientTransport, ResilientTransport, http_retry
from resilience.backoff import constant

from ..._server import serve


class Hangs:
    """An ASGI app whose first ``hang`` requests hang until released; the others answer 200."""

    def __init__(self, hang: int) -> None:
        self.hang = hang
        self.seen: list[str] = []
        self.lock = threading.Lock()
        self.released = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event: asyncio.Event | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.seen.append(scope["method"])
        if len(self.seen) <= self.hang:
            with self.lock:
                if self.event is None:
                    self.loop, self.event = asyncio.get_running_loop(), asyncio.Event()
                    if self.released:
                        self.event.set()
            await self.event.wait()  # hung upstream (released when the test ends)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def __enter__(self) -> Hangs:
        return self

    def __exit__(self, *exc: object) -> None:
        with self.lock:  # before the server stops: it waits for hung requests
            self.released = True
            if self.loop is not None and self.event is not None:
                self.loop.call_soon_threadsafe(self.event.set)


def _pipeline() -> rs.Pipeline:
    return rs.Pipeline(http_retry(attempts=3, backoff=constant(0)), rs.Timeout(0.3))


def _sync(url: str, method: str, headers: dict[str, str]) -> int:
    with httpx.Client(transport=ResilientTransport(_pipeline()), base_url=url) as client:
        return client.request(method, "/r", content=b"{}", headers=headers).status_code


def _async(url: str, method: str, headers: dict[str, str]) -> int:
    async def go() -> int:
        transport = AsyncResilientTransport(_pipeline())
        async with httpx.AsyncClient(transport=transport, base_url=url) as client:
            reply = await client.request(method, "/r", content=b"{}", headers=headers)
            return reply.status_code

    return asyncio.run(go())


SEND = {"sync": _sync, "async": _async}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("method", "headers"), [("GET", {}), ("PUT", {}), ("POST", {"Idempotency-Key": "k1"})]
)
def test_a_per_attempt_timeout_is_retried(mode: str, method: str, headers: dict[str, str]) -> None:
    app = Hangs(hang=1)
    with serve(app) as url, app:
        assert SEND[mode](url, method, headers) == 200
    assert app.seen == [method, method]  # the hung attempt, then the retry


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_unsafe_request_is_not_resent_after_a_timeout(mode: str) -> None:
    app = Hangs(hang=1)
    with serve(app) as url, app, pytest.raises(rs.TimeoutExceededError):
        SEND[mode](url, "POST", {})
    assert app.seen == ["POST"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_retries_of_timeouts_stop_at_the_attempts(mode: str) -> None:
    app = Hangs(hang=5)
    with serve(app) as url, app, pytest.raises(rs.TimeoutExceededError):
        SEND[mode](url, "GET", {})
    assert app.seen == ["GET"] * 3


def test_the_transports_methods_also_decide() -> None:
    app = Hangs(hang=1)
    transport = ResilientTransport(_pipeline(), methods={"GET"})  # PUT is not re-sent here
    with (
        serve(app) as url,
        app,
        httpx.Client(transport=transport, base_url=url) as client,
        pytest.raises(rs.TimeoutExceededError),
    ):
        client.put("/r", content=b"{}")
    assert app.seen == ["PUT"]
