"""gRPC with the Idempotent policy: caller scoping, replay marks, response caps, buffered request
streams.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

import resilience as rs
from interceptors.grpc import (
    REPLAYED_KEY,
    idempotency_key,
)
from resilience.idempotency import MAX_RESPONSE_BYTES
from resilience.testing import FakeClock

from ...grpc_fixtures import SS, US, Code, Script
from ...helpers import RawBytes
from .grpc_support import (
    EXPECTED,
    Pay,
    PayloadSpy,
    charge,
    idempotent_policy,
    key,
    serve,
    status_of,
    trailer,
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

    kw = {"pipeline": None, "idempotency": idempotent_policy(clock)}
    serve(kind, script, kw, body, extra=pay.handlers(kind))
    assert pay.executions == 2


@pytest.mark.parametrize("spelling", ["records", "policy"])
def test_idempotency_scope_hook_for_both_spellings(
    kind: str, script: Script, clock: FakeClock, spelling: str
) -> None:
    pay = Pay()

    def tenant(context: Any) -> str | None:
        return dict(context.invocation_metadata()).get("x-tenant")  # None: no deduplication

    idem = rs.IdempotencyRecords(clock=clock) if spelling == "records" else idempotent_policy(clock)
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
    kw = {"pipeline": None, "idempotency": idempotent_policy(clock)}

    def body(ch: Any) -> None:
        stub = ch.unary_unary("/test.Ship/Ship")
        for who in ("alice", "bob"):
            md = key(f"{who}-key", ("authorization", f"Bearer {who}"))
            assert stub(b"order-1", metadata=md) == b"shipped"

    serve(kind, script, kw, body, extra=extra)
    assert runs == ["order-1"]


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
        else idempotent_policy(clock, codec=RawBytes(), store=store)
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
