"""IdempotencyMiddleware: in-process ASGI tests and a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import resilience as rs
from interceptors.asgi import IdempotencyMiddleware
from interceptors.asgi._idempotency import parse_idempotency_key
from resilience.idempotency import MAX_RESPONSE_BYTES
from resilience.stores import StoreOp
from resilience.testing import FakeClock

from .._server import serve
from ..helpers import BrokenStore


class App:
    """A Starlette app counting executions; behaviour per path."""

    def __init__(self) -> None:
        self.runs = 0
        self.bodies: list[bytes] = []
        self.gate: asyncio.Event | None = None

        async def create(request: Request) -> Response:
            self.runs += 1
            body = await request.body()
            self.bodies.append(body)
            if self.gate is not None:
                await self.gate.wait()
            resp = JSONResponse({"run": self.runs, "echo": body.decode()}, status_code=201)
            resp.headers["location"] = f"/orders/{self.runs}"
            resp.set_cookie("session", "secret")
            return resp

        async def status(request: Request) -> Response:
            self.runs += 1
            return Response(f"run {self.runs}", status_code=int(request.path_params["code"]))

        async def crash(request: Request) -> Response:
            self.runs += 1
            raise RuntimeError("handler bug")

        async def big(request: Request) -> Response:
            self.runs += 1

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(4):
                    yield b"x" * 1000

            return StreamingResponse(chunks(), media_type="text/plain")

        self.app = Starlette(
            routes=[
                Route("/orders", create, methods=["POST", "GET"]),
                Route("/status/{code:int}", status, methods=["POST"]),
                Route("/crash", crash, methods=["POST"]),
                Route("/big", big, methods=["POST"]),
            ]
        )


def client(mw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=mw, raise_app_exceptions=False), base_url="http://t"
    )


@pytest.fixture
def app() -> App:
    return App()


async def test_replay_is_identical_and_marked(app: App) -> None:
    mw = IdempotencyMiddleware(app.app, clock=FakeClock())
    async with client(mw) as c:
        first = await c.post("/orders", content=b"pay 5", headers={"Idempotency-Key": '"k-1"'})
        again = await c.post("/orders", content=b"pay 5", headers={"Idempotency-Key": "k-1"})
    assert app.runs == 1
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["location"] == "/orders/1"
    assert again.headers["content-type"] == "application/json"
    assert "set-cookie" in first.headers
    assert "set-cookie" not in again.headers


async def test_key_reuse_with_a_different_body_is_422(app: App) -> None:
    mw = IdempotencyMiddleware(app.app)
    async with client(mw) as c:
        await c.post("/orders", content=b"pay 5", headers={"Idempotency-Key": "k"})
        r = await c.post("/orders", content=b"pay 500", headers={"Idempotency-Key": "k"})
        q = await c.post("/orders?x=1", content=b"pay 5", headers={"Idempotency-Key": "k"})
        ok = await c.post("/orders", content=b"pay 5", headers={"Idempotency-Key": "k"})
    assert r.status_code == q.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 422
    assert ok.headers["idempotent-replayed"] == "true"
    assert app.runs == 1


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b'""',
        b"a b",
        b"x" * 256,
        b'"' + b"x" * 256 + b'"',
        b"caf\xc3\xa9",
        b"a\x00b",
        b'"abc',
        b'"a"b"',
        b"a,b",
        b'"a\\qb"',
        b"\tab\x7f",
    ],
)
async def test_malformed_keys_are_400_and_not_stored(app: App, value: bytes) -> None:
    mw = IdempotencyMiddleware(app.app)
    async with client(mw) as c:
        r = await c.post("/orders", content=b"x", headers=[(b"Idempotency-Key", value)])
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert app.runs == 0
    assert len(mw.records.store) == 0


async def test_two_key_fields_are_400(app: App) -> None:
    mw = IdempotencyMiddleware(app.app)
    async with client(mw) as c:
        r = await c.post(
            "/orders",
            content=b"x",
            headers=[(b"Idempotency-Key", b"a"), (b"Idempotency-Key", b"a")],
        )
    assert r.status_code == 400
    assert app.runs == 0


def test_key_parser_accepts_both_forms_and_escapes() -> None:
    assert parse_idempotency_key(b'"a\\"b"') == 'a"b'
    assert parse_idempotency_key(b"  k-1  ") == "k-1"
    assert parse_idempotency_key(b"x" * 255) == "x" * 255
    assert parse_idempotency_key(b"x" * 100_000) is None


async def test_required_and_optional_keys(app: App) -> None:
    required = IdempotencyMiddleware(app.app, required=True)
    optional = IdempotencyMiddleware(app.app)
    async with client(required) as c:
        r = await c.post("/orders", content=b"x")
        g = await c.get("/orders")  # GET is not in methods: passes through
    assert r.status_code == 400
    assert g.status_code == 201
    async with client(optional) as c:
        assert (await c.post("/orders", content=b"x")).status_code == 201
        assert (await c.post("/orders", content=b"x")).status_code == 201
    assert app.runs == 3


async def test_principals_are_isolated(app: App) -> None:
    mw = IdempotencyMiddleware(app.app)
    async with client(mw) as c:
        h = {"Idempotency-Key": "same"}
        a = await c.post("/orders", content=b"x", headers={**h, "Authorization": "Bearer alice"})
        b = await c.post("/orders", content=b"x", headers={**h, "Authorization": "Bearer bob"})
        a2 = await c.post("/orders", content=b"x", headers={**h, "Authorization": "Bearer alice"})
        other_path = await c.post(
            "/status/200", content=b"x", headers={**h, "Authorization": "Bearer alice"}
        )
    assert a.json()["run"] == 1
    assert b.json()["run"] == 2  # never alice's response
    assert a2.json()["run"] == 1
    assert "idempotent-replayed" not in b.headers
    assert other_path.text == "run 3"  # keys are scoped by method + path too


async def test_custom_scope_none_passes_through(app: App) -> None:
    mw = IdempotencyMiddleware(app.app, scope=lambda s: None)
    async with client(mw) as c:
        for _ in range(2):
            await c.post("/orders", content=b"x", headers={"Idempotency-Key": "k"})
    assert app.runs == 2


async def test_concurrent_duplicate_is_409_then_replayed(app: App) -> None:
    app.gate = asyncio.Event()
    mw = IdempotencyMiddleware(app.app)
    async with client(mw) as c:
        h = {"Idempotency-Key": "k"}
        first = asyncio.create_task(c.post("/orders", content=b"x", headers=h))
        for _ in range(1000):
            if app.runs:
                break
            await asyncio.sleep(0.001)
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


@pytest.mark.parametrize(
    ("code", "stored"),
    [(200, True), (400, True), (404, True), (500, True), (502, True), (429, False), (503, False)],
)
async def test_status_storage_policy(app: App, code: int, stored: bool) -> None:
    mw = IdempotencyMiddleware(app.app)
    async with client(mw) as c:
        h = {"Idempotency-Key": "k"}
        r1 = await c.post(f"/status/{code}", headers=h)
        r2 = await c.post(f"/status/{code}", headers=h)
    assert r1.status_code == r2.status_code == code
    assert app.runs == (1 if stored else 2)
    assert (r2.headers.get("idempotent-replayed") == "true") is stored


async def test_release_statuses_and_never_mode(app: App) -> None:
    mw = IdempotencyMiddleware(app.app, release_statuses={404}, store_errors="never")
    async with client(mw) as c:
        h = {"Idempotency-Key": "k"}
        for code in (404, 404, 500, 500):
            await c.post(f"/status/{code}", headers=h)
    assert app.runs == 4


async def test_exception_is_stored_as_500_problem(app: App) -> None:
    mw = IdempotencyMiddleware(app.app)
    async with client(mw) as c:
        h = {"Idempotency-Key": "k"}
        r1 = await c.post("/crash", headers=h)
        r2 = await c.post("/crash", headers=h)
    assert r1.status_code == 500  # Starlette's error middleware answered, then re-raised
    assert r2.status_code == 500
    assert r2.content == r1.content
    assert r2.headers["idempotent-replayed"] == "true"
    assert app.runs == 1


async def test_raw_app_exception_is_stored_as_500_problem() -> None:
    runs: list[int] = []

    async def raw_app(scope: Any, receive: Any, send: Any) -> None:
        runs.append(1)
        raise RuntimeError("bug")

    mw = IdempotencyMiddleware(raw_app)
    async with client(mw) as c:
        h = {"Idempotency-Key": "k"}
        await c.post("/x", headers=h)
        r2 = await c.post("/x", headers=h)
    assert r2.status_code == 500
    assert r2.headers["content-type"] == "application/problem+json"
    assert r2.headers["idempotent-replayed"] == "true"
    assert len(runs) == 1


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
        await asyncio.sleep(0.01)
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


# -- an outcome that could not be recorded is told (issue 12 item 3) ---------------------------
class FailingCompletions:
    """A memory store whose completions fail (the first ``failures`` of them, or all)."""

    def __init__(self, clock: FakeClock, failures: int | None = None) -> None:
        self.inner = rs.MemoryStore(clock=clock)
        self.failures = failures
        self.log: list[str] = []

    def apply(self, op: StoreOp[Any]) -> Any:
        if type(op).__name__ == "CompleteOp":
            if self.failures is None or self.failures > 0:
                if self.failures is not None:
                    self.failures -= 1
                self.log.append("complete failed")
                raise ConnectionError("store unreachable")
            self.log.append("complete stored")
        return self.inner.apply(op)


async def test_an_unrecorded_outcome_is_told_by_a_header(app: App) -> None:
    clock = FakeClock()
    events: list[Any] = []
    mw = IdempotencyMiddleware(
        app.app, store=FailingCompletions(clock), clock=clock, listeners=[events.append]
    )
    async with client(mw) as c:
        h = {"Idempotency-Key": "k-1"}
        first = await c.post("/orders", content=b"pay 5", headers=h)
        again = await c.post("/orders", content=b"pay 5", headers=h)
    assert first.status_code == 201  # the response the app produced, intact
    assert first.json() == {"run": 1, "echo": "pay 5"}
    assert first.headers["idempotency-outcome"] == "unrecorded"
    assert first.headers["location"] == "/orders/1"
    assert 0 < clock.monotonic() <= 60  # the completion was retried while the lease was held
    assert again.status_code == 409  # the record stays in progress until its lease expires
    assert [(e.kind, e.decision, e.error_type, e.policy) for e in events] == [
        ("store_error", "unrecorded", "ConnectionError", "http")
    ]


async def test_a_response_waits_for_its_record(app: App) -> None:
    """The start of a retained response is sent once the outcome is stored (after a blip
    here), and carries no marker then."""
    clock = FakeClock()
    store = FailingCompletions(clock, failures=2)
    mw = IdempotencyMiddleware(app.app, store=store, clock=clock)
    sent: list[Any] = []
    request = [{"type": "http.request", "body": b"pay 5", "more_body": False}]

    async def receive() -> Any:
        return request.pop() if request else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        store.log.append(message["type"])
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/orders",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"idempotency-key", b"k-2")],
        "client": ("10.0.0.1", 5000),
    }
    await mw(scope, receive, send)
    assert store.log == [
        "complete failed",
        "complete failed",
        "complete stored",
        "http.response.start",  # was sent before the record was even attempted
        "http.response.body",
    ]
    assert sent[0]["status"] == 201
    assert b"idempotency-outcome" not in dict(sent[0]["headers"])


async def test_a_streamed_unrecorded_outcome_is_only_logged_and_an_event(app: App) -> None:
    clock = FakeClock()
    events: list[Any] = []
    mw = IdempotencyMiddleware(
        app.app,
        store=FailingCompletions(clock),
        max_body=2500,
        clock=clock,
        listeners=[events.append],
    )
    async with client(mw) as c:
        r = await c.post("/big", headers={"Idempotency-Key": "k-3"})
    assert r.status_code == 200
    assert len(r.content) == 4000  # streamed through as before
    assert "idempotency-outcome" not in r.headers  # its start went out long before
    assert [e.decision for e in events] == ["unrecorded"]


async def test_released_responses_are_not_held(app: App) -> None:
    clock = FakeClock()
    mw = IdempotencyMiddleware(app.app, store=FailingCompletions(clock), clock=clock)
    async with client(mw) as c:
        r = await c.post("/status/503", headers={"Idempotency-Key": "k-4"})
        again = await c.post("/status/503", headers={"Idempotency-Key": "k-4"})
    assert r.status_code == again.status_code == 503
    assert "idempotency-outcome" not in r.headers  # released (not a stored outcome)
    assert app.runs == 2


def test_listeners_are_validated(app: App) -> None:
    with pytest.raises(rs.ConfigurationError):
        IdempotencyMiddleware(app.app, listeners=[42])  # type: ignore[list-item]
    with pytest.raises(rs.ConfigurationError):
        IdempotencyMiddleware(app.app, listeners="print")  # type: ignore[arg-type]
