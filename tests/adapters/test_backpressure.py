"""Client breakers of the adapters do not count the server's back-pressure (real servers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import grpc
import httpx
import pytest

import resilience as rs
from interceptors.grpc import (
    AsyncResilienceClientInterceptor,
    ResilienceClientInterceptor,
    grpc_breaker,
)
from interceptors.httpx import ResilientTransport, http_breaker

from .._server import serve
from ..grpc_fixtures import UU, Code, Fail, Script, start_aio_server, start_sync_server

BURST = 40


def _sync_burst(port: int, breaker: rs.CircuitBreaker) -> list[str]:
    outcomes: list[str] = []
    interceptor = ResilienceClientInterceptor(pipeline=breaker)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as raw:
        channel: Any = grpc.intercept_channel(raw, interceptor)
        unary = channel.unary_unary(UU)
        for _ in range(BURST):
            try:
                unary(b"a", timeout=5)
                outcomes.append("OK")
            except rs.CircuitOpenError:
                outcomes.append("open")
            except grpc.RpcError as exc:
                outcomes.append(exc.code().name)
    return outcomes


def _aio_burst(script: Script, breaker: rs.CircuitBreaker) -> list[str]:
    async def main() -> list[str]:
        server, port = await start_aio_server(script)
        outcomes: list[str] = []
        try:
            interceptor = AsyncResilienceClientInterceptor(pipeline=breaker)
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", interceptors=interceptor.channel_interceptors()
            ) as channel:
                unary = cast(Any, channel).unary_unary(UU)
                for _ in range(BURST):
                    try:
                        await unary(b"a", timeout=5)
                        outcomes.append("OK")
                    except rs.CircuitOpenError:
                        outcomes.append("open")
                    except grpc.RpcError as exc:
                        outcomes.append(exc.code().name)
        finally:
            await server.stop(None)
        return outcomes

    return asyncio.run(main())


def _grpc_burst(mode: str, fail: Fail, breaker: rs.CircuitBreaker) -> list[str]:
    script = Script(plan=[fail])
    if mode == "aio":
        return _aio_burst(script, breaker)
    server, port = start_sync_server(script)
    try:
        return _sync_burst(port, breaker)
    finally:
        server.stop(None)


BACKPRESSURE = [Fail(Code.RESOURCE_EXHAUSTED), Fail(Code.UNAVAILABLE, pushback="100")]


@pytest.mark.parametrize("mode", ["sync", "aio"])
@pytest.mark.parametrize("fail", BACKPRESSURE, ids=["resource_exhausted", "pushback"])
def test_grpc_breaker_does_not_count_backpressure(mode: str, fail: Fail) -> None:
    breaker = grpc_breaker("limited", failure_count=3)
    outcomes = _grpc_burst(mode, fail, breaker)
    assert outcomes == [fail.code.name] * BURST  # every call reached the server
    assert breaker.state is rs.CircuitState.CLOSED


@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_grpc_breaker_counts_faults_and_opt_in_backpressure(mode: str) -> None:
    faults = _grpc_burst(mode, Fail(Code.UNAVAILABLE), grpc_breaker("down", failure_count=3))
    assert faults == ["UNAVAILABLE"] * 3 + ["open"] * (BURST - 3)
    counted = grpc_breaker("strict", failure_count=3, count_backpressure=True)
    limited = _grpc_burst(mode, Fail(Code.RESOURCE_EXHAUSTED), counted)
    assert limited == ["RESOURCE_EXHAUSTED"] * 3 + ["open"] * (BURST - 3)


def _http_app(status: int, headers: list[tuple[bytes, bytes]]) -> Callable[..., Any]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    return app


def _http_burst(status: int, headers: list[tuple[bytes, bytes]], **options: Any) -> list[Any]:
    breaker = http_breaker("host", failure_count=3, **options)
    transport = ResilientTransport(per_host=lambda host: breaker)
    outcomes: list[Any] = []
    with serve(_http_app(status, headers)) as url, httpx.Client(transport=transport) as client:
        for _ in range(BURST):
            try:
                outcomes.append(client.get(url).status_code)
            except rs.CircuitOpenError:
                outcomes.append("open")
    return outcomes


@pytest.mark.parametrize(
    ("status", "headers"), [(429, []), (503, [(b"retry-after", b"1")])], ids=["429", "503"]
)
def test_http_breaker_does_not_count_backpressure(
    status: int, headers: list[tuple[bytes, bytes]]
) -> None:
    assert _http_burst(status, headers) == [status] * BURST


def test_http_breaker_counts_faults_and_opt_in_backpressure() -> None:
    assert _http_burst(503, []) == [503] * 3 + ["open"] * (BURST - 3)
    assert _http_burst(500, []) == [500] * 3 + ["open"] * (BURST - 3)
    opted = _http_burst(503, [(b"retry-after", b"1")], count_backpressure=True)
    assert opted == [503] * 3 + ["open"] * (BURST - 3)


def test_bad_statuses_are_refused() -> None:
    with pytest.raises(rs.ConfigurationError):
        http_breaker("host", statuses=["500"])  # type: ignore[list-item]
