"""gRPC interceptors against real sync and aio servers on 127.0.0.1, every call shape."""

from __future__ import annotations

import asyncio
import doctest
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
    StatusError,
    grpc_retry,
    idempotency_key,
)
from resilience import Emitter
from resilience.events import RetriesExhausted, RetryScheduled
from resilience.testing import FakeClock, RecordingListener

from ..grpc_fixtures import SS, SU, US, UU, Code, Fail, Script, start_aio_server, start_sync_server

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


@pytest.fixture(params=["sync", "aio"])
def client(request: pytest.FixtureRequest) -> Client:
    return Client(request.param)


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def port(script: Script) -> Iterator[int]:
    server, port = start_sync_server(script)
    yield port
    server.stop(None)


def retry(clock: FakeClock, **kw: Any) -> rs.Retry:
    kw.setdefault("backoff", rs.backoff.constant(0.5))
    return grpc_retry(clock=clock, **kw)


# -- client ------------------------------------------------------------------------------------
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
        assert rec.of(RetryScheduled)[0].server_directed  # type: ignore[attr-defined]
    else:
        with pytest.raises(grpc.RpcError):
            client.run(port, policy, "unary_unary")
        assert [e.reason for e in rec.of(RetriesExhausted)] == ["pushback"]  # type: ignore[attr-defined]
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
        assert scheduled.server_directed is (pushback is not None)  # type: ignore[attr-defined]
    else:  # negative or garbage pushback: do not retry (gRFC A6)
        with pytest.raises(grpc.RpcError) as info:
            client.run(port, policy, shape)
        assert info.value.code() == Code.UNAVAILABLE
        assert [e.reason for e in rec.of(RetriesExhausted)] == ["pushback"]  # type: ignore[attr-defined]
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
    assert [e.reason for e in rec.of(RetriesExhausted)] == ["deadline"]  # type: ignore[attr-defined]
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


@pytest.mark.parametrize("shape", SHAPES)
def test_far_off_deadline_is_sent_as_a_timeout_grpcio_accepts(
    client: Client, script: Script, port: int, clock: FakeClock, shape: str
) -> None:
    # grpcio treats a timeout above ~7.4e9 s as already expired (DEADLINE_EXCEEDED at once)
    with rs.deadline_scope(1e12):
        assert client.run(port, retry(clock), shape) == EXPECTED[shape]
    assert client.run(port, retry(clock), shape, timeout=1e12) == EXPECTED[shape]
    assert script.calls == 2


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


# -- deadlines ---------------------------------------------------------------------------------
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


