"""Exception handlers for Starlette and FastAPI: resilience errors raised in a route.

Real apps under uvicorn (tests/_server.py) for both frameworks, plus byte-for-byte parity with
the answer of ``ResilienceMiddleware`` (the same table, the same formatter).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket

import resilience as rs
from interceptors.asgi import (
    HANDLED_ERRORS,
    RateLimitMiddleware,
    ResilienceMiddleware,
    install_exception_handlers,
    resilience_exception_handler,
)
from interceptors.asgi._common import Message, Receive, Scope, Send
from interceptors.errors import ERROR_TABLE, UNMAPPED, classify
from resilience.testing import FakeClock

from ..._server import serve

# path -> the error its route raises (Retry-After expected: whole seconds, rounded up)
ERRORS: dict[str, Callable[[], Exception]] = {
    "/open": lambda: rs.CircuitOpenError(retry_after=2.5, policy="backend"),
    "/forced": lambda: rs.CircuitOpenError("forced open", forced=True),
    "/limited": lambda: rs.RateLimitedError(retry_after=0.2),
    "/full": lambda: rs.BulkheadFullError(retry_after=7),
    "/full-no-delay": lambda: rs.BulkheadFullError(),
    "/late": lambda: rs.TimeoutExceededError("the backend took too long", timeout=1.0),
    "/store": lambda: rs.StoreError("redis down"),
    "/in-progress": lambda: rs.IdempotencyInProgressError(retry_after=1),
    "/reused": lambda: rs.IdempotencyKeyReusedError(),
    "/rejected": lambda: rs.RejectedError("shed", retry_after=0),
    "/config": lambda: rs.ConfigurationError("a bug"),
    "/value": lambda: ValueError("the app's own"),
}

EXPECTED: dict[str, tuple[int, str | None, str | None]] = {
    # path -> (status, problem type slug or None for a plain 500, Retry-After)
    "/open": (503, "circuit-open", "3"),
    "/forced": (503, "circuit-open", None),
    "/limited": (429, "rate-limited", "1"),
    "/full": (503, "bulkhead-full", "7"),
    "/full-no-delay": (503, "bulkhead-full", None),
    "/late": (504, "timeout", None),
    "/store": (503, "store-unavailable", None),
    "/in-progress": (409, "idempotency#in-progress", "1"),
    "/reused": (422, "idempotency#key-reused", None),
    "/rejected": (503, "rejected", "0"),
    "/config": (500, None, None),
    "/value": (500, None, None),
}


def starlette_app() -> Starlette:
    def route(make: Callable[[], Exception]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            raise make()

        return endpoint

    app = Starlette(routes=[Route(path, route(make)) for path, make in ERRORS.items()])
    install_exception_handlers(app)
    return app


def fastapi_app() -> FastAPI:
    app = FastAPI()
    for path, make in ERRORS.items():

        def endpoint(make: Callable[[], Exception] = make) -> dict[str, str]:
            raise make()

        # a sync route (FastAPI runs it in a thread) and an async one
        app.get(path)(endpoint)

        async def aendpoint(make: Callable[[], Exception] = make) -> dict[str, str]:
            raise make()

        app.get("/async" + path)(aendpoint)
    install_exception_handlers(app)
    return app


@pytest.fixture(scope="module", params=["starlette", "fastapi"])
def client(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    app = starlette_app() if request.param == "starlette" else fastapi_app()
    # a fresh connection per request: uvicorn closes one after an app exception (the 500s)
    fresh = httpx.Limits(max_keepalive_connections=0)
    with serve(app) as url, httpx.Client(base_url=url, timeout=10, limits=fresh) as c:
        yield c


@pytest.mark.parametrize("path", sorted(ERRORS))
def test_route_errors_become_problem_responses(client: httpx.Client, path: str) -> None:
    status, slug, retry_after = EXPECTED[path]
    response = client.get(path)
    assert response.status_code == status
    assert response.headers.get("retry-after") == retry_after
    if slug is None:  # not a resilience refusal: the framework's own 500
        assert response.headers["content-type"] != "application/problem+json"
        return
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["cache-control"] == "no-store"
    doc = response.json()
    row = classify(ERRORS[path]())
    assert row is not None
    assert doc == {
        "type": "urn:resilience:problem:" + slug,
        "title": row.title,
        "status": status,
        "detail": str(ERRORS[path]()),
    }


@pytest.mark.parametrize("path", ["/open", "/limited", "/late"])
def test_fastapi_async_routes_too(path: str) -> None:
    with serve(fastapi_app()) as url:
        response = httpx.get(url + "/async" + path, timeout=10)
    status, _, retry_after = EXPECTED[path]
    assert (response.status_code, response.headers.get("retry-after")) == (status, retry_after)


def test_every_table_row_is_handled_and_no_unmapped_error() -> None:
    assert tuple(row.error for row in ERROR_TABLE) == HANDLED_ERRORS
    assert not any(issubclass(u, HANDLED_ERRORS) for u in UNMAPPED)
    app = Starlette()
    install_exception_handlers(app)
    assert {c: app.exception_handlers[c] for c in HANDLED_ERRORS} == dict.fromkeys(
        HANDLED_ERRORS, resilience_exception_handler
    )


def test_install_keeps_a_handler_the_app_already_has_unless_replaced() -> None:
    async def mine(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("mine", status_code=418)

    app = FastAPI(exception_handlers={rs.RateLimitedError: mine})
    install_exception_handlers(app)
    assert app.exception_handlers[rs.RateLimitedError] is mine
    assert app.exception_handlers[rs.CircuitOpenError] is resilience_exception_handler
    install_exception_handlers(app, replace=True)
    assert app.exception_handlers[rs.RateLimitedError] is resilience_exception_handler


async def _call(app: Any, path: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], list(start["headers"]), body


@pytest.mark.parametrize("path", [p for p, e in EXPECTED.items() if e[1] is not None])
def test_the_handler_answers_byte_for_byte_like_the_middleware(path: str) -> None:
    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        raise ERRORS[scope["path"]]()

    middleware = ResilienceMiddleware(raw, pipeline=rs.Timeout(30))
    by_handler = asyncio.run(_call(starlette_app(), path))
    by_middleware = asyncio.run(_call(middleware, path))
    assert by_handler == by_middleware


def test_a_policy_refusal_refunds_the_enclosing_rate_limit() -> None:
    clock = FakeClock()
    breaker = rs.CircuitBreaker("backend", failure_count=1, open_for=30, clock=clock)
    breaker.open()  # every outbound call is refused by the breaker itself

    async def backend() -> str:
        return "never"

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse(await breaker.acall(backend))

    async def own_503(request: Request) -> Response:
        raise rs.CircuitOpenError("constructed by the app")  # no policy stamp: no refund

    inner = Starlette(routes=[Route("/", endpoint), Route("/own", own_503)])
    install_exception_handlers(inner)
    limiter = rs.RateLimiter("per-ip", rate=1, per=3600, clock=clock)
    app = RateLimitMiddleware(inner, limiter=limiter)
    for _ in range(3):  # each refusal gives its permit back: never a 429
        status, _, _ = asyncio.run(_call(app, "/"))
        assert status == 503
    assert limiter.try_acquire(key="127.0.0.1", cost=0).remaining == 1
    assert asyncio.run(_call(app, "/own"))[0] == 503  # a refusal of the app's own spends
    assert asyncio.run(_call(app, "/own"))[0] == 429


def test_a_fastapi_dependency_can_apply_a_limiter_per_route() -> None:
    clock = FakeClock()
    limiter = rs.RateLimiter("search", rate=1, per=60, clock=clock)

    async def limited(request: Request) -> None:
        assert request.client is not None
        await limiter.aacquire(key=request.client.host)

    app = FastAPI()

    @app.get("/search", dependencies=[Depends(limited)])
    async def search() -> dict[str, str]:
        return {"hits": "none"}

    @app.get("/free")
    async def free() -> dict[str, str]:
        return {"ok": "yes"}

    install_exception_handlers(app)
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as c:
        assert c.get("/search").status_code == 200
        refused = c.get("/search")
        assert (refused.status_code, refused.headers["retry-after"]) == (429, "60")
        assert refused.json()["type"] == "urn:resilience:problem:rate-limited"
        assert c.get("/free").status_code == 200


def test_errors_outside_http_and_unmapped_errors_are_re_raised() -> None:
    async def receive() -> Message:  # pragma: no cover - never called
        raise AssertionError

    async def send(message: Message) -> None:  # pragma: no cover - never called
        raise AssertionError

    websocket = WebSocket({"type": "websocket", "path": "/ws", "headers": []}, receive, send)
    err = rs.CircuitOpenError(retry_after=1)
    with pytest.raises(rs.CircuitOpenError):
        asyncio.run(resilience_exception_handler(websocket, err))
    http = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    with pytest.raises(rs.ConfigurationError):
        asyncio.run(resilience_exception_handler(http, rs.ConfigurationError("bug")))
    response = asyncio.run(resilience_exception_handler(http, err))
    assert json.loads(bytes(response.body))["status"] == 503
