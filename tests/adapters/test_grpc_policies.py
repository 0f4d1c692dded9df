"""Real policies (CircuitBreaker, IdempotencyRecords) in gRPC pipelines against real servers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

import resilience as rs
from interceptors.grpc import (
    REPLAYED_KEY,
    AsyncResilienceServerInterceptor,
    ResilienceServerInterceptor,
    grpc_retry,
    idempotency_key,
    method_key,
)
from resilience.idempotency import MAX_RESPONSE_BYTES, ClaimOp, CompleteOp
from resilience.stores import MemoryStore
from resilience.testing import FakeClock

from ..grpc_fixtures import SS, US, Code, Fail, Script, start_aio_server, start_sync_server
from ..helpers import RawBytes
from .test_grpc import EXPECTED, SHAPES, Client, call, trailer

CHARGE, BATCH = "/test.Pay/Charge", "/test.Pay/Batch"


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


# -- client: a real breaker ------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_client_breaker_trips_refuses_before_sending_and_probe_closes(
    client: Client, script: Script, port: int, clock: FakeClock, shape: str
) -> None:
    script.plan = [Fail(Code.UNAVAILABLE), Fail(Code.INTERNAL), None]
    breaker = rs.CircuitBreaker("backend", failure_count=2, open_for=10, clock=clock)
    for code in (Code.UNAVAILABLE, Code.INTERNAL):
        with pytest.raises(grpc.RpcError) as info:
            client.run(port, breaker, shape)
        assert info.value.code() == code
    assert state(breaker) == "OPEN"
    with pytest.raises(rs.CircuitOpenError) as refused:
        client.run(port, breaker, shape)
    assert refused.value.retry_after == 10.0
    assert script.calls == 2  # the refused call never reached the server
    clock.advance(10)
    assert client.run(port, breaker, shape) == EXPECTED[shape]  # the half-open probe
    assert state(breaker) == "CLOSED"
    assert script.calls == 3


def test_client_breaker_inside_retry_stops_the_retries(
    client: Client, script: Script, port: int, clock: FakeClock
) -> None:
    script.plan = [Fail(Code.UNAVAILABLE)]
    breaker = rs.CircuitBreaker("backend", failure_count=2, open_for=30, clock=clock)
    retry = grpc_retry(attempts=5, backoff=rs.backoff.constant(0.1), clock=clock)
    with pytest.raises(rs.CircuitOpenError):  # not retried: only UNAVAILABLE RpcErrors are
        client.run(port, rs.Pipeline(retry, breaker), "unary_unary")
    assert script.calls == 2
    assert clock.sleeps == [0.1, 0.1]


def test_client_breaker_failed_probe_reopens(
    client: Client, script: Script, port: int, clock: FakeClock
) -> None:
    script.plan = [Fail(Code.UNAVAILABLE)]
    breaker = rs.CircuitBreaker("backend", failure_count=1, open_for=5, clock=clock)
    with pytest.raises(grpc.RpcError):
        client.run(port, breaker, "unary_unary")
    clock.advance(5)
    with pytest.raises(grpc.RpcError):  # the probe reaches the server and fails
        client.run(port, breaker, "unary_unary")
    assert state(breaker) == "OPEN"
    with pytest.raises(rs.CircuitOpenError):
        client.run(port, breaker, "unary_unary")
    assert script.calls == 2


# -- server: a real breaker ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sync", "aio"])
@pytest.mark.parametrize("shape", SHAPES)
def test_server_breaker_counts_aborts_and_exceptions_and_answers_unavailable(
    kind: str, script: Script, clock: FakeClock, shape: str
) -> None:
    script.plan = [Fail(Code.UNAVAILABLE), Fail(raise_exc=True), None]
    breaker = rs.CircuitBreaker("handler", failure_count=2, open_for=2.5, clock=clock)

    def body(ch: Any) -> None:
        assert status_of(lambda: call(ch, shape)).code() == Code.UNAVAILABLE  # abort()
        assert status_of(lambda: call(ch, shape)).code() == Code.UNKNOWN  # an exception
        assert state(breaker) == "OPEN"
        refused = status_of(lambda: call(ch, shape))
        assert refused.code() == Code.UNAVAILABLE
        assert trailer(refused)["grpc-retry-pushback-ms"] == "2500"
        assert script.calls == 2  # the handler did not run
        clock.advance(1.0)
        refused = status_of(lambda: call(ch, shape))
        assert trailer(refused)["grpc-retry-pushback-ms"] == "1500"
        clock.advance(1.5)
        assert call(ch, shape) == EXPECTED[shape]  # the probe closes it
        assert state(breaker) == "CLOSED"

    serve(kind, script, {"pipeline": breaker}, body)
    assert script.calls == 3


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_server_breaker_on_predicate_ignores_client_errors(
    kind: str, script: Script, clock: FakeClock
) -> None:
    from interceptors.grpc import retryable

    script.plan = [Fail(Code.INVALID_ARGUMENT)]
    breaker = rs.CircuitBreaker(
        "handler", failure_count=1, on=retryable([Code.UNAVAILABLE]), clock=clock
    )

    def body(ch: Any) -> None:
        for _ in range(3):
            assert status_of(lambda: call(ch, "unary_unary")).code() == Code.INVALID_ARGUMENT

    serve(kind, script, {"pipeline": breaker}, body)
    assert state(breaker) == "CLOSED"
    assert script.calls == 3


# -- server: idempotency records -------------------------------------------------------------
def _encode(text: str | bytes) -> bytes:
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
            "response_serializer": _encode,
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


@pytest.fixture(params=["sync", "aio"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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


def test_idempotency_20_concurrent_duplicates_run_once(kind: str, script: Script) -> None:
    pay = Pay()
    pay.release.clear()  # the first call holds its claim until duplicates are waiting on it
    store = CountingStore(19, pay.release)
    records = rs.IdempotencyRecords(store=store, lease=30)
    kw = {"pipeline": None, "idempotency": records, "idempotency_wait": 10.0}

    def body(ch: Any) -> list[tuple[bytes, str | None]]:
        stub = ch.unary_unary(CHARGE)
        futures = [stub.future(b"5", metadata=key("order-1")) for _ in range(20)]
        return [
            (f.result(timeout=20), dict(f.trailing_metadata()).get(REPLAYED_KEY)) for f in futures
        ]

    results = serve(kind, script, kw, body, extra=pay.handlers(kind), workers=24)
    assert pay.executions == 1
    assert pay.released_in_time  # the duplicates really overlapped the first call
    assert {r for r, _ in results} == {b"charged 5 #1"}
    assert sorted(m or "" for _, m in results) == [""] + ["true"] * 19


def test_idempotency_replay_reuse_and_principals(
    kind: str, script: Script, clock: FakeClock
) -> None:
    pay = Pay()
    records = rs.IdempotencyRecords(clock=clock)

    def body(ch: Any) -> None:
        first = charge(ch, b"5", key("k"))
        assert first == (b"charged 5 #1", {})
        again = charge(ch, b"5", key("k"))
        assert again == (b"charged 5 #1", {REPLAYED_KEY: "true"})
        reused = status_of(lambda: charge(ch, b"500", key("k")))
        assert reused.code() == Code.FAILED_PRECONDITION
        assert charge(ch, b"5", key("k"))[0] == b"charged 5 #1"  # the record is untouched
        # another principal (authorization metadata) has its own records
        other = charge(ch, b"5", key("k", ("authorization", "Bearer bob")))
        assert other == (b"charged 5 #2", {})
        # no key: not deduplicated
        assert charge(ch, b"5")[0] == b"charged 5 #3"
        assert charge(ch, b"5")[0] == b"charged 5 #4"
        # the same key on another method is another record
        assert ch.stream_unary(BATCH)(iter([b"a", b"b"]), metadata=key("k")) == b"a+b #5"
        assert ch.stream_unary(BATCH)(iter([b"a", b"b"]), metadata=key("k")) == b"a+b #5"
        changed = status_of(lambda: ch.stream_unary(BATCH)(iter([b"a", b"c"]), metadata=key("k")))
        assert changed.code() == Code.FAILED_PRECONDITION
        # records expire ttl after completion
        clock.advance(86400)
        assert charge(ch, b"5", key("k"))[0] == b"charged 5 #6"

    serve(kind, script, {"pipeline": None, "idempotency": records}, body, extra=pay.handlers(kind))
    assert pay.executions == 6


def test_idempotency_in_progress_is_aborted_with_pushback(
    kind: str, script: Script, clock: FakeClock
) -> None:
    pay = Pay()
    pay.release.clear()
    records = rs.IdempotencyRecords(clock=clock, lease=45)

    def body(ch: Any) -> None:
        first = ch.unary_unary(CHARGE).future(b"5", metadata=key("k"))
        assert pay.started.wait(10)
        busy = status_of(lambda: charge(ch, b"5", key("k")))
        assert busy.code() == Code.ABORTED
        assert trailer(busy)["grpc-retry-pushback-ms"] == "45000"
        pay.release.set()
        assert first.result(timeout=10) == b"charged 5 #1"
        assert charge(ch, b"5", key("k"))[0] == b"charged 5 #1"

    serve(kind, script, {"pipeline": None, "idempotency": records}, body, extra=pay.handlers(kind))
    assert pay.executions == 1


def test_idempotency_failed_handler_releases_the_key(
    kind: str, script: Script, clock: FakeClock
) -> None:
    pay = Pay()
    pay.fail = Code.UNAVAILABLE
    records = rs.IdempotencyRecords(clock=clock)

    def body(ch: Any) -> None:
        assert status_of(lambda: charge(ch, b"5", key("k"))).code() == Code.UNAVAILABLE
        assert charge(ch, b"5", key("k")) == (b"charged 5 #2", {})  # a retry runs again
        assert charge(ch, b"5", key("k"))[1] == {REPLAYED_KEY: "true"}

    serve(kind, script, {"pipeline": None, "idempotency": records}, body, extra=pay.handlers(kind))


def test_idempotency_key_validation_and_streaming_methods(
    kind: str, script: Script, clock: FakeClock
) -> None:
    pay = Pay()
    kw = {
        "pipeline": None,
        "idempotency": rs.IdempotencyRecords(clock=clock),
        "idempotency_required": True,
    }

    def body(ch: Any) -> None:
        for md in [(), key("has space"), key("a") + key("b")]:
            bad = status_of(lambda md=md: charge(ch, b"5", md))  # type: ignore[misc]
            assert bad.code() == Code.INVALID_ARGUMENT
        # a response stream cannot be replayed: a key is refused, no key is fine
        refused = status_of(lambda: list(ch.unary_stream(US)(b"a", metadata=key("k"))))
        assert refused.code() == Code.INVALID_ARGUMENT
        assert "streaming-response" in (refused.details() or "")
        assert list(ch.unary_stream(US)(b"a")) == EXPECTED["unary_stream"]
        # a request the method's deserializer refuses
        assert status_of(lambda: charge(ch, b"\xff", key("k"))).code() == Code.INTERNAL

    serve(kind, script, kw, body, extra=pay.handlers(kind))
    assert pay.executions == 0
    assert script.calls == 1


def test_idempotency_principal_callable(kind: str, script: Script, clock: FakeClock) -> None:
    pay = Pay()

    def tenant(context: Any) -> str | None:
        md = dict(context.invocation_metadata())
        return md.get("x-tenant")  # None: no tenant, no deduplication

    kw = {"pipeline": None, "idempotency": rs.IdempotencyRecords(clock=clock), "principal": tenant}

    def body(ch: Any) -> None:
        acme = key("k", ("x-tenant", "acme"))
        assert charge(ch, b"5", acme)[0] == b"charged 5 #1"
        assert charge(ch, b"5", acme)[0] == b"charged 5 #1"
        assert charge(ch, b"5", key("k", ("x-tenant", "umbrella")))[0] == b"charged 5 #2"
        assert charge(ch, b"5", key("k"))[0] == b"charged 5 #3"
        assert charge(ch, b"5", key("k"))[0] == b"charged 5 #4"

    serve(kind, script, kw, body, extra=pay.handlers(kind))


def _policy(clock: FakeClock, **kw: Any) -> rs.Idempotent:
    """The ``idempotency=rs.Idempotent(...)`` spelling docs/adapters/grpc.md shows."""
    return rs.Idempotent(
        key=lambda request, context: idempotency_key(),
        fingerprint=lambda request, context: request,
        clock=clock,
        **kw,
    )


def test_idempotency_policy_is_scoped_by_caller_and_marks_replays(
    kind: str, script: Script, clock: FakeClock
) -> None:
    pay = Pay()
    alice = key("k", ("authorization", "Bearer alice"))
    bob = key("k", ("authorization", "Bearer bob"))

    def body(ch: Any) -> None:
        assert charge(ch, b"5", alice) == (b"charged 5 #1", {})
        assert charge(ch, b"5", alice) == (b"charged 5 #1", {REPLAYED_KEY: "true"})
        # the same key from another caller is another record: never alice's response
        assert charge(ch, b"5", bob) == (b"charged 5 #2", {})
        assert charge(ch, b"5", bob) == (b"charged 5 #2", {REPLAYED_KEY: "true"})
        # and a caller's reuse of its key with another request is refused as before
        assert status_of(lambda: charge(ch, b"6", bob)).code() == Code.FAILED_PRECONDITION

    kw = {"pipeline": None, "idempotency": _policy(clock)}
    serve(kind, script, kw, body, extra=pay.handlers(kind))
    assert pay.executions == 2


@pytest.mark.parametrize("spelling", ["records", "policy"])
def test_idempotency_scope_hook_for_both_spellings(
    kind: str, script: Script, clock: FakeClock, spelling: str
) -> None:
    pay = Pay()

    def tenant(context: Any) -> str | None:
        return dict(context.invocation_metadata()).get("x-tenant")  # None: no deduplication

    idem = rs.IdempotencyRecords(clock=clock) if spelling == "records" else _policy(clock)
    kw = {"pipeline": None, "idempotency": idem, "scope": tenant}
    acme = key("k", ("x-tenant", "acme"), ("authorization", "Bearer alice"))

    def body(ch: Any) -> None:
        assert charge(ch, b"5", acme) == (b"charged 5 #1", {})
        # same tenant, another credential: the scope hook decides, so this is a replay
        same = key("k", ("x-tenant", "acme"), ("authorization", "Bearer bob"))
        assert charge(ch, b"5", same) == (b"charged 5 #1", {REPLAYED_KEY: "true"})
        assert charge(ch, b"5", key("k", ("x-tenant", "umbrella")))[0] == b"charged 5 #2"
        assert charge(ch, b"5", key("k")) == (b"charged 5 #3", {})
        assert charge(ch, b"5", key("k")) == (b"charged 5 #4", {})

    serve(kind, script, kw, body, extra=pay.handlers(kind))


def test_idempotency_policy_scope_does_not_reach_the_handlers_own_records(
    kind: str, script: Script, clock: FakeClock
) -> None:
    """An idempotent function the handler calls keeps one record for every caller."""
    runs: list[str] = []
    ship = rs.Idempotent(key=lambda order: order, clock=clock)(lambda order: runs.append(order))

    def sync_ship(request: bytes, context: Any) -> bytes:
        ship(request.decode())
        return b"shipped"

    async def aio_ship(request: bytes, context: Any) -> bytes:
        ship(request.decode())
        return b"shipped"

    handler = grpc.unary_unary_rpc_method_handler(sync_ship if kind == "sync" else aio_ship)
    extra = grpc.method_handlers_generic_handler("test.Ship", {"Ship": handler})
    kw = {"pipeline": None, "idempotency": _policy(clock)}

    def body(ch: Any) -> None:
        stub = ch.unary_unary("/test.Ship/Ship")
        for who in ("alice", "bob"):
            md = key(f"{who}-key", ("authorization", f"Bearer {who}"))
            assert stub(b"order-1", metadata=md) == b"shipped"

    serve(kind, script, kw, body, extra=extra)
    assert runs == ["order-1"]


class PayloadSpy:
    """A memory store that remembers the payload of every completed record."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.payloads: list[str | None] = []

    def apply(self, op: Any) -> Any:
        if isinstance(op, CompleteOp):
            self.payloads.append(op.payload)
        return self.inner.apply(op)


