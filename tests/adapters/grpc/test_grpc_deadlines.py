"""gRPC deadlines: propagation from a client timeout through a relay, and the server's max_deadline
clamp.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

import resilience as rs
from interceptors.grpc import (
    AsyncResilienceClientInterceptor,
    AsyncResilienceServerInterceptor,
    ResilienceClientInterceptor,
    ResilienceServerInterceptor,
)

from ...grpc_fixtures import UU, Script, start_aio_server, start_sync_server
from .grpc_support import Client


def proxy_handler(port_box: list[int], mode: str) -> Any:
    """``/test.Proxy/Relay``: calls Unary on the same server through a client interceptor."""

    def relay(request: bytes, context: Any) -> bytes:
        interceptor = ResilienceClientInterceptor(pipeline=None)
        with grpc.insecure_channel(f"127.0.0.1:{port_box[0]}") as raw:
            ch: Any = grpc.intercept_channel(raw, interceptor)
            return bytes(ch.unary_unary(UU)(request))

    return grpc.method_handlers_generic_handler(
        "test.Proxy", {"Relay": grpc.unary_unary_rpc_method_handler(relay)}
    )


def test_deadline_propagates_from_client_timeout_through_a_relay(
    client: Client, script: Script
) -> None:
    box: list[int] = []
    server, port = start_sync_server(
        script,
        (ResilienceServerInterceptor(pipeline=None),),
        extra=proxy_handler(box, client.mode),
    )
    box.append(port)
    try:
        # a Timeout in the client pipeline sets the outgoing deadline
        assert client.run(port, rs.Timeout(2.0), "unary_unary") == b"re:a"
        # the caller's timeout= does too, and the tighter one wins
        assert client.run(port, rs.Timeout(30.0), "unary_unary", timeout=3.0) == b"re:a"
        # the relay handler's outbound call carries the inbound deadline on
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plain:
            ch: Any = plain
            assert ch.unary_unary("/test.Proxy/Relay")(b"r", timeout=4.0) == b"re:r"
            assert ch.unary_unary(UU)(b"none") == b"re:none"
    finally:
        server.stop(None)
    first, second, relayed, unbounded = script.remaining
    assert first is not None
    assert 1.0 < first <= 2.1  # grpc's deadline arithmetic may add a few ms
    assert second is not None
    assert 2.0 < second <= 3.1  # grpc's deadline arithmetic may add a few ms
    assert relayed is not None
    assert 3.0 < relayed <= 4.1
    assert unbounded is None


def clamp_relay(port_box: list[int], kind: str, seen: list[float | None]) -> Any:
    """``/test.Proxy/Relay`` for a ``kind`` server: records ``rs.remaining()``, calls Unary."""

    def relay(request: bytes, context: Any) -> bytes:
        seen.append(rs.remaining())
        interceptor = ResilienceClientInterceptor(pipeline=None)
        with grpc.insecure_channel(f"127.0.0.1:{port_box[0]}") as raw:
            ch: Any = grpc.intercept_channel(raw, interceptor)
            return bytes(ch.unary_unary(UU)(request))

    async def arelay(request: bytes, context: Any) -> bytes:
        seen.append(rs.remaining())
        interceptor = AsyncResilienceClientInterceptor(pipeline=None)
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port_box[0]}", interceptors=interceptor.channel_interceptors()
        ) as channel:
            ch: Any = channel
            return bytes(await ch.unary_unary(UU)(request))

    handler = grpc.unary_unary_rpc_method_handler(relay if kind == "sync" else arelay)
    return grpc.method_handlers_generic_handler("test.Proxy", {"Relay": handler})


@pytest.mark.parametrize("kind", ["sync", "aio"])
@pytest.mark.parametrize("max_deadline", [None, 2.0])  # None: the default (300 s)
def test_server_clamps_a_client_chosen_deadline_to_max_deadline(
    kind: str, script: Script, max_deadline: float | None
) -> None:
    """A client's absurd deadline (grpc-timeout ~27000H) is published as at most max_deadline."""
    limit = 300.0 if max_deadline is None else max_deadline
    kw: dict[str, Any] = {"pipeline": None}
    if max_deadline is not None:
        kw["max_deadline"] = max_deadline
    seen: list[float | None] = []
    box: list[int] = []

    def calls(port: int) -> list[bytes]:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plain:
            ch: Any = plain
            relay = ch.unary_unary("/test.Proxy/Relay")
            # grpcio sends these as its largest grpc-timeout; the outbound call still works
            out = [relay(b"far", timeout=t) for t in (1e8, 5e9)]
            return [*out, relay(b"near", timeout=1.0), ch.unary_unary(UU)(b"none")]

    if kind == "sync":
        interceptor: Any = ResilienceServerInterceptor(**kw)
        server, port = start_sync_server(script, (interceptor,), clamp_relay(box, kind, seen))
        box.append(port)
        try:
            results = calls(port)
        finally:
            server.stop(None)
    else:

        async def main() -> list[bytes]:
            interceptor = AsyncResilienceServerInterceptor(**kw)
            server, port = await start_aio_server(
                script, (interceptor,), clamp_relay(box, kind, seen)
            )
            box.append(port)
            try:
                return await asyncio.to_thread(calls, port)
            finally:
                await server.stop(None)

        results = asyncio.run(main())
    assert results == [b"re:far", b"re:far", b"re:near", b"re:none"]
    far1, far2, near = seen
    for left in (far1, far2):
        assert left is not None
        assert limit - 1.0 < left <= limit  # clamped, not ~9.7e7 s
    assert near is not None
    assert 0.0 < near <= 1.1  # a shorter deadline is the client's own
    # the outbound calls carried the clamped deadline on (the same server published it again)
    inner_far1, inner_far2, inner_near, unbounded = script.remaining
    for left in (inner_far1, inner_far2):
        assert left is not None
        assert left <= limit
    assert inner_near is not None
    assert inner_near <= 1.1
    assert unbounded is None  # no client deadline: still none


@pytest.mark.parametrize("cls", [ResilienceServerInterceptor, AsyncResilienceServerInterceptor])
def test_server_max_deadline_is_validated(cls: Any) -> None:
    assert cls(pipeline=None).max_deadline == 300.0
    assert cls(pipeline=None, max_deadline=None).max_deadline is None
    assert cls(pipeline=None, max_deadline=0.5).max_deadline == 0.5
    for bad in (0, -1, float("nan"), float("inf"), "300", True):
        with pytest.raises(rs.ConfigurationError, match="max_deadline"):
            cls(pipeline=None, max_deadline=bad)
