"""A Hedge inside the grpc.aio client interceptor: unary calls are hedged with
``grpc-previous-rpc-attempts``, server pushback stops further hedges, streams are never hedged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

import resilience as rs
from interceptors.grpc import AsyncResilienceClientInterceptor
from resilience.events import HedgeCancelled, HedgeStarted, HedgeWon
from resilience.testing import RecordingListener

UNARY, STREAM = "/hedge.Svc/Unary", "/hedge.Svc/Stream"


class SlowFirst:
    """The first call waits for a second to arrive (at most 0.5 s), then 1 s: a hedge answers
    first. ``pushback`` makes the first call fail at once with that pushback trailer."""

    def __init__(self, pushback: str | None = None) -> None:
        self.metadata: list[dict[str, Any]] = []
        self.cancelled = asyncio.Event()
        self.second = asyncio.Event()
        self.pushback = pushback

    async def unary(self, request: bytes, context: Any) -> bytes:
        self.metadata.append(dict(context.invocation_metadata()))
        n = len(self.metadata)
        if n == 1:
            if self.pushback is not None:
                context.set_trailing_metadata((("grpc-retry-pushback-ms", self.pushback),))
                await context.abort(grpc.StatusCode.UNAVAILABLE, "overloaded")
            try:
                await asyncio.wait_for(self.second.wait(), 0.5)
                await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                self.cancelled.set()  # the client cancelled the losing RPC
                raise
            except TimeoutError:
                pass
        else:
            self.second.set()
        return b"attempt-%d" % n

    async def stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        self.metadata.append(dict(context.invocation_metadata()))
        yield b"only"

    def handler(self) -> Any:
        return grpc.method_handlers_generic_handler(
            "hedge.Svc",
            {
                "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
                "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
            },
        )


class Sent(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Records the metadata of every attempt leaving the client (grpc-* keys are not
    delivered to the server application)."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, Any]] = []

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.metadata.append(dict(details.metadata or ()))
        return await continuation(details, request)


async def _with_server(
    app: SlowFirst, policy: rs.Policy, method: str, sent: Sent | None = None
) -> list[bytes]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((app.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        ci = AsyncResilienceClientInterceptor(pipeline=policy)
        interceptors: Any = [*ci.channel_interceptors(), sent or Sent()]
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=interceptors
        ) as aio_channel:
            channel: Any = aio_channel
            if method == UNARY:
                return [await channel.unary_unary(UNARY)(b"x", timeout=5)]
            return [m async for m in channel.unary_stream(STREAM)(b"x", timeout=5)]
    finally:
        await server.stop(None)


def test_unary_call_is_hedged_with_previous_attempts_metadata() -> None:
    rec = RecordingListener()

    sent = Sent()

    async def main() -> tuple[list[bytes], SlowFirst]:
        app = SlowFirst()
        out = await _with_server(app, rs.Hedge(delay=0.05, listeners=[rec]), UNARY, sent)
        await asyncio.wait_for(app.cancelled.wait(), 5)  # the loser's RPC was cancelled
        return out, app

    out, app = asyncio.run(main())
    assert out == [b"attempt-2"]
    assert len(app.metadata) == 2
    assert [m.get("grpc-previous-rpc-attempts") for m in sent.metadata] == [None, "1"]
    assert [type(e) for e in rec.events] == [HedgeStarted, HedgeWon, HedgeCancelled]


@pytest.mark.parametrize("pushback", ["-1", "garbage"])
def test_server_pushback_stops_further_hedges(pushback: str) -> None:
    async def main() -> SlowFirst:
        app = SlowFirst(pushback=pushback)
        hedge = rs.Hedge(delay=0.05, attempts=3, on=grpc.RpcError)
        with pytest.raises(grpc.RpcError) as info:
            await _with_server(app, hedge, UNARY)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        return app

    assert len(asyncio.run(main()).metadata) == 1


def test_a_valid_pushback_delays_the_next_hedge() -> None:
    sent = Sent()

    async def main() -> tuple[list[bytes], SlowFirst]:
        app = SlowFirst(pushback="10")
        out = await _with_server(app, rs.Hedge(delay=30, on=grpc.RpcError), UNARY, sent)
        return out, app

    out, app = asyncio.run(main())
    assert out == [b"attempt-2"]  # hedged after the server's 10 ms, not the 30 s delay
    assert len(app.metadata) == 2
    assert sent.metadata[1].get("grpc-previous-rpc-attempts") == "1"


def test_streaming_calls_are_never_hedged() -> None:
    async def main() -> tuple[list[bytes], SlowFirst]:
        app = SlowFirst()
        return await _with_server(app, rs.Hedge(delay=0), STREAM), app

    out, app = asyncio.run(main())
    assert out == [b"only"]
    assert len(app.metadata) == 1
