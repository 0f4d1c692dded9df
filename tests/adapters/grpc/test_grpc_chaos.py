"""Chaos policies in the gRPC interceptors' pipelines, against real servers: an injected status
(with pushback trailers) reaches the caller without calling the server; server-side faults,
latency and canned responses."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

import resilience as rs
from interceptors.grpc import StatusError, grpc_retry
from resilience.testing import FakeClock, RecordingListener

from ...grpc_fixtures import Script
from .grpc_support import Client, Served, status_of, trailer

Code = grpc.StatusCode


class Draws:
    def __init__(self, *draws: float) -> None:
        self._draws = list(draws)

    def random(self) -> float:
        return self._draws.pop(0)


class InjectedStatus(grpc.RpcError):
    """What a chaos Fault raises on the client: a ``grpc.RpcError`` with a status and trailers,
    like the one a failed call raises."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: Any = ()) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code, self._details, self._trailing = code, details, tuple(trailing)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailing


def unavailable(pushback_ms: str | None = None) -> InjectedStatus:
    trailing = () if pushback_ms is None else (("grpc-retry-pushback-ms", pushback_ms),)
    return InjectedStatus(Code.UNAVAILABLE, "chaos: unavailable", trailing)


# -- client interceptors -------------------------------------------------------------------------
def test_client_fault_fails_the_call_without_reaching_the_server(
    client: Client, script: Script, port: int
) -> None:
    fault = rs.chaos.Fault(rate=1, error=lambda: unavailable("250"))
    error = status_of(lambda: client.run(port, fault, "unary_unary"))
    assert error.code() == Code.UNAVAILABLE
    assert trailer(error) == {"grpc-retry-pushback-ms": "250"}
    assert script.calls == 0


def test_client_retry_honours_the_injected_pushback(
    client: Client, script: Script, port: int
) -> None:
    clock = FakeClock()
    seen = RecordingListener()
    pipeline = rs.Pipeline(
        grpc_retry(attempts=3, backoff=rs.backoff.constant(5), clock=clock),
        rs.chaos.Fault(rate=0.5, error=lambda: unavailable("250"), random=Draws(0.2, 0.8)),
        listeners=[seen],
    )
    assert client.run(port, pipeline, "unary_unary") == b"re:a"
    assert script.calls == 1
    [scheduled] = seen.of(rs.events.RetryScheduled)
    assert (scheduled.delay, scheduled.server_directed) == (0.25, True)
    assert clock.monotonic() == 0.25


@pytest.mark.parametrize("shape", ["unary_unary", "unary_stream", "stream_unary", "stream_stream"])
def test_client_fault_on_every_call_shape(
    client: Client, script: Script, port: int, shape: str
) -> None:
    fault = rs.chaos.Fault(rate=1, error=lambda: unavailable())
    error = status_of(lambda: client.run(port, fault, shape))
    assert error.code() == Code.UNAVAILABLE
    assert script.calls == 0


# -- server interceptors -------------------------------------------------------------------------
def test_server_fault_aborts_with_the_injected_status(served: Served, script: Script) -> None:
    seen = RecordingListener()
    fault = rs.chaos.Fault(
        rate=1, error=lambda: StatusError(Code.UNAVAILABLE, "chaos: down"), listeners=[seen]
    )
    error = status_of(lambda: served.run(script, {"pipeline": fault}, "unary_unary"))
    assert (error.code(), error.details()) == (Code.UNAVAILABLE, "chaos: down")
    assert script.calls == 0
    [event] = seen.of(rs.events.ChaosInjected)
    assert event.operation == "/test.Svc/Unary"


def test_server_fault_with_a_mapped_refusal_sends_pushback(served: Served, script: Script) -> None:
    shed = rs.chaos.Fault(rate=1, error=lambda: rs.RateLimitedError(retry_after=0.3))
    error = status_of(lambda: served.run(script, {"pipeline": shed}, "unary_unary"))
    assert error.code() == Code.RESOURCE_EXHAUSTED
    assert trailer(error)["grpc-retry-pushback-ms"] == "300"
    assert script.calls == 0


def test_server_outcome_answers_for_the_handler(served: Served, script: Script) -> None:
    canned = rs.chaos.Outcome(rate=1, value=b"canned")
    assert served.run(script, {"pipeline": canned}, "unary_unary") == b"canned"
    assert script.calls == 0


def test_server_latency_ends_at_the_inbound_deadline(served: Served, script: Script) -> None:
    clock = FakeClock()
    seen = RecordingListener()
    slow = rs.chaos.Latency(rate=1, seconds=60, clock=clock, listeners=[seen])
    kw = {"pipeline": slow, "clock": clock}
    error = status_of(lambda: served.run(script, kw, "unary_unary", timeout=8))
    assert error.code() == Code.DEADLINE_EXCEEDED
    [event] = seen.of(rs.events.ChaosInjected)
    assert event.delay is not None
    # capped to the caller's deadline (as the server sees it: grpc-core rounds the grpc-timeout
    # it sends up, so up to a unit more than the client's 8 s)
    assert 7 < event.delay <= 9
    assert script.calls == 0  # no time was left for the handler


def test_aio_client_outcome_answers_for_the_server(script: Script, port: int) -> None:
    """On an aio channel the attempt's result is the response message, so an Outcome's value is
    what the caller gets (a sync channel's is wrapped into a finished call: see
    test_grpc_chaos_calls)."""
    canned = rs.chaos.Outcome(rate=1, value=b"canned")
    assert Client("aio").run(port, canned, "unary_unary") == b"canned"
    assert script.calls == 0