@pytest.mark.parametrize("spelling", ["records", "policy"])
def test_idempotency_response_over_the_cap_is_not_retained(
    kind: str, script: Script, clock: FakeClock, spelling: str
) -> None:
    runs: list[bytes] = []
    big = b"x" * MAX_RESPONSE_BYTES + b"!"  # one byte over the shared default cap

    def sync_get(request: bytes, context: Any) -> bytes:
        runs.append(request)
        return big if request == b"big" else b"small"

    async def aio_get(request: bytes, context: Any) -> bytes:
        return sync_get(request, context)

    handler = grpc.unary_unary_rpc_method_handler(sync_get if kind == "sync" else aio_get)
    extra = grpc.method_handlers_generic_handler("test.Big", {"Get": handler})
    store = PayloadSpy()
    idem: Any = (
        rs.IdempotencyRecords(store=store, clock=clock)
        if spelling == "records"
        else _policy(clock, codec=RawBytes(), store=store)
    )

    def body(ch: Any) -> None:
        get = ch.unary_unary("/test.Big/Get")
        assert get(b"big", metadata=key("b")) == big  # the first caller gets it whole
        # a duplicate is refused ("not retained"), never served a stored copy
        refused = status_of(lambda: get.with_call(b"big", metadata=key("b")))
        assert refused.code() == Code.ABORTED
        assert "not retained" in (refused.details() or "")
        # under the cap: retained and replayed as before
        assert get.with_call(b"small", metadata=key("s"))[0] == b"small"
        response, call_ = get.with_call(b"small", metadata=key("s"))
        assert (response, dict(call_.trailing_metadata())) == (b"small", {REPLAYED_KEY: "true"})

    serve(kind, script, {"pipeline": None, "idempotency": idem}, body, extra=extra)
    assert runs == [b"big", b"small"]
    big_payload, small_payload = store.payloads
    assert big_payload is None  # completed as not retained: nothing of it was stored
    assert small_payload is not None
    assert len(small_payload) < 100


