"""gRPC client interceptor: retries, server pushback, throttling and replay limits, every call
shape.
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
from resilience.events import RetriesExhausted, RetryScheduled
from resilience.testing import FakeClock, RecordingListener

from ...grpc_fixtures import SU, Code, Fail, Script
from .grpc_support import EXPECTED, PATH, SHAPES, Client, acall, call, retry


@pytest.mark.parametrize("shape", SHAPES)
def test_client_retries_unavailable_with_backoff_and_attempt_metadata(
    client: Client, script: Script, port: int, clock: FakeClock, shape: str
) -> None:
    script.plan = [Fail(Code.UNAVAILABLE), Fail(Code.UNAVAILABLE), None]
    rec = RecordingListener()
    pipeline = rs.Pipeline(retry(clock, attempts=3), name="client", listeners=[rec])
    assert client.run(port, pipeline, shape) == EXPECTED[shape]
    assert script.calls == 3
    assert clock.sleeps == [0.5, 0.5]
    if shape.startswith("stream"):  # the request stream was replayed in full
        assert script.requests == [[b"a", b"b"]] * 3
    events = rec.of(RetryScheduled)
    assert [e.operation for e in events] == [PATH[shape]] * 2
    assert {e.pipeline for e in events} == {"client"}


@pytest.mark.parametrize("shape", SHAPES)
def test_client_does_not_retry_other_codes(
    client: Client, script: Script, port: int, clock: FakeClock, shape: str
) -> None:
    script.plan = [Fail(Code.NOT_FOUND), None]
    with pytest.raises(grpc.RpcError) as info:
        client.run(port, retry(clock), shape)
    assert info.value.code() == Code.NOT_FOUND
    assert script.calls == 1


@pytest.mark.parametrize(
    ("pushback", "calls", "sleeps"),
    [("250", 2, [0.25]), ("0", 2, []), ("-1", 1, []), ("soon", 1, [])],
)
def test_client_honours_pushback(
    client: Client,
    script: Script,
    port: int,
    clock: FakeClock,
    pushback: str,
    calls: int,
    sleeps: list[float],
) -> None:
    script.plan = [Fail(Code.UNAVAILABLE, pushback=pushback), None]
    rec = RecordingListener()
    policy = retry(clock, attempts=3, listeners=[rec])
    if calls == 2:
        assert client.run(port, policy, "unary_unary") == b"re:a"
        assert rec.of(RetryScheduled)[0].server_directed
    else:
        with pytest.raises(grpc.RpcError):
            client.run(port, policy, "unary_unary")
        assert [e.reason for e in rec.of(RetriesExhausted)] == ["pushback"]
    assert script.calls == calls
    assert clock.sleeps == sleeps


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("pushback", "calls", "sleeps"),
    [("250", 2, [0.25]), ("0", 2, []), ("-1", 1, []), ("soon", 1, []), (None, 2, [0.01])],
)
def test_pushback_reaches_a_plain_retry(
    client: Client,
    script: Script,
    port: int,
    clock: FakeClock,
    shape: str,
    pushback: str | None,
    calls: int,
    sleeps: list[float],
) -> None:
    """Not only grpc_retry(): any rs.Retry in the pipeline gets the server's pushback."""
    script.plan = [Fail(Code.UNAVAILABLE, pushback=pushback), None]
    rec = RecordingListener()
    policy = rs.Retry(
        on=grpc.RpcError,
        attempts=3,
        backoff=rs.backoff.constant(0.01),
        clock=clock,
        listeners=[rec],
    )
    if calls == 2:
        assert client.run(port, policy, shape) == EXPECTED[shape]
        (scheduled,) = rec.of(RetryScheduled)
        assert scheduled.server_directed is (pushback is not None)
    else:  # negative or garbage pushback: do not retry (gRFC A6)
        with pytest.raises(grpc.RpcError) as info:
            client.run(port, policy, shape)
        assert info.value.code() == Code.UNAVAILABLE
        assert [e.reason for e in rec.of(RetriesExhausted)] == ["pushback"]
    assert script.calls == calls
    assert clock.sleeps == sleeps


def test_pushback_to_a_plain_retry_is_capped_by_the_deadline(
    client: Client, script: Script, port: int, clock: FakeClock
) -> None:
    script.plan = [Fail(Code.UNAVAILABLE, pushback="5000"), None]
    rec = RecordingListener()
    policy = rs.Retry(on=grpc.RpcError, attempts=3, clock=clock, listeners=[rec])
    with rs.deadline_scope(2.0, clock=clock), pytest.raises(grpc.RpcError):
        client.run(port, policy, "unary_unary")
    assert [e.reason for e in rec.of(RetriesExhausted)] == ["deadline"]
    assert script.calls == 1
    assert clock.sleeps == []


