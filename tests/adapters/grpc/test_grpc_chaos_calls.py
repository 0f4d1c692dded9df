"""What chaos injects into a client call is shaped like a real attempt's outcome, against real
servers: an Outcome value is the sync call's result in every call shape (a finished
``grpc.Call`` / ``grpc.Future`` for ``with_call`` and ``future``), an injected ``StatusError``
is a failed call with its trailing metadata, and an injected attempt counts as an attempt."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

import resilience as rs
from interceptors.grpc import ResilienceClientInterceptor, StatusError
from resilience.testing import FakeClock, RecordingListener

from ...grpc_fixtures import Script
from .grpc_support import PATH, Client, Served, status_of, trailer

Code = grpc.StatusCode


class Draws:
    def __init__(self, *draws: float) -> None:
        self._draws = list(draws)

    def random(self) -> float:
        return self._draws.pop(0)


def shed(pushback_ms: str = "250") -> StatusError:
    return StatusError(
        Code.UNAVAILABLE, "chaos: shed", trailing_metadata=[("grpc-retry-pushback-ms", pushback_ms)]
    )


class Attempts(grpc.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """An inner interceptor recording the metadata of each attempt sent."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, Any]] = []

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.metadata.append(dict(details.metadata or ()))
        return continuation(details, request)


def channel(port: int, pipeline: rs.Policy, *inner: Any) -> Any:
    raw = grpc.insecure_channel(f"127.0.0.1:{port}")
    return grpc.intercept_channel(raw, ResilienceClientInterceptor(pipeline=pipeline), *inner)


@pytest.mark.parametrize(
    ("shape", "value", "expected"),
    [
        ("unary_unary", b"canned", b"canned"),
        ("stream_unary", b"canned", b"canned"),
        ("unary_stream", [b"x", b"y"], [b"x", b"y"]),
        ("stream_stream", [b"x", b"y"], [b"x", b"y"]),
        ("unary_stream", b"one", [b"one"]),
        ("unary_stream", [], []),
    ],
)
def test_a_sync_outcome_is_the_calls_result(
    script: Script, port: int, shape: str, value: Any, expected: Any
) -> None:
    canned = rs.chaos.Outcome(rate=1, value=value)
    assert Client("sync").run(port, canned, shape) == expected
    assert script.calls == 0


def test_with_call_and_future_get_a_finished_call(script: Script, port: int) -> None:
    canned = rs.chaos.Outcome(rate=1, value=b"canned")
    with channel(port, canned) as ch:
        method = ch.unary_unary(PATH["unary_unary"])
        response, call = method.with_call(b"a")
        assert response == b"canned"
        assert (call.code(), call.details(), call.trailing_metadata()) == (Code.OK, "", ())
        assert call.initial_metadata() == ()
        future = method.future(b"a")
        assert (future.done(), future.result(), future.exception()) == (True, b"canned", None)
        seen: list[Any] = []
        future.add_done_callback(seen.append)
        assert seen == [future]
        stream = ch.unary_stream(PATH["unary_stream"])(b"a")
        assert stream.code() == Code.OK
        assert list(stream) == [b"canned"]
    assert script.calls == 0


def test_an_outcome_some_of_the_time_mixes_with_real_answers(script: Script, port: int) -> None:
    canned = rs.chaos.Outcome(rate=0.5, value=b"canned", random=Draws(0.1, 0.9))
    with channel(port, canned) as ch:
        method = ch.unary_unary(PATH["unary_unary"])
        assert [method(b"a"), method(b"a")] == [b"canned", b"re:a"]
    assert script.calls == 1


def test_an_injected_status_error_is_a_failed_call_with_its_trailers(
    script: Script, port: int
) -> None:
    fault = rs.chaos.Fault(rate=1, error=shed)
    error = status_of(lambda: Client("sync").run(port, fault, "unary_unary"))
    assert isinstance(error, StatusError)
    assert (error.code(), error.details()) == (Code.UNAVAILABLE, "chaos: shed")
    assert trailer(error) == {"grpc-retry-pushback-ms": "250"}
    with channel(port, fault) as ch:
        future = ch.unary_unary(PATH["unary_unary"]).future(b"a")  # returned, not raised
        assert future.done()
        assert future.code() == Code.UNAVAILABLE
        assert trailer(future.exception()) == {"grpc-retry-pushback-ms": "250"}
        with pytest.raises(StatusError):
            future.result()
        stream = ch.unary_stream(PATH["unary_stream"])(b"a")
        assert (stream.code(), trailer(stream)) == (
            Code.UNAVAILABLE,
            {"grpc-retry-pushback-ms": "250"},
        )
    assert script.calls == 0


@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_any_retry_honours_an_injected_pushback(script: Script, port: int, mode: str) -> None:
    """The pushback of an injected error becomes its delay hint, as a real error's does, for a
    plain Retry too (not only grpc_retry, which reads the trailer itself)."""
    clock = FakeClock()
    seen = RecordingListener()
    pipeline = rs.Pipeline(
        rs.Retry(on=grpc.RpcError, attempts=3, backoff=rs.backoff.constant(5), clock=clock),
        rs.chaos.Fault(rate=0.5, error=shed, random=Draws(0.1, 0.9)),
        listeners=[seen],
    )
    assert Client(mode).run(port, pipeline, "unary_unary") == b"re:a"
    [scheduled] = seen.of(rs.events.RetryScheduled)
    assert (scheduled.delay, scheduled.server_directed) == (0.25, True)
    assert script.calls == 1


def test_an_injected_attempt_counts_as_an_attempt(script: Script, port: int) -> None:
    pipeline = rs.Pipeline(
        rs.Retry(on=grpc.RpcError, attempts=3, backoff=rs.backoff.constant(0)),
        rs.chaos.Fault(rate=0.5, error=shed, random=Draws(0.1, 0.9)),
    )
    sent = Attempts()
    with channel(port, pipeline, sent) as ch:
        assert ch.unary_unary(PATH["unary_unary"])(b"a") == b"re:a"
    # the real attempt says one attempt came before it, as after a real failure
    assert [m.get("grpc-previous-rpc-attempts") for m in sent.metadata] == ["1"]


def test_a_server_status_error_sends_its_trailing_metadata(served: Served, script: Script) -> None:
    fault = rs.chaos.Fault(rate=1, error=lambda: shed("400"))
    error = status_of(lambda: served.run(script, {"pipeline": fault}, "unary_unary"))
    assert error.code() == Code.UNAVAILABLE
    assert trailer(error)["grpc-retry-pushback-ms"] == "400"
    assert script.calls == 0


def test_status_error_checks_its_trailing_metadata() -> None:
    with pytest.raises(rs.ConfigurationError, match="trailing_metadata must be"):
        StatusError(Code.UNAVAILABLE, trailing_metadata=[("k", 3)])  # type: ignore[list-item]
    with pytest.raises(rs.ConfigurationError, match="trailing_metadata must be"):
        StatusError(Code.UNAVAILABLE, trailing_metadata=["k"])  # type: ignore[list-item]