def test_idempotency_request_streams_are_buffered_within_a_shared_budget(
    kind: str, script: Script, clock: FakeClock
) -> None:
    records = rs.IdempotencyRecords(clock=clock, max_buffered_bytes=1000)
    started, release = threading.Event(), threading.Event()

    def sync_load(requests: Iterator[bytes], context: Any) -> bytes:
        got = list(requests)
        started.set()
        assert release.wait(10)
        return b"%d" % sum(map(len, got))

    async def aio_load(requests: Any, context: Any) -> bytes:
        got = [r async for r in requests]
        started.set()
        assert await asyncio.to_thread(release.wait, 10)
        return b"%d" % sum(map(len, got))

    handler = grpc.stream_unary_rpc_method_handler(sync_load if kind == "sync" else aio_load)
    extra = grpc.method_handlers_generic_handler("test.Up", {"Load": handler})
    chunk = b"y" * 300

    def body(ch: Any) -> None:
        load = ch.stream_unary("/test.Up/Load")
        release.set()
        # one stream larger than the whole budget can never be buffered
        too_big = status_of(lambda: load(iter([chunk] * 4), metadata=key("big")))
        assert too_big.code() == Code.RESOURCE_EXHAUSTED
        assert records.buffers.in_use == 0
        release.clear()
        first = load.future(iter([chunk, chunk]), metadata=key("k1"))  # holds 600 bytes
        assert started.wait(10)
        assert records.buffers.in_use == 600
        busy = status_of(lambda: load(iter([chunk, chunk]), metadata=key("k2")))
        assert busy.code() == Code.UNAVAILABLE
        assert trailer(busy)["grpc-retry-pushback-ms"] == "1000"
        assert records.buffers.in_use == 600  # the refused stream released what it took
        release.set()
        assert first.result(timeout=10) == b"600"
        assert records.buffers.in_use == 0
        assert load(iter([chunk, chunk]), metadata=key("k2")) == b"600"  # the retry fits

    serve(kind, script, {"pipeline": None, "idempotency": records}, body, extra=extra)
    assert records.buffers.in_use == 0


