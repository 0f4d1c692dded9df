"""The retry delay of an in-flight duplicate comes from observed durations, not the lease."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent import futures
from typing import Any

import grpc
import httpx

import resilience as rs
from interceptors._duration_hints import DurationHints
from interceptors.asgi import IdempotencyMiddleware
from interceptors.grpc import IDEMPOTENCY_KEY, PUSHBACK_KEY, ResilienceServerInterceptor
from resilience.testing import FakeClock

from .._server import serve

SLOW = {"X-Slow": "1"}


def test_the_estimate_is_smoothed_and_capped_by_the_lease() -> None:
    hints = DurationHints(max_operations=1)
    assert hints.hint("op", 42.0) == 42.0  # nothing observed: the lease left
    hints.observe("op", 2.0)
    assert hints.estimate("op") == 2.0 + 4 * 1.0  # s = d, v = d / 2
    hints.observe("op", 2.0)
    assert hints.estimate("op") == 2.0 + 4 * 0.75  # the deviation decays
    assert hints.hint("op", 3.0) == 3.0  # never past the lease
    hints.observe("other", 1.0)  # over max_operations: not tracked
    assert hints.estimate("other") is None
    hints.observe("op", float("nan"))  # ignored
    assert hints.estimate("op") == 5.0


class Orders:
    """An ASGI app: a request takes ``work()``; one with ``X-Slow`` waits for ``release``."""

    def __init__(
        self,
        work: Callable[[], Awaitable[object]],
        wait: Callable[[], Awaitable[object]],
        entered: Callable[[], None],
    ) -> None:
        self.work = work
        self.wait = wait
        self.entered = entered

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (b"x-slow", b"1") in scope["headers"]:
            self.entered()
            await self.wait()
        else:
            await self.work()
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"created"})


def _retry_after_on_a_fake_clock(took: float, lease: float, completed: int) -> str:
    clock = FakeClock()
    gate = asyncio.Event()

    async def work() -> None:
        clock.advance(took)

    entered = asyncio.Event()
    app = Orders(work, gate.wait, entered.set)
    mw = IdempotencyMiddleware(app, lease=lease, clock=clock)

    async def main() -> str:
        transport = httpx.ASGITransport(app=mw)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for i in range(completed):
                done = await client.post("/orders", headers={"Idempotency-Key": f"k{i}"})
                assert done.status_code == 201
            first = asyncio.ensure_future(
                client.post("/orders", headers={"Idempotency-Key": "dup", **SLOW})
            )
            await entered.wait()  # the first request reached the app (no time passed)
            dup = await client.post("/orders", headers={"Idempotency-Key": "dup"})
            gate.set()
            assert (await first).status_code == 201
        assert dup.status_code == 409
        return dup.headers["retry-after"]

    return asyncio.run(main())


def test_asgi_retry_after_follows_observed_durations() -> None:
    # requests taking 50 ms: 50 ms + 4 x 25 ms, rounded up to whole seconds
    assert _retry_after_on_a_fake_clock(0.05, lease=60, completed=1) == "1"
    # 2.5 s: 2.5 + 4 x 1.25 = 7.5 s -> 8
    assert _retry_after_on_a_fake_clock(2.5, lease=60, completed=1) == "8"
    # never more than the lease left
    assert _retry_after_on_a_fake_clock(30.0, lease=20, completed=1) == "20"
    # nothing completed yet: the lease left, as before
    assert _retry_after_on_a_fake_clock(0.05, lease=60, completed=0) == "60"


def test_asgi_retry_after_on_a_real_server() -> None:
    release = threading.Event()

    async def work() -> None:
        await asyncio.sleep(0.02)  # the request's own work

    async def wait() -> None:
        await asyncio.to_thread(release.wait, 10)

    entered = threading.Event()
    app = Orders(work, wait, entered.set)
    with serve(IdempotencyMiddleware(app, lease=60)) as url, httpx.Client(base_url=url) as client:
        assert client.post("/orders", headers={"Idempotency-Key": "a"}).status_code == 201
        with futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(
                client.post, "/orders", headers={"Idempotency-Key": "b", **SLOW}, timeout=10
            )
            assert entered.wait(10)
            dup = client.post("/orders", headers={"Idempotency-Key": "b"})
            release.set()
            assert first.result(10).status_code == 201
    assert dup.status_code == 409
    assert dup.headers["retry-after"] == "1"  # not the 60 s lease


def test_grpc_pushback_follows_observed_durations() -> None:
    clock = FakeClock()
    entered, release = threading.Event(), threading.Event()

    def charge(request: bytes, context: Any) -> bytes:
        if request == b"slow":
            entered.set()
            release.wait(10)
        else:
            clock.advance(0.25)
        return b"ok"

    handlers = grpc.method_handlers_generic_handler(
        "shop.Pay", {"Charge": grpc.unary_unary_rpc_method_handler(charge)}
    )
    records = rs.IdempotencyRecords(clock=clock, lease=45)
    interceptor = ResilienceServerInterceptor(pipeline=None, idempotency=records)
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[interceptor])
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as raw:
            channel: Any = raw
            call: Any = channel.unary_unary("/shop.Pay/Charge")
            assert call(b"fast", metadata=((IDEMPOTENCY_KEY, "a"),), timeout=10) == b"ok"
            first = call.future(b"slow", metadata=((IDEMPOTENCY_KEY, "b"),), timeout=10)
            assert entered.wait(10)
            try:
                call(b"slow", metadata=((IDEMPOTENCY_KEY, "b"),), timeout=10)
            except grpc.RpcError as exc:
                dup: Any = exc
            release.set()
            assert first.result(10) == b"ok"
    finally:
        server.stop(None)
    assert dup.code() is grpc.StatusCode.ABORTED
    # 250 ms + 4 x 125 ms, in milliseconds (not the 45 s lease)
    assert dict(dup.trailing_metadata())[PUSHBACK_KEY] == "750"


def test_asgi_retry_after_behind_a_mount_on_a_real_server() -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Mount, Route

    release, entered = threading.Event(), threading.Event()

    async def create(request: Request) -> Response:
        if request.headers.get("x-slow"):
            entered.set()
            await asyncio.to_thread(release.wait, 10)
        return Response(b"created", status_code=201)

    app = Starlette(
        routes=[Mount("/api", routes=[Route("/orders", create, methods=["POST"])])],
        middleware=[Middleware(IdempotencyMiddleware, lease=60)],
    )
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.post("/api/orders", headers={"Idempotency-Key": "a"}).status_code == 201
        with futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(
                client.post, "/api/orders", headers={"Idempotency-Key": "b", **SLOW}, timeout=10
            )
            assert entered.wait(10)
            dup = client.post("/api/orders", headers={"Idempotency-Key": "b"})
            release.set()
            assert first.result(10).status_code == 201
    assert dup.status_code == 409
    assert dup.headers["retry-after"] == "1"  # the route's own durations, through the mount
