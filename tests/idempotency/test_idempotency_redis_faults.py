"""Idempotent and IdempotencyMiddleware (on uvicorn) with a real redis-server that stalls
(SIGSTOP / SIGCONT) while an outcome is stored."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import resilience as rs
from interceptors.asgi import IdempotencyMiddleware
from resilience.stores.redis import RedisStore
from resilience.testing import FakeClock

from .._server import serve
from ..redis_servers import RedisServer

pytestmark = pytest.mark.redis

STALL = 1.5  # seconds the server is stopped, starting as the function returns


class Stall:
    """``start()`` stops the server now and resumes it ``STALL`` seconds later."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.resumed = threading.Event()
        self.timers: list[threading.Timer] = []

    def start(self) -> None:
        self.server.pause()
        timer = threading.Timer(STALL, self._resume)
        self.timers.append(timer)
        timer.start()

    def _resume(self) -> None:
        self.server.resume()
        self.resumed.set()


@pytest.fixture
def stall(own_redis_server: RedisServer) -> Iterator[Stall]:
    s = Stall(own_redis_server)
    yield s
    for timer in s.timers:
        timer.join()


def _store(server: RedisServer, clock: FakeClock) -> RedisStore:
    # the scripts read "now" from the fake clock, so the lease can be expired without waiting;
    # the store's own breaker runs on that clock too (it would never reopen): keep it closed
    return RedisStore.from_url(
        server.url, prefix=f"s{uuid.uuid4().hex[:10]}", clock=clock, failure_threshold=10**6
    )


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_redis_stall_at_completion_runs_the_function_once(
    own_redis_server: RedisServer, stall: Stall, mode: str
) -> None:
    """Redis stops for 1.5 s exactly when the result is stored: the completion is retried while
    the lease is ours, so the retry after the lease replays instead of charging again."""
    clock = FakeClock(start=1000.0)
    store = _store(own_redis_server, clock)
    policy = rs.Idempotent(key=lambda k: k, store=store, lease=30)
    charges: list[str] = []

    def charge_body(k: str) -> dict[str, int]:
        charges.append(k)
        stall.start()  # the store stalls right as the outcome is about to be recorded
        return {"charge": len(charges)}

    if mode == "sync":
        charge = policy(charge_body)
        try:
            first = charge("order-1")  # told success: and it was recorded
            assert stall.resumed.wait(10)
            clock.advance(31)  # past the lease: an in-progress record would be taken over
            again = charge("order-1")
        finally:
            store.close()
    else:

        @policy
        async def acharge(k: str) -> dict[str, int]:
            return charge_body(k)

        async def main() -> tuple[Any, Any]:
            try:
                first = await acharge("order-1")
                await asyncio.to_thread(stall.resumed.wait, 10)
                clock.advance(31)
                return first, await acharge("order-1")
            finally:
                await store.aclose()

        first, again = asyncio.run(main())
    assert first == {"charge": 1}
    assert again == {"charge": 1}  # a replay
    assert charges == ["order-1"]  # one execution in total (was two)


def test_a_stall_longer_than_the_lease_is_reported(own_redis_server: RedisServer) -> None:
    """When the outcome still cannot be recorded while the lease is held, the caller is told
    (with the result), instead of a success that a later retry would repeat."""
    store = RedisStore.from_url(own_redis_server.url, prefix=f"l{uuid.uuid4().hex[:10]}")
    policy = rs.Idempotent(key=lambda k: k, store=store, lease=1)
    charges: list[str] = []

    @policy
    def charge(k: str) -> str:
        charges.append(k)
        own_redis_server.pause()
        return "charged"

    try:
        with pytest.raises(rs.IdempotencyOutcomeUnrecordedError) as info:
            charge("order-2")
        assert info.value.result == "charged"
        assert charges == ["order-2"]
    finally:
        own_redis_server.resume()
        store.close()


# -- over HTTP: IdempotencyMiddleware on a real uvicorn server -------------------------------
def _payments(on_run: Callable[[], None]) -> tuple[Starlette, list[int]]:
    runs: list[int] = []

    async def pay(request: Request) -> Response:
        runs.append(1)
        on_run()  # the store stalls right as the response (and its outcome) is complete
        return JSONResponse({"paid": len(runs)}, status_code=201)

    return Starlette(routes=[Route("/pay", pay, methods=["POST"])]), runs


def test_http_a_redis_stall_at_completion_holds_the_response_until_recorded(
    own_redis_server: RedisServer, stall: Stall
) -> None:
    clock = FakeClock(start=1000.0)
    store = _store(own_redis_server, clock)
    app, runs = _payments(stall.start)
    h = {"Idempotency-Key": "pay-1"}
    try:
        mw = IdempotencyMiddleware(app, store=store, lease=30)
        with serve(mw) as url, httpx.Client(base_url=url, timeout=30) as c:
            began = time.monotonic()
            first = c.post("/pay", headers=h)
            waited = time.monotonic() - began
            assert stall.resumed.wait(10)
            clock.advance(31)  # past the lease: an in-progress record would be taken over
            again = c.post("/pay", headers=h)
    finally:
        store.close()
    assert first.status_code == 201
    assert "idempotency-outcome" not in first.headers  # it was recorded, after the stall
    assert waited >= STALL * 0.8  # the response waited for its record
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json() == {"paid": 1}
    assert runs == [1]


def test_http_a_stall_longer_than_the_lease_is_told_by_a_header(
    own_redis_server: RedisServer,
) -> None:
    """Redis stops as the handler returns and stays stopped past the lease (1 s): the response
    goes out with ``Idempotency-Outcome: unrecorded`` instead of pretending."""
    store = RedisStore.from_url(own_redis_server.url, prefix=f"h{uuid.uuid4().hex[:10]}")
    app, runs = _payments(own_redis_server.pause)
    try:
        mw = IdempotencyMiddleware(app, store=store, lease=1)
        with serve(mw) as url, httpx.Client(base_url=url, timeout=30) as c:
            r = c.post("/pay", headers={"Idempotency-Key": "pay-2"})
    finally:
        own_redis_server.resume()
        store.close()
    assert r.status_code == 201
    assert r.json() == {"paid": 1}
    assert r.headers["idempotency-outcome"] == "unrecorded"
    assert runs == [1]