def test_idempotency_replays_while_the_breaker_is_open(
    kind: str, script: Script, clock: FakeClock
) -> None:
    pay = Pay()
    breaker = rs.CircuitBreaker("pay", failure_count=1, clock=clock)
    kw = {"pipeline": breaker, "idempotency": rs.IdempotencyRecords(clock=clock)}

    def body(ch: Any) -> None:
        assert charge(ch, b"5", key("k"))[0] == b"charged 5 #1"
        breaker.open()
        assert charge(ch, b"5", key("k")) == (b"charged 5 #1", {REPLAYED_KEY: "true"})
        assert status_of(lambda: charge(ch, b"5", key("k2"))).code() == Code.UNAVAILABLE
        breaker.close()
        assert charge(ch, b"5", key("k2"))[0] == b"charged 5 #2"  # the refusal released k2

    serve(kind, script, kw, body, extra=pay.handlers(kind))


def test_idempotency_configuration_errors() -> None:
    with pytest.raises(rs.ConfigurationError):
        ResilienceServerInterceptor(pipeline=None, idempotency="records")  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError):
        AsyncResilienceServerInterceptor(
            pipeline=None,
            idempotency=rs.IdempotencyRecords(),
            principal="peer",  # type: ignore[arg-type]
        )
    with pytest.raises(rs.ConfigurationError):
        ResilienceServerInterceptor(pipeline=None, idempotency_wait=-1)
    with pytest.raises(rs.ConfigurationError):
        ResilienceServerInterceptor(pipeline=None, scope=str, principal=str)
    with pytest.raises(rs.ConfigurationError):
        AsyncResilienceServerInterceptor(pipeline=None, scope="tenant")  # type: ignore[arg-type]


