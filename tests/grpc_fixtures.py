"""A scripted test service over raw bytes (no protoc), served by real sync and aio servers."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc

import resilience as rs

SERVICE = "test.Svc"
UU, US, SU, SS = (f"/{SERVICE}/{m}" for m in ("Unary", "Stream", "Collect", "Chat"))
Code = grpc.StatusCode


@dataclass
class Fail:
    """Abort with ``code`` (optionally after ``after`` messages, with a pushback trailer)."""

    code: grpc.StatusCode = Code.UNAVAILABLE
    pushback: str | None = None
    after: int = 0
    set_code: bool = False  # report with set_code + return instead of abort
    raise_exc: bool = False  # raise RuntimeError instead of aborting


@dataclass
class Script:
    """Per-call outcomes (``None`` = success; the last one repeats) and what the server saw."""

    plan: list[Fail | None] = field(default_factory=lambda: [None])
    calls: int = 0
    metadata: list[dict[str, str]] = field(default_factory=list)
    remaining: list[float | None] = field(default_factory=list)
    requests: list[list[bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self, context: Any, requests: list[bytes]) -> Fail | None:
        with self.lock:
            step = self.plan[min(self.calls, len(self.plan) - 1)]
            self.calls += 1
            self.metadata.append(dict(context.invocation_metadata()))
            self.remaining.append(rs.remaining())
            self.requests.append(requests)
        if step is not None and step.raise_exc:
            raise RuntimeError("scripted crash")
        return step

    def trailer(self, context: Any, step: Fail) -> None:
        if step.pushback is not None:
            context.set_trailing_metadata((("grpc-retry-pushback-ms", step.pushback),))


def sync_handlers(script: Script) -> Any:
    def unary(request: bytes, context: Any) -> bytes:
        step = script.next(context, [request])
        if step is not None:
            script.trailer(context, step)
            if step.set_code:
                context.set_code(step.code)
                context.set_details("set")
                return b""
            context.abort(step.code, "scripted")
        return b"re:" + request

    def stream(request: bytes, context: Any) -> Iterator[bytes]:
        step = script.next(context, [request])
        for i in range(3):
            if step is not None and step.after == i:
                script.trailer(context, step)
                context.abort(step.code, "scripted")
            yield b"%d:" % i + request

    def collect(requests: Iterator[bytes], context: Any) -> bytes:
        got = list(requests)
        step = script.next(context, got)
        if step is not None:
            script.trailer(context, step)
            context.abort(step.code, "scripted")
        return b"+".join(got)

    def chat(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        got = list(requests)
        step = script.next(context, got)
        for i, r in enumerate(got):
            if step is not None and step.after == i:
                script.trailer(context, step)
                context.abort(step.code, "scripted")
            yield b"re:" + r

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Collect": grpc.stream_unary_rpc_method_handler(collect),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        },
    )


def aio_handlers(script: Script) -> Any:
    async def unary(request: bytes, context: Any) -> bytes:
        step = script.next(context, [request])
        if step is not None:
            script.trailer(context, step)
            if step.set_code:
                context.set_code(step.code)
                context.set_details("set")
                return b""
            await context.abort(step.code, "scripted")
        return b"re:" + request

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        step = script.next(context, [request])
        for i in range(3):
            if step is not None and step.after == i:
                script.trailer(context, step)
                await context.abort(step.code, "scripted")
            yield b"%d:" % i + request

    async def collect(requests: AsyncIterator[bytes], context: Any) -> bytes:
        got = [r async for r in requests]
        step = script.next(context, got)
        if step is not None:
            script.trailer(context, step)
            await context.abort(step.code, "scripted")
        return b"+".join(got)

    async def chat(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        got = [r async for r in requests]
        step = script.next(context, got)
        for i, r in enumerate(got):
            if step is not None and step.after == i:
                script.trailer(context, step)
                await context.abort(step.code, "scripted")
            yield b"re:" + r

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Collect": grpc.stream_unary_rpc_method_handler(collect),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        },
    )


def start_sync_server(
    script: Script, interceptors: tuple[Any, ...] = (), extra: Any = None, workers: int = 4
) -> tuple[grpc.Server, int]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers), interceptors=list(interceptors)
    )
    server.add_generic_rpc_handlers((sync_handlers(script),))
    if extra is not None:
        server.add_generic_rpc_handlers((extra,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


async def start_aio_server(
    script: Script, interceptors: tuple[Any, ...] = (), extra: Any = None
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers((aio_handlers(script),))
    if extra is not None:
        server.add_generic_rpc_handlers((extra,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port
