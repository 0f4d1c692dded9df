"""Real CircuitBreaker, RateLimiter and Bulkhead in gRPC client and server pipelines against real
servers.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

import resilience as rs
from interceptors.grpc import (
    grpc_retry,
    method_key,
)
from resilience.testing import FakeClock

from ...grpc_fixtures import Code, Fail, Script
from .grpc_support import (
    CHARGE,
    EXPECTED,
    SHAPES,
    Client,
    Pay,
    call,
    charge,
    serve,
    state,
    status_of,
    trailer,
)


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