# -- rate limiter and bulkhead -----------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_server_limiter_answers_resource_exhausted_with_pushback(
    kind: str, script: Script, clock: FakeClock, shape: str
) -> None:
    limiter = rs.RateLimiter("server", rate=2, per=1.0, clock=clock)

    def body(ch: Any) -> None:
        assert call(ch, shape) == EXPECTED[shape]
        assert call(ch, shape) == EXPECTED[shape]
        limited = status_of(lambda: call(ch, shape))
        assert limited.code() == Code.RESOURCE_EXHAUSTED
        assert trailer(limited)["grpc-retry-pushback-ms"] == "500"
        clock.advance(0.5)
        assert call(ch, shape) == EXPECTED[shape]

    serve(kind, script, {"pipeline": limiter}, body)
    assert script.calls == 3  # the limited call never reached the handler


def test_server_limiter_per_method(kind: str, script: Script, clock: FakeClock) -> None:
    limiter = rs.RateLimiter("server", rate=1, per=2.0, key=method_key, clock=clock)

    def body(ch: Any) -> None:
        assert call(ch, "unary_unary") == EXPECTED["unary_unary"]
        assert call(ch, "unary_stream") == EXPECTED["unary_stream"]  # its own bucket
        limited = status_of(lambda: call(ch, "unary_unary"))
        assert limited.code() == Code.RESOURCE_EXHAUSTED
        assert trailer(limited)["grpc-retry-pushback-ms"] == "2000"

    serve(kind, script, {"pipeline": limiter}, body)
    assert script.calls == 2


