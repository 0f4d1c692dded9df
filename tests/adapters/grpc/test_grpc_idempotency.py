"""gRPC server with IdempotencyRecords: duplicates run once, replays, in-progress aborts, key
validation, principals.
"""

from __future__ import annotations

from typing import Any

import pytest

import resilience as rs
from interceptors.grpc import (
    REPLAYED_KEY,
    AsyncResilienceServerInterceptor,
    ResilienceServerInterceptor,
)
from resilience.testing import FakeClock

from ...grpc_fixtures import US, Code, Script
from .grpc_support import (
    BATCH,
    CHARGE,
    EXPECTED,
    CountingStore,
    Pay,
    charge,
    key,
    serve,
    status_of,
    trailer,
)


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
