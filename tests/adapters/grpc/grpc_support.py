"""gRPC test helpers: call shapes and expected replies, clients and servers of either kind, and
a payment service (``Pay``) with the stores the idempotency tests spy on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest

import resilience as rs
from interceptors.grpc import (
    AsyncResilienceClientInterceptor,
    AsyncResilienceServerInterceptor,
    ResilienceClientInterceptor,
    ResilienceServerInterceptor,
    grpc_retry,
    idempotency_key,
)
from resilience import Emitter
from resilience.idempotency import ClaimOp, CompleteOp
from resilience.stores import MemoryStore
from resilience.testing import FakeClock

from ...grpc_fixtures import SS, SU, US, UU, Script, start_aio_server, start_sync_server

SHAPES = ["unary_unary", "unary_stream", "stream_unary", "stream_stream"]
PATH = {"unary_unary": UU, "unary_stream": US, "stream_unary": SU, "stream_stream": SS}
EXPECTED = {
    "unary_unary": b"re:a",
    "unary_stream": [b"0:a", b"1:a", b"2:a"],
    "stream_unary": b"a+b",
    "stream_stream": [b"re:a", b"re:b"],
}


def call(channel: grpc.Channel, shape: str, **kw: Any) -> Any:
    method = getattr(channel, shape)(PATH[shape])
    if shape == "unary_unary":
        return method(b"a", **kw)
    if shape == "unary_stream":
        return list(method(b"a", **kw))
    if shape == "stream_unary":
        return method(iter([b"a", b"b"]), **kw)
    return list(method(iter([b"a", b"b"]), **kw))


async def acall(channel: grpc.aio.Channel, shape: str, **kw: Any) -> Any:
    method = getattr(channel, shape)(PATH[shape])
    if shape == "unary_unary":
        return await method(b"a", **kw)
    if shape == "unary_stream":
        return [m async for m in method(b"a", **kw)]

    async def reqs() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    if shape == "stream_unary":
        return await method(reqs(), **kw)
    return [m async for m in method(reqs(), **kw)]


class Client:
    """Runs one call through a sync or an aio intercepted channel against a server port."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def run(self, port: int, pipeline: rs.Policy | None, shape: str, **kw: Any) -> Any:
        target = f"127.0.0.1:{port}"
        if self.mode == "sync":
            interceptor = ResilienceClientInterceptor(pipeline=pipeline)
            with grpc.insecure_channel(target) as raw:
                return call(grpc.intercept_channel(raw, interceptor), shape, **kw)

        async def main() -> Any:
            interceptor = AsyncResilienceClientInterceptor(pipeline=pipeline)
            async with grpc.aio.insecure_channel(
                target, interceptors=interceptor.channel_interceptors()
            ) as ch:
                return await acall(ch, shape, **kw)

        return asyncio.run(main())


def retry(clock: FakeClock, **kw: Any) -> rs.Retry:
    kw.setdefault("backoff", rs.backoff.constant(0.5))
    return grpc_retry(clock=clock, **kw)


class Gate(rs.Policy):
    """A tiny local policy: rejects with ``reject`` if set, records every outcome."""

    kind = "gate"

    def __init__(self, reject: BaseException | None = None) -> None:
        super().__init__(name="gate")
        self.reject = reject
        self.outcomes: list[Any] = []

    def wrap_sync(self, fn: Callable[..., Any], em: Emitter) -> Callable[..., Any]:
        def gate(*args: Any, **kwargs: Any) -> Any:
            if self.reject is not None:
                raise self.reject
            try:
                out = fn(*args, **kwargs)
            except Exception as exc:
                self.outcomes.append(exc)
                raise
            self.outcomes.append("ok")
            return out

        return gate

    def wrap_async(
        self, fn: Callable[..., Awaitable[Any]], em: Emitter
    ) -> Callable[..., Awaitable[Any]]:
        async def gate(*args: Any, **kwargs: Any) -> Any:
            if self.reject is not None:
                raise self.reject
            try:
                out = await fn(*args, **kwargs)
            except Exception as exc:
                self.outcomes.append(exc)
                raise
            self.outcomes.append("ok")
            return out

        return gate