def test_client_limiter_per_method_refuses_before_sending(
    client: Client, script: Script, port: int, clock: FakeClock
) -> None:
    limiter = rs.RateLimiter("client", rate=1, per=1.0, key=method_key, clock=clock)
    assert client.run(port, limiter, "unary_unary") == EXPECTED["unary_unary"]
    assert client.run(port, limiter, "stream_unary") == EXPECTED["stream_unary"]
    with pytest.raises(rs.RateLimitedError) as info:
        client.run(port, limiter, "unary_unary")
    assert info.value.retry_after == 1.0
    assert script.calls == 2
    clock.advance(1.0)
    assert client.run(port, limiter, "unary_unary") == EXPECTED["unary_unary"]
    assert script.calls == 3


@pytest.mark.parametrize("shape", SHAPES)
def test_client_limiter_paces_with_max_wait(
    client: Client, script: Script, port: int, clock: FakeClock, shape: str
) -> None:
    limiter = rs.RateLimiter("client", rate=1, per=0.25, max_wait=1.0, clock=clock)
    for _ in range(3):
        assert client.run(port, limiter, shape) == EXPECTED[shape]
    assert clock.sleeps == [0.25, 0.25]
    assert script.calls == 3


def test_client_limiter_inside_retry_paces_attempts(
    client: Client, script: Script, port: int, clock: FakeClock
) -> None:
    script.plan = [Fail(Code.UNAVAILABLE), None]
    limiter = rs.RateLimiter("client", rate=1, per=1.0, max_wait=5.0, clock=clock)
    retry = grpc_retry(attempts=3, backoff=rs.backoff.constant(0.25), clock=clock)
    assert client.run(port, rs.Pipeline(retry, limiter), "unary_unary") == EXPECTED["unary_unary"]
    assert clock.sleeps == [0.25, 0.75]  # the backoff, then the limiter's wait for its slot
    assert script.calls == 2