def test_a_retry_after_hook_beats_the_pushback(
    client: Client, script: Script, port: int, clock: FakeClock
) -> None:
    script.plan = [Fail(Code.UNAVAILABLE, pushback="-1"), None]
    policy = rs.Retry(on=grpc.RpcError, attempts=3, clock=clock, retry_after=lambda o: 0.125)
    assert client.run(port, policy, "unary_unary") == b"re:a"
    assert clock.sleeps == [0.125]


def test_a_committed_stream_is_not_retried_by_a_plain_retry(
    client: Client, script: Script, port: int, clock: FakeClock
) -> None:
    script.plan = [Fail(Code.UNAVAILABLE), None]
    policy = rs.Retry(on=grpc.RpcError, attempts=3, clock=clock)
    target = f"127.0.0.1:{port}"

    def run() -> Any:
        if client.mode == "sync":
            ci = ResilienceClientInterceptor(pipeline=policy, replay_limit=1)
            with grpc.insecure_channel(target) as raw:
                return call(grpc.intercept_channel(raw, ci), "stream_unary")

        async def main() -> Any:
            aci = AsyncResilienceClientInterceptor(pipeline=policy, replay_limit=1)
            async with grpc.aio.insecure_channel(
                target, interceptors=aci.channel_interceptors()
            ) as ch:
                return await acall(ch, "stream_unary")

        return asyncio.run(main())

    with pytest.raises(grpc.RpcError):
        run()
    assert script.calls == 1  # two messages outgrew the replay buffer of one: committed


@pytest.mark.parametrize("shape", ["unary_stream", "stream_stream"])
def test_client_never_retries_after_a_message_arrived(
    client: Client, script: Script, port: int, clock: FakeClock, shape: str
) -> None:
    script.plan = [Fail(Code.UNAVAILABLE, after=1), None]
    seen: list[bytes] = []
    target = f"127.0.0.1:{port}"
    policy = retry(clock, attempts=5)
    arg: Any = b"a" if shape == "unary_stream" else [b"a", b"b"]

    def consume() -> None:
        if client.mode == "sync":
            with grpc.insecure_channel(target) as raw:
                ch: Any = grpc.intercept_channel(raw, ResilienceClientInterceptor(pipeline=policy))
                seen.extend(getattr(ch, shape)(PATH[shape])(arg))
            return

        async def main() -> None:
            interceptor = AsyncResilienceClientInterceptor(pipeline=policy)
            async with grpc.aio.insecure_channel(
                target, interceptors=interceptor.channel_interceptors()
            ) as ch:
                async for m in getattr(ch, shape)(PATH[shape])(arg):
                    seen.append(m)  # noqa: PERF401 - keep what arrived before the error

        asyncio.run(main())

    with pytest.raises(grpc.RpcError) as info:
        consume()
    assert info.value.code() == Code.UNAVAILABLE
    assert len(seen) == 1
    assert script.calls == 1
    assert clock.sleeps == []


def test_client_throttle_stops_retries(
    client: Client, script: Script, port: int, clock: FakeClock
) -> None:
    script.plan = [Fail(Code.UNAVAILABLE)]
    throttle = rs.RetryThrottle(max_tokens=4, token_ratio=0.5)
    policy = retry(clock, attempts=5, throttle=throttle)
    with pytest.raises(grpc.RpcError):
        client.run(port, policy, "unary_unary")
    # tokens 4 -> 3 (retry ok) -> 2 (2 is not > 4/2: stop)
    assert script.calls == 2
    assert throttle.tokens == 2
    script.plan = [Fail(Code.NOT_FOUND)]  # non-retryable statuses earn tokens (A6)
    with pytest.raises(grpc.RpcError):
        client.run(port, policy, "unary_unary")
    assert throttle.tokens == 2.5


def test_client_replay_limit_commits_streaming_requests(
    script: Script, port: int, clock: FakeClock
) -> None:
    script.plan = [Fail(Code.UNAVAILABLE), None]
    interceptor = ResilienceClientInterceptor(pipeline=retry(clock), replay_limit=1)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as raw:
        ch: Any = grpc.intercept_channel(raw, interceptor)
        with pytest.raises(grpc.RpcError):
            ch.stream_unary(SU)(iter([b"a", b"b"]))
    assert script.calls == 1
