"""ResilienceMiddleware and inbound deadlines (X-Request-Timeout): published, clamped, expired,
malformed, on the fake clock, onward to gRPC.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import resilience as rs
from interceptors.asgi import (
    ResilienceMiddleware,
)
from interceptors.asgi._common import parse_timeout

from ..._asgi_apps import Permits, TestApp
from ..._server import serve

# -- inbound deadlines -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "upper"),
    [
        ({"X-Request-Timeout": "2.5"}, 2.5),
        ({"Request-Timeout": "250m"}, 0.25),
        ({"Request-Timeout": "soon", "X-Request-Timeout": "1"}, 1.0),
    ],
)
def test_inbound_deadline_is_published(
    guarded: httpx.Client, headers: dict[str, str], upper: float
) -> None:
    left = guarded.get("/deadline", headers=headers).json()
    assert 0 < left <= upper


@pytest.mark.parametrize("value", ["", "abc", "-1", "1e3", "999999999S"])
def test_malformed_inbound_deadline_is_ignored(guarded: httpx.Client, value: str) -> None:
    assert guarded.get("/deadline", headers={"X-Request-Timeout": value}).json() is None


@pytest.mark.parametrize("value", ["9999999999", "99999999H"])
@pytest.mark.parametrize("max_deadline", [300.0, None])
def test_absurd_request_timeout_never_breaks_an_outbound_grpc_call(
    value: str, max_deadline: float | None
) -> None:
    """A client-chosen deadline must not make our own outbound calls fail (and trip breakers)."""
    import grpc

    from interceptors.grpc import (
        AsyncResilienceClientInterceptor,
        ResilienceServerInterceptor,
        grpc_retry,
    )

    from ...grpc_fixtures import UU, Script, start_sync_server

    script = Script()
    # the payment server does not clamp, so it reports the deadline the call carried
    payment = ResilienceServerInterceptor(pipeline=None, max_deadline=None)
    server, port = start_sync_server(script, (payment,))
    breaker = rs.CircuitBreaker("payment", failure_count=3)
    client = AsyncResilienceClientInterceptor(pipeline=rs.Pipeline(breaker, grpc_retry()))

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=client.channel_interceptors()
        ) as channel:
            pay: Any = channel.unary_unary
            try:
                status, body = 200, await pay(UU)(b"pay")
            except grpc.RpcError as exc:
                status, body = 502, exc.code().name.encode()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    kw: dict[str, Any] = {} if max_deadline == 300.0 else {"max_deadline": max_deadline}
    mw = ResilienceMiddleware(handler, pipeline=Permits(), **kw)
    try:
        with serve(mw) as url, httpx.Client(base_url=url, timeout=10) as http:
            for _ in range(3):
                response = http.get("/", headers={"Request-Timeout": value})
                assert (response.status_code, response.content) == (200, b"re:pay")
    finally:
        server.stop(None)
    assert breaker.state is rs.CircuitState.CLOSED
    assert script.calls == 3
    for left in script.remaining:  # the deadline the payment server saw
        assert left is not None
        if max_deadline is not None:
            # clamped to the default max_deadline; grpc-core rounds the grpc-timeout it sends up
            # to a coarser unit (seconds, at this size), so the server may see up to 1 s more
            assert 299 < left <= 301.0
        else:
            assert 1e7 < left <= 1e8  # passed on as the largest timeout grpcio takes


def test_max_deadline_clamps_the_published_deadline(app: TestApp) -> None:
    mw = ResilienceMiddleware(app, pipeline=Permits(), max_deadline=2.0)
    with serve(mw) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert 0 < client.get("/deadline", headers={"Request-Timeout": "600"}).json() <= 2.0
        assert 0 < client.get("/deadline", headers={"Request-Timeout": "1"}).json() <= 1.0
    for bad in (0, -1, float("inf"), "5"):
        with pytest.raises(rs.ConfigurationError, match="max_deadline"):
            ResilienceMiddleware(app, pipeline=Permits(), max_deadline=bad)  # type: ignore[arg-type]


def test_expired_inbound_deadline_gets_504_without_running_the_app(
    permits: Permits, guarded: httpx.Client
) -> None:
    response = guarded.get("/hello", headers={"X-Request-Timeout": "0"})
    assert response.status_code == 504
    assert permits.outcomes == []


def test_inbound_deadline_on_fake_clock(clock: rs.testing.FakeClock) -> None:
    seen: list[float | None] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        clock.advance(0.5)
        seen.append(rs.remaining())

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        pass

    mw = ResilienceMiddleware(
        inner, pipeline=Permits(), deadline_headers=("x-deadline",), clock=clock
    )
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"x-deadline", b"3")]}
    asyncio.run(mw(scope, receive, send))
    assert seen == [2.5]


def test_parse_timeout_forms() -> None:
    assert parse_timeout(b"10") == 10.0
    assert parse_timeout("1H") == 3600.0
    assert parse_timeout("2M") == 120.0
    assert parse_timeout("500u") == pytest.approx(0.0005)
    assert parse_timeout("100n") == pytest.approx(1e-7)
    for bad in (None, "", "1.5S", "123456789S", "1x", "nan", "inf", " 1 2"):
        assert parse_timeout(bad) is None