def test_server_bulkhead_answers_unavailable(kind: str, script: Script) -> None:
    pay = Pay()
    pay.release.clear()
    bulkhead = rs.Bulkhead("handlers", max_concurrent=1)

    def body(ch: Any) -> None:
        first = ch.unary_unary(CHARGE).future(b"5")
        assert pay.started.wait(10)
        full = status_of(lambda: charge(ch, b"6"))
        assert full.code() == Code.UNAVAILABLE
        pay.release.set()
        assert first.result(timeout=10) == b"charged 5 #1"
        assert charge(ch, b"7")[0] == b"charged 7 #2"

    serve(kind, script, {"pipeline": bulkhead}, body, extra=pay.handlers(kind))
    assert pay.executions == 2


@pytest.mark.parametrize("shape", ["unary_stream", "stream_stream"])
def test_idempotency_policy_on_a_response_stream_marks_the_replay(
    kind: str, script: Script, clock: FakeClock, shape: str
) -> None:
    """aio replays a completed stream as an empty one, marked; sync cannot store a stream."""
    alice = key("k", ("authorization", "Bearer alice"))
    bob = key("k", ("authorization", "Bearer bob"))
    policy = rs.Idempotent(
        key=lambda request, context: idempotency_key(), fingerprint=None, clock=clock
    )

    def stream(ch: Any, md: Any) -> tuple[list[bytes], dict[str, Any]]:
        if shape == "unary_stream":
            call_ = ch.unary_stream(US)(b"a", metadata=md)
        else:
            call_ = ch.stream_stream(SS)(iter([b"a", b"b"]), metadata=md)
        messages = list(call_)
        assert call_.code() == Code.OK
        return messages, dict(call_.trailing_metadata() or ())

    def body(ch: Any) -> None:
        assert stream(ch, alice) == (EXPECTED[shape], {})  # the first run: no marker
        if kind == "aio":
            # the handler does not run again: no messages, and the marker says why
            assert stream(ch, alice) == ([], {REPLAYED_KEY: "true"})
        else:
            refused = status_of(lambda: stream(ch, alice))
            assert refused.code() == Code.ABORTED
            assert "not retained" in (refused.details() or "")
            assert REPLAYED_KEY not in trailer(refused)
        assert stream(ch, bob) == (EXPECTED[shape], {})  # another caller's record: it runs

    serve(kind, script, {"pipeline": None, "idempotency": policy}, body)
    assert script.calls == 2
