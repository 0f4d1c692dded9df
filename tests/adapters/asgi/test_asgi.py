"""ResilienceMiddleware on a real uvicorn server: pass-through, streaming, disconnects and
exceptions, request bodies, route selection and operation names.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import resilience as rs
from interceptors.asgi import (
    RateLimitMiddleware,
    ResilienceMiddleware,
    RouteFilter,
    ServerErrorResponse,
)

from ..._asgi_apps import FakeLimiter, Permits, Reject, TestApp
from ..._server import serve
from ...helpers import wait_until

# -- pass-through ---------------------------------------------------------------------------


def test_lifespan_passes_through_and_startup_shutdown_complete(app: TestApp) -> None:
    limiter = FakeLimiter()
    mw = RateLimitMiddleware(
        ResilienceMiddleware(app, pipeline=rs.Pipeline(Permits())), limiter=limiter
    )
    with serve(mw, lifespan="on") as url:
        assert app.lifespan == ["startup"]
        assert httpx.get(url + "/hello").text == "hello"
    assert app.lifespan == ["startup", "shutdown"]
    assert limiter.keys == ["127.0.0.1"]


@pytest.mark.parametrize("scope_type", ["websocket", "lifespan", "custom.protocol"])
def test_non_http_scopes_are_forwarded_untouched(scope_type: str) -> None:
    seen: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: Any) -> None:
        pass

    scope = {"type": scope_type, "path": "/", "headers": [], "client": ("1.2.3.4", 1)}
    limiter = FakeLimiter()
    for mw in (
        ResilienceMiddleware(inner, pipeline=Reject(rs.CircuitOpenError())),
        RateLimitMiddleware(inner, limiter=limiter),
    ):
        asyncio.run(mw(scope, receive, send))
    assert seen == [(scope, receive, send)] * 2
    assert limiter.keys == []


# -- streaming, disconnects, exceptions ------------------------------------------------------


def test_streaming_response_is_not_buffered(app: TestApp, guarded: httpx.Client) -> None:
    with guarded.stream("GET", "/stream") as response:
        chunks = response.iter_raw()
        first = next(chunks)
        # the app is still blocked after its first chunk: nothing was buffered
        assert first == b"first"
        assert app.state["stream_done"] is False
        app.release.set()
        assert b"".join(chunks) == b"second"
    assert wait_until(lambda: app.state["stream_done"] is True)


def test_client_disconnect_releases_the_permit(
    app: TestApp, permits: Permits, guarded: httpx.Client
) -> None:
    with guarded.stream("GET", "/forever") as response:
        chunks = response.iter_raw()  # keep a reference: a collected iterator closes the stream
        assert next(chunks)
        assert permits.in_flight == 1
        assert "disconnected" not in app.state
    # leaving the block closes the half-read response: the connection is dropped
    assert wait_until(lambda: permits.in_flight == 0)
    assert wait_until(lambda: app.state.get("disconnected") is True)


def test_app_exception_propagates_and_releases(permits: Permits, guarded: httpx.Client) -> None:
    response = guarded.get("/boom")
    assert response.status_code == 500  # uvicorn's own answer to an exception: it propagated
    assert response.headers["content-type"].startswith("text/plain")
    assert wait_until(lambda: permits.outcomes == ["RuntimeError"])
    assert permits.in_flight == 0


def test_exception_after_start_aborts_the_response(permits: Permits, guarded: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        guarded.get("/boom-after-start")
    assert wait_until(lambda: permits.outcomes == ["RuntimeError"])
    assert permits.in_flight == 0


def test_policy_error_after_start_never_sends_a_second_start() -> None:
    messages: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        raise rs.TimeoutExceededError("too slow", timeout=1.0)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        messages.append(message)

    mw = ResilienceMiddleware(inner, pipeline=Permits())
    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    with pytest.raises(rs.TimeoutExceededError):
        asyncio.run(mw(scope, receive, send))
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.body"]


def test_request_body_reaches_the_app_unchanged(app: TestApp, guarded: httpx.Client) -> None:
    body = [b"a" * 70_000, b"b" * 3, b"c" * 100_000]
    response = guarded.post("/echo", content=iter(body))
    assert response.content == b"".join(body)
    assert app.state["echo_chunks"] >= 2  # more_body framing reached the app


def test_5xx_response_counts_as_failure_but_reaches_client_intact(
    permits: Permits, guarded: httpx.Client
) -> None:
    response = guarded.get("/status/503")
    assert (response.status_code, response.text) == (503, "status")
    assert "retry-after" not in response.headers
    assert wait_until(lambda: permits.outcomes == [ServerErrorResponse.__name__])
    assert guarded.get("/status/404").status_code == 404
    assert wait_until(lambda: permits.outcomes[-1:] == ["ok"])


# -- route selection and operation names -----------------------------------------------------


def test_route_selection_and_operation_names(app: TestApp) -> None:
    permits = Permits()
    mw = ResilienceMiddleware(
        app,
        pipeline=permits,
        include=["/status", "/hello"],
        exclude=["/status/404"],
        operation=lambda scope: scope["method"] + " " + scope["path"].split("/")[1],
    )
    with serve(mw) as url, httpx.Client(base_url=url) as client:
        assert client.get("/hello").status_code == 200
        assert client.get("/status/404").status_code == 404  # excluded
        assert client.get("/health").status_code == 200  # not included
        assert client.post("/status/200").status_code == 200
    assert wait_until(lambda: len(permits.outcomes) == 2)
    assert permits.operations == ["GET hello", "POST status"]


def test_route_filter_predicate_and_validation() -> None:
    f = RouteFilter(when=lambda scope: scope.get("method") == "POST")
    assert f({"path": "/", "method": "POST"})
    assert not f({"path": "/", "method": "GET"})
    assert RouteFilter(include=["/"])({"path": "/anything"})
    with pytest.raises(rs.ConfigurationError):
        RouteFilter(include="/api")
    with pytest.raises(rs.ConfigurationError):
        RouteFilter(exclude=["api"])