# -- server ------------------------------------------------------------------------------------
class Gate(rs.Policy):
    """A tiny local policy: rejects with ``reject`` if set, records every outcome."""

    kind = "gate"

    def __init__(self, reject: BaseException | None = None) -> None:
        super().__init__(name="gate")
        self.reject = reject
        self.outcomes: list[Any] = []

    def _wrap_sync(self, fn: Callable[..., Any], em: Emitter) -> Callable[..., Any]:
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

    def _wrap_async(
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


@pytest.fixture(params=["sync", "aio"])
def served(request: pytest.FixtureRequest) -> Served:
    return Served(request.param)


def trailer(error: Any) -> dict[str, str]:
    return dict(error.trailing_metadata() or ())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("error", "code", "pushback"),
    [
        (rs.RateLimitedError("slow down", retry_after=0.25), Code.RESOURCE_EXHAUSTED, "250"),
        (rs.CircuitOpenError("open", retry_after=3.0), Code.UNAVAILABLE, "3000"),
        (rs.BulkheadFullError("full"), Code.UNAVAILABLE, None),
        (rs.TimeoutExceededError("late"), Code.DEADLINE_EXCEEDED, None),
        (rs.IdempotencyInProgressError("busy"), Code.ABORTED, None),
    ],
    ids=["limiter", "breaker", "bulkhead", "timeout", "idempotency"],
)
def test_server_maps_policy_errors_to_statuses(
    served: Served,
    script: Script,
    shape: str,
    error: Exception,
    code: grpc.StatusCode,
    pushback: str | None,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        served.run(script, {"pipeline": Gate(reject=error)}, shape)
    assert info.value.code() == code
    assert trailer(info.value).get("grpc-retry-pushback-ms") == pushback
    assert script.calls == 0


@pytest.mark.parametrize("shape", SHAPES)
def test_server_says_forced_open_in_status_details(
    served: Served, script: Script, shape: str
) -> None:
    breaker = rs.CircuitBreaker("upstream", failure_count=1)
    breaker.open()
    with pytest.raises(grpc.RpcError) as info:
        served.run(script, {"pipeline": rs.Pipeline(breaker)}, shape)
    assert info.value.code() == Code.UNAVAILABLE
    assert "forced open" in (info.value.details() or "")
    assert "grpc-retry-pushback-ms" not in trailer(info.value)
    assert script.calls == 0


@pytest.mark.parametrize("shape", SHAPES)
def test_server_pipeline_sees_aborts_as_status_errors(
    served: Served, script: Script, shape: str
) -> None:
    gate = Gate()
    script.plan = [Fail(Code.UNAVAILABLE, pushback="10")]
    with pytest.raises(grpc.RpcError) as info:
        served.run(script, {"pipeline": gate}, shape)
    assert info.value.code() == Code.UNAVAILABLE
    assert info.value.details() == "scripted"
    assert trailer(info.value).get("grpc-retry-pushback-ms") == "10"
    (outcome,) = gate.outcomes
    assert isinstance(outcome, StatusError)
    assert outcome.code() == Code.UNAVAILABLE


def test_server_pipeline_sees_set_code_as_failure(served: Served, script: Script) -> None:
    gate = Gate()
    script.plan = [Fail(Code.INTERNAL, set_code=True)]
    with pytest.raises(grpc.RpcError) as info:
        served.run(script, {"pipeline": gate}, "unary_unary")
    assert info.value.code() == Code.INTERNAL
    assert [o.code() for o in gate.outcomes] == [Code.INTERNAL]


@pytest.mark.parametrize("shape", SHAPES)
def test_server_success_and_deadline_per_shape(served: Served, script: Script, shape: str) -> None:
    gate = Gate()
    assert served.run(script, {"pipeline": gate}, shape, timeout=5.0) == EXPECTED[shape]
    assert gate.outcomes == ["ok"]
    (left,) = script.remaining
    assert left is not None
    assert 3.0 < left <= 5.1


def test_server_unmapped_exception_is_unknown(served: Served, script: Script) -> None:
    with pytest.raises(grpc.RpcError) as info:
        served.run(script, {"pipeline": Gate(reject=KeyError("x"))}, "unary_unary")
    assert info.value.code() == Code.UNKNOWN


def test_server_idempotency_hook(served: Served, script: Script) -> None:
    seen: list[str | None] = []

    class KeyProbe(Gate):
        def _wrap_sync(self, fn: Callable[..., Any], em: Emitter) -> Callable[..., Any]:
            def probe(*args: Any) -> Any:
                seen.append(idempotency_key())
                return fn(*args)

            return probe

        def _wrap_async(self, fn: Callable[..., Any], em: Emitter) -> Callable[..., Any]:
            async def probe(*args: Any) -> Any:
                seen.append(idempotency_key())
                return await fn(*args)

            return probe

    kw = {"pipeline": None, "idempotency": KeyProbe(), "idempotency_required": True}
    md = (("idempotency-key", "k-1"),)
    assert served.run(script, kw, "unary_unary", metadata=md) == b"re:a"
    assert seen == ["k-1"]
    for bad in [(), (("idempotency-key", "has space"),)]:
        with pytest.raises(grpc.RpcError) as info:
            served.run(script, kw, "unary_unary", metadata=bad)
        assert info.value.code() == Code.INVALID_ARGUMENT
    assert script.calls == 1


# -- tracing -----------------------------------------------------------------------------------
def test_events_reach_opentelemetry_with_the_rpc_method(
    script: Script, port: int, clock: FakeClock
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel = rs.instrumentation.OpenTelemetry(tracer_provider=provider)
    script.plan = [Fail(Code.UNAVAILABLE), None]
    pipeline = rs.Pipeline(retry(clock), name="billing", listeners=[otel])
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("rpc"):  # stands for the official instrumentation's span
        assert Client("sync").run(port, pipeline, "unary_unary") == b"re:a"
    (span,) = exporter.get_finished_spans()  # no span of our own
    (event,) = span.events
    assert event.name == "resilience.retry"
    assert event.attributes is not None
    assert event.attributes["resilience.operation"] == UU
    assert event.attributes["resilience.pipeline"] == "billing"


# -- configuration and docs --------------------------------------------------------------------
def test_configuration_errors() -> None:
    with pytest.raises(rs.ConfigurationError):
        ResilienceClientInterceptor(pipeline="retry")  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError):
        grpc_retry(codes=[])
    with pytest.raises(rs.ConfigurationError):
        grpc_retry(codes=[Code.OK])
    assert grpc_retry(attempts=9).attempts == 5


def test_interceptors_package_does_not_import_grpc() -> None:
    import subprocess
    import sys

    code = "import sys, interceptors; print('grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_doctests() -> None:
    import interceptors.grpc as pkg
    from interceptors.grpc import (
        _aio_client,
        _aio_server,
        _client,
        _common,
        _server,
        _status,
    )

    for module in (pkg, _status, _common, _client, _aio_client, _server, _aio_server):
        result = doctest.testmod(module)
        assert result.failed == 0, module.__name__


def test_the_status_table_in_the_docs_is_the_code_mapping() -> None:
    """docs/adapters/grpc.md's server table says what status_for answers (e.g. key reuse)."""
    import re
    from pathlib import Path

    from interceptors.grpc import status_for

    doc = (Path(__file__).resolve().parent.parent.parent / "docs/adapters/grpc.md").read_text()
    section = doc[doc.index("## Server") :]
    rows = [line for line in section.splitlines() if re.match(r"\| `\w+Error`", line)]
    checked = {}
    for row in rows:
        errors_cell, status_cell, trailer_cell = row.split("|")[1:4]
        (status,) = re.findall(r"`([A-Z_]+)`", status_cell)
        for name in re.findall(r"`(\w+Error)`", errors_cell):
            cls = getattr(rs, name)
            exc = cls.__new__(cls)
            exc.retry_after = 1.0
            mapped = status_for(exc)
            assert mapped is not None, name
            assert mapped[0].name == status, name
            assert bool(mapped[1]) == ("pushback" in trailer_cell), name
            checked[name] = status
    assert checked["IdempotencyKeyReusedError"] == "FAILED_PRECONDITION"
    assert {"RateLimitedError", "CircuitOpenError", "StoreError"} <= set(checked)


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
