"""``listeners=`` on the gRPC interceptors, against real servers: the events of the client's and
the server's pipelines reach the interceptor's listeners, tagged with the RPC method."""

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
from resilience.events import CallRejected, CircuitStateChanged, RetryScheduled
from resilience.testing import FakeClock, RecordingListener

from ...grpc_fixtures import UU, Code, Fail, Script, start_aio_server, start_sync_server
from .grpc_support import Client, acall, call, retry


def test_client_interceptors_hand_their_pipelines_events_to_their_listeners(
    client: Client, script: Script, port: int, clock: FakeClock
) -> None:
    script.plan = [Fail(Code.UNAVAILABLE), None]
    mine = RecordingListener()
    pipeline = rs.Pipeline(retry(clock, attempts=3), name="payments")
    target = f"127.0.0.1:{port}"
    if client.mode == "sync":
        interceptor = ResilienceClientInterceptor(pipeline=pipeline, listeners=[mine])
        with grpc.insecure_channel(target) as raw:
            reply = call(grpc.intercept_channel(raw, interceptor), "unary_unary")
    else:

        async def main() -> Any:
            interceptor = AsyncResilienceClientInterceptor(pipeline=pipeline, listeners=[mine])
            async with grpc.aio.insecure_channel(
                target, interceptors=interceptor.channel_interceptors()
            ) as ch:
                return await acall(ch, "unary_unary")

        reply = asyncio.run(main())
    assert reply == b"re:a"
    assert script.calls == 2
    (scheduled,) = mine.of(RetryScheduled)
    assert (scheduled.policy, scheduled.pipeline, scheduled.operation) == (
        "grpc-retry",
        "payments",
        UU,
    )


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_server_interceptors_hand_their_pipelines_events_to_their_listeners(
    kind: str, script: Script, clock: FakeClock
) -> None:
    script.plan = [Fail(Code.INTERNAL)]
    mine = RecordingListener()
    breaker = rs.CircuitBreaker("server", failure_count=1, open_for=30, clock=clock)
    kw: dict[str, Any] = {"pipeline": breaker, "listeners": [mine]}

    def two_calls(port: int) -> list[Any]:
        codes = []
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            for _ in range(2):
                with pytest.raises(grpc.RpcError) as info:
                    call(ch, "unary_unary")
                codes.append(info.value.code())
        return codes

    if kind == "sync":
        server, port = start_sync_server(script, (ResilienceServerInterceptor(**kw),))
        try:
            codes = two_calls(port)
        finally:
            server.stop(None)
    else:

        async def main() -> list[Any]:
            server, port = await start_aio_server(script, (AsyncResilienceServerInterceptor(**kw),))
            try:
                return await asyncio.to_thread(two_calls, port)
            finally:
                await server.stop(None)

        codes = asyncio.run(main())
    assert codes == [Code.INTERNAL, Code.UNAVAILABLE]  # the second one refused by the breaker
    assert script.calls == 1
    opened = mine.last(CircuitStateChanged)
    assert (opened.policy, opened.to_state, opened.operation) == ("server", "open", UU)
    assert mine.last(CallRejected).reason == "circuit_open"
    assert breaker.listeners == ()
