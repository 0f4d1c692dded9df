"""Chaos policies in the httpx transports' pipelines, against a real uvicorn server: an injected
response or transport error reaches the caller and the server is not called."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

import resilience as rs
from interceptors.httpx import http_retry
from resilience.testing import FakeClock, RecordingListener

from .httpx_support import Reply, Script, fetch


class Draws:
    def __init__(self, *draws: float) -> None:
        self._draws = list(draws)

    def random(self) -> float:
        return self._draws.pop(0)


def test_outcome_answers_instead_of_the_server(mode: str, script: Callable[..., Script]) -> None:
    s = script(Reply(200, body=b"real"))
    seen = RecordingListener()
    canned = rs.chaos.Outcome(
        rate=1,
        factory=lambda: httpx.Response(503, headers={"Retry-After": "7"}, content=b"chaos"),
        listeners=[seen],
    )
    response = fetch(mode, canned, "GET", s.url)
    assert (response.status_code, response.text) == (503, "chaos")
    assert response.headers["retry-after"] == "7"
    assert response.request.url == s.url  # httpx ties the injected response to its request
    assert s.seen == []  # the real server never saw the request
    [event] = seen.of(rs.events.ChaosInjected)
    assert (event.injection, event.operation) == ("outcome", f"GET {s.url.split('/')[2]}")


def test_fault_raises_a_transport_error(mode: str, script: Callable[..., Script]) -> None:
    s = script(Reply(200))
    fault = rs.chaos.Fault(rate=1, error=lambda: httpx.ConnectError("chaos: refused"))
    with pytest.raises(httpx.ConnectError, match="chaos: refused"):
        fetch(mode, fault, "GET", s.url)
    assert s.seen == []


def test_a_retry_recovers_from_an_injected_fault(mode: str, script: Callable[..., Script]) -> None:
    s = script(Reply(200, body=b"real"))
    clock = FakeClock()
    seen = RecordingListener()
    pipeline = rs.Pipeline(
        rs.Retry(
            on=httpx.TransportError, attempts=3, backoff=rs.backoff.constant(0.5), clock=clock
        ),
        rs.chaos.Fault(rate=0.5, error=httpx.ConnectError, random=Draws(0.1, 0.9)),
        listeners=[seen],
    )
    response = fetch(mode, pipeline, "GET", s.url)
    assert (response.status_code, response.text) == (200, "real")
    assert len(s.seen) == 1  # the faulted attempt never left the client
    assert seen.kinds() == ["chaos", "retry"]
    assert clock.monotonic() == 0.5


def test_http_retry_needs_the_request_on_an_injected_transport_error(
    mode: str, script: Callable[..., Script]
) -> None:
    """http_retry() re-sends only a TransportError that names its request (it checks the method
    may be re-sent): an injected error without one is not retried."""
    s = script(Reply(200, body=b"real"))
    clock = FakeClock()
    pipeline = rs.Pipeline(
        http_retry(attempts=3, backoff=rs.backoff.constant(0.5), clock=clock),
        rs.chaos.Fault(rate=0.5, error=httpx.ConnectError, random=Draws(0.1, 0.9)),
    )
    with pytest.raises(httpx.ConnectError):
        fetch(mode, pipeline, "GET", s.url)
    assert s.seen == []


def test_injected_503_is_retried_like_a_real_one(mode: str, script: Callable[..., Script]) -> None:
    s = script(Reply(200, body=b"real"))
    clock = FakeClock()
    pipeline = rs.Pipeline(
        rs.Retry(
            on=httpx.TransportError,
            on_result=lambda r: r.status_code == 503,
            attempts=2,
            backoff=rs.backoff.constant(0.25),
            clock=clock,
        ),
        rs.chaos.Outcome(rate=0.5, factory=lambda: httpx.Response(503), random=Draws(0.0, 0.7)),
    )
    response = fetch(mode, pipeline, "GET", s.url)
    assert response.status_code == 200
    assert len(s.seen) == 1
    assert clock.monotonic() == 0.25


def test_disabled_chaos_passes_every_request(mode: str, script: Callable[..., Script]) -> None:
    s = script(Reply(200, body=b"real"))
    off = rs.chaos.Fault(rate=1, error=httpx.ConnectError, enabled=False)
    assert fetch(mode, rs.Pipeline(rs.Timeout(5), off), "GET", s.url).text == "real"
    assert len(s.seen) == 1
