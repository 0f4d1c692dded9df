"""The sync and aio server interceptors behave alike where their servers do (real servers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

import resilience as rs
from interceptors.grpc import (
    REPLAYED_KEY,
    AsyncResilienceServerInterceptor,
    ResilienceServerInterceptor,
)

SERVICE = "test.Text"


def _text_handlers(kind: str) -> Any:
    """Handlers answering a ``str`` (no response serializer: raw bytes on the wire)."""
    if kind == "sync":

        def unary(request: bytes, context: Any) -> str:
            return "héllo " + request.decode()

        def collect(requests: Iterator[bytes], context: Any) -> str:
            return "+".join(r.decode() for r in requests)

    else:

        async def unary(request: bytes, context: Any) -> str:  # type: ignore[misc]
            return "héllo " + request.decode()

        async def collect(requests: AsyncIterator[bytes], context: Any) -> str:  # type: ignore[misc]
            return "+".join([r.decode() async for r in requests])

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Collect": grpc.stream_unary_rpc_method_handler(collect),
        },
    )


def _calls(port: int, metadata: tuple[tuple[str, str], ...]) -> list[tuple[bytes, str | None]]:
    """Each method called twice with ``metadata``: (response, idempotent-replayed trailer)."""
    out: list[tuple[bytes, str | None]] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as raw:
        channel: Any = raw  # raw bytes: no serializers
        for _ in range(2):
            response, call = channel.unary_unary(f"/{SERVICE}/Unary").with_call(
                b"a", timeout=5, metadata=metadata
            )
            out.append((response, dict(call.trailing_metadata() or ()).get(REPLAYED_KEY)))
            response, call = channel.stream_unary(f"/{SERVICE}/Collect").with_call(
                iter([b"a", b"b"]), timeout=5, metadata=metadata
            )
            out.append((response, dict(call.trailing_metadata() or ()).get(REPLAYED_KEY)))
    return out


def _serve(kind: str, interceptor_kw: dict[str, Any], metadata: tuple[tuple[str, str], ...]) -> Any:
    if kind == "sync":
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            interceptors=[ResilienceServerInterceptor(**interceptor_kw)],
        )
        server.add_generic_rpc_handlers((_text_handlers(kind),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            return _calls(port, metadata)
        finally:
            server.stop(None)

    async def main() -> Any:
        server = grpc.aio.server(interceptors=[AsyncResilienceServerInterceptor(**interceptor_kw)])
        server.add_generic_rpc_handlers((_text_handlers(kind),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            return await asyncio.to_thread(_calls, port, metadata)
        finally:
            await server.stop(None)

    return asyncio.run(main())


@pytest.mark.parametrize("kind", ["sync", "aio"])
@pytest.mark.parametrize("keyed", [False, True], ids=["no-key", "key"])
def test_a_str_response_is_utf8_on_the_wire_with_idempotency_records(
    kind: str, keyed: bool
) -> None:
    """grpc.aio encodes a ``str`` response as UTF-8; with idempotency records the interceptor
    serializes the response itself, on both servers the same way (the sync one used to store
    and send the ``str``: UNKNOWN with a key, a call stalled until its deadline without)."""
    metadata = (("idempotency-key", "k-1"),) if keyed else ()
    got = _serve(
        kind, {"pipeline": rs.Timeout(5), "idempotency": rs.IdempotencyRecords()}, metadata
    )
    first = [("héllo a".encode(), None), (b"a+b", None)]
    again = [("héllo a".encode(), "true"), (b"a+b", "true")] if keyed else first
    assert got == first + again


def _failing_stream_handlers(kind: str, error: Exception) -> Any:
    """A streaming-response handler that sends one message, sets a trailer, then raises."""
    if kind == "sync":

        def stream(request: bytes, context: Any) -> Iterator[bytes]:
            yield b"first"
            context.set_trailing_metadata((("handler-trailer", "kept"),))
            raise error

    else:

        async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:  # type: ignore[misc]
            yield b"first"
            context.set_trailing_metadata((("handler-trailer", "kept"),))
            raise error

    return grpc.method_handlers_generic_handler(
        SERVICE, {"Stream": grpc.unary_stream_rpc_method_handler(stream)}
    )


def _stream_outcome(port: int) -> tuple[list[bytes], grpc.StatusCode, dict[str, str]]:
    got: list[bytes] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as raw:
        channel: Any = raw  # raw bytes: no serializers
        call = channel.unary_stream(f"/{SERVICE}/Stream")(b"a", timeout=5)
        with pytest.raises(grpc.RpcError) as info:
            got.extend(call)
    error: Any = info.value
    return got, error.code(), dict(error.trailing_metadata() or ())


def _serve_stream(kind: str, error: Exception) -> Any:
    handlers = _failing_stream_handlers(kind, error)
    if kind == "sync":
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            interceptors=[ResilienceServerInterceptor(pipeline=None)],
        )
        server.add_generic_rpc_handlers((handlers,))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            return _stream_outcome(port)
        finally:
            server.stop(None)

    async def main() -> Any:
        server = grpc.aio.server(interceptors=[AsyncResilienceServerInterceptor(pipeline=None)])
        server.add_generic_rpc_handlers((handlers,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            return await asyncio.to_thread(_stream_outcome, port)
        finally:
            await server.stop(None)

    return asyncio.run(main())


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_a_policy_error_raised_mid_stream_gets_its_status_and_pushback(kind: str) -> None:
    """A resilience error the handler raises after its first message (e.g. from an outbound
    rate limiter) is answered with its status and pushback on both servers (the sync one used
    to answer UNKNOWN: only aborts were mapped after the first message)."""
    got, code, trailers = _serve_stream(kind, rs.RateLimitedError("slow down", retry_after=0.25))
    assert got == [b"first"]
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert trailers == {"grpc-retry-pushback-ms": "250"}


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_an_unmapped_error_raised_mid_stream_is_unknown_and_keeps_the_handler_trailers(
    kind: str,
) -> None:
    got, code, trailers = _serve_stream(kind, KeyError("boom"))
    assert got == [b"first"]
    assert code == grpc.StatusCode.UNKNOWN
    assert trailers == {"handler-trailer": "kept"}
