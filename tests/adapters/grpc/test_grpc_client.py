"""gRPC client interceptor: attempt metadata and timeouts sent, refusals before sending, futures,
stream calls, aio channel wiring.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

import resilience as rs
from interceptors.grpc import (
    AsyncResilienceClientInterceptor,
    ResilienceClientInterceptor,
)
from resilience.testing import FakeClock

from ...grpc_fixtures import US, UU, Code, Fail, Script
from .grpc_support import EXPECTED, SHAPES, Client, Gate, acall, retry


@pytest.mark.parametrize("shape", SHAPES)
def test_far_off_deadline_is_sent_as_a_timeout_grpcio_accepts(
    client: Client, script: Script, port: int, clock: FakeClock, shape: str
) -> None:
    # grpcio treats a timeout above ~7.4e9 s as already expired (DEADLINE_EXCEEDED at once)
    with rs.deadline_scope(1e12):
        assert client.run(port, retry(clock), shape) == EXPECTED[shape]
    assert client.run(port, retry(clock), shape, timeout=1e12) == EXPECTED[shape]
    assert script.calls == 2


class MetadataRecorder(grpc.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """An inner interceptor recording the metadata and timeout of each outgoing attempt."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, Any], float | None]] = []

    def _record(self, details: Any) -> None:
        self.seen.append((dict(details.metadata or ()), details.timeout))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._record(details)
        return continuation(details, request)


class AioMetadataRecorder(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, recorder: MetadataRecorder) -> None:
        self.recorder = recorder

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.recorder._record(details)
        return await continuation(details, request)


def test_client_sets_previous_attempts_metadata_and_attempt_timeout(
    client: Client, script: Script, port: int, clock: FakeClock
) -> None:
    script.plan = [Fail(Code.UNAVAILABLE), Fail(Code.UNAVAILABLE), None]
    rec = MetadataRecorder()
    ours_sync = ResilienceClientInterceptor(pipeline=retry(clock))
    target = f"127.0.0.1:{port}"
    md = (("x-user", "u"),)
    if client.mode == "sync":
        with grpc.insecure_channel(target) as raw:
            ch: Any = grpc.intercept_channel(raw, ours_sync, rec)
            assert ch.unary_unary(UU)(b"a", timeout=10.0, metadata=md) == b"re:a"
    else:

        async def main() -> None:
            ours = AsyncResilienceClientInterceptor(pipeline=retry(clock))
            interceptors: Any = [*ours.channel_interceptors(), AioMetadataRecorder(rec)]
            async with grpc.aio.insecure_channel(target, interceptors=interceptors) as aio_ch:
                ch: Any = aio_ch
                assert await ch.unary_unary(UU)(b"a", timeout=10.0, metadata=md) == b"re:a"

        asyncio.run(main())
    attempts = [m.get("grpc-previous-rpc-attempts") for m, _ in rec.seen]
    assert attempts == [None, "1", "2"]
    assert all(m["x-user"] == "u" for m, _ in rec.seen)
    timeouts = [t for _, t in rec.seen]
    assert all(t is not None and 0 < t <= 10.0 for t in timeouts)


def test_client_policy_rejection_is_raised_before_sending(
    client: Client, script: Script, port: int
) -> None:
    gate = Gate(reject=rs.CircuitOpenError("open", retry_after=1.0))
    with pytest.raises(rs.CircuitOpenError):
        client.run(port, gate, "unary_unary")
    assert script.calls == 0


def test_future_returns_failed_call(script: Script, port: int, clock: FakeClock) -> None:
    script.plan = [Fail(Code.UNAVAILABLE)]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as raw:
        ch: Any = grpc.intercept_channel(raw, ResilienceClientInterceptor(pipeline=retry(clock)))
        fut: Any = ch.unary_unary(UU).future(b"a")
        assert fut.exception().code() == Code.UNAVAILABLE
    assert script.calls == 3


def test_stream_call_methods_and_cancel(script: Script, port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as raw:
        ch: Any = grpc.intercept_channel(raw, ResilienceClientInterceptor(pipeline=None))
        stream = ch.unary_stream(US)(b"a")
        assert next(stream) == b"0:a"
        assert list(stream) == [b"1:a", b"2:a"]
        assert stream.code() == Code.OK
        unused = ch.unary_stream(US)(b"a")
        assert unused.cancel()
        with pytest.raises(grpc.FutureCancelledError):
            next(unused)
    assert script.calls == 1


def test_aio_interceptor_passed_whole_fails_loudly(script: Script, port: int) -> None:
    """interceptors=[ci] on a grpc.aio channel would guard unary-unary calls only: refuse it."""
    ci = AsyncResilienceClientInterceptor(pipeline=rs.Retry(on=grpc.RpcError))

    async def main() -> None:
        whole: Any = [ci]
        with pytest.raises(ValueError, match="channel_interceptors"):
            grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=whole)
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=ci.channel_interceptors()
        ) as ch:
            for shape in SHAPES:  # and channel_interceptors() covers every shape
                assert await acall(ch, shape) == EXPECTED[shape]

    asyncio.run(main())
    assert script.calls == 4