class Served:
    """A real server of either kind with a server interceptor; calls go through a sync client."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def run(self, script: Script, interceptor_kw: dict[str, Any], shape: str, **kw: Any) -> Any:
        if self.kind == "sync":
            server, port = start_sync_server(
                script, (ResilienceServerInterceptor(**interceptor_kw),)
            )
            try:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                    return call(ch, shape, **kw)
            finally:
                server.stop(None)

        async def main() -> Any:
            server, port = await start_aio_server(
                script, (AsyncResilienceServerInterceptor(**interceptor_kw),)
            )
            try:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                    return await asyncio.to_thread(call, ch, shape, **kw)
            finally:
                await server.stop(None)

        return asyncio.run(main())


def trailer(error: Any) -> dict[str, str]:
    return dict(error.trailing_metadata() or ())


CHARGE, BATCH = "/test.Pay/Charge", "/test.Pay/Batch"


def serve(
    kind: str,
    script: Script,
    interceptor_kw: dict[str, Any],
    body: Callable[[Any], Any],
    extra: Any = None,
    workers: int = 4,
) -> Any:
    """Start a real server of ``kind`` with our interceptor; run ``body(channel)`` in a thread."""
    if kind == "sync":
        server, port = start_sync_server(
            script, (ResilienceServerInterceptor(**interceptor_kw),), extra, workers=workers
        )
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                return body(ch)
        finally:
            server.stop(None)

    async def main() -> Any:
        server, port = await start_aio_server(
            script, (AsyncResilienceServerInterceptor(**interceptor_kw),), extra
        )
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                return await asyncio.to_thread(body, ch)
        finally:
            await server.stop(None)

    return asyncio.run(main())


def state(breaker: rs.CircuitBreaker) -> str:
    return breaker.state.name


def status_of(fn: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


def encode_text(text: str | bytes) -> bytes:
    # grpc.aio utf-8-encodes a str response itself before calling the serializer
    return text if isinstance(text, bytes) else text.encode()


class Pay:
    """A payment service over text messages, counting how often its handlers really run."""

    def __init__(self) -> None:
        self.executions = 0
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()
        self.released_in_time: bool | None = None
        self.fail: grpc.StatusCode | None = None

    def _begin(self) -> tuple[int, grpc.StatusCode | None]:
        with self.lock:
            self.executions += 1
            fail, self.fail = self.fail, None
            n = self.executions
        self.started.set()
        return n, fail

    def handlers(self, kind: str) -> Any:
        text: dict[str, Any] = {
            "request_deserializer": bytes.decode,
            "response_serializer": encode_text,
        }
        if kind == "sync":

            def charge(request: str, context: Any) -> str:
                n, fail = self._begin()
                self.released_in_time = self.release.wait(10)
                if fail is not None:
                    context.abort(fail, "declined")
                return f"charged {request} #{n}"

            def batch(requests: Iterator[str], context: Any) -> str:
                got = list(requests)
                n, _ = self._begin()
                return "+".join(got) + f" #{n}"

            return grpc.method_handlers_generic_handler(
                "test.Pay",
                {
                    "Charge": grpc.unary_unary_rpc_method_handler(charge, **text),
                    "Batch": grpc.stream_unary_rpc_method_handler(batch, **text),
                },
            )

        async def acharge(request: str, context: Any) -> str:
            n, fail = self._begin()
            self.released_in_time = await asyncio.to_thread(self.release.wait, 10)
            if fail is not None:
                await context.abort(fail, "declined")
            return f"charged {request} #{n}"

        async def abatch(requests: Any, context: Any) -> str:
            got = [r async for r in requests]
            n, _ = self._begin()
            return "+".join(got) + f" #{n}"

        return grpc.method_handlers_generic_handler(
            "test.Pay",
            {
                "Charge": grpc.unary_unary_rpc_method_handler(acharge, **text),
                "Batch": grpc.stream_unary_rpc_method_handler(abatch, **text),
            },
        )


def key(k: str, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return (("idempotency-key", k), *extra)


def charge(ch: Any, request: bytes, md: Any = ()) -> tuple[bytes, dict[str, Any]]:
    response, call_ = ch.unary_unary(CHARGE).with_call(request, metadata=md)
    return response, dict(call_.trailing_metadata() or ())


class CountingStore:
    """A memory store that sets ``event`` once it answered ``threshold`` in-progress claims."""

    def __init__(self, threshold: int, event: threading.Event) -> None:
        self.inner = MemoryStore()
        self.threshold = threshold
        self.event = event
        self.in_progress = 0
        self.lock = threading.Lock()

    def apply(self, op: Any) -> Any:
        out = self.inner.apply(op)
        if isinstance(op, ClaimOp) and out[0] == "in_progress":
            with self.lock:
                self.in_progress += 1
                if self.in_progress >= self.threshold:
                    self.event.set()
        return out


def idempotent_policy(clock: FakeClock, **kw: Any) -> rs.Idempotent:
    """The ``idempotency=rs.Idempotent(...)`` spelling docs/adapters/grpc.md shows."""
    return rs.Idempotent(
        key=lambda request, context: idempotency_key(),
        fingerprint=lambda request, context: request,
        clock=clock,
        **kw,
    )


class PayloadSpy:
    """A memory store that remembers the payload of every completed record."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.payloads: list[str | None] = []

    def apply(self, op: Any) -> Any:
        if isinstance(op, CompleteOp):
            self.payloads.append(op.payload)
        return self.inner.apply(op)
