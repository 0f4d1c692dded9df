"""Chaos policies in the httpx transports' pipelines, against a real uvicorn server: an injected
response or transport error reaches the caller and the server is not called."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

import resilience as rs
from interceptors.httpx import http_breaker, http_retry
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


def test_http_retry_retries_an_injected_transport_error(
    mode: str, script: Callable[..., Script]
) -> None:
    """An injected httpx error carries the request being sent, like a real one: http_retry()
    checks the method may be re-sent and retries it."""
    s = script(Reply(200, body=b"real"))
    clock = FakeClock()
    errors: list[httpx.ConnectError] = []

    def refused() -> httpx.ConnectError:
        errors.append(httpx.ConnectError("chaos: refused"))
        return errors[-1]

    pipeline = rs.Pipeline(
        http_retry(attempts=3, backoff=rs.backoff.constant(0.5), clock=clock),
        rs.chaos.Fault(rate=0.5, error=refused, random=Draws(0.1, 0.9)),
    )
    response = fetch(mode, pipeline, "GET", s.url)
    assert (response.status_code, response.text) == (200, "real")
    assert len(s.seen) == 1
    assert clock.monotonic() == 0.5
    assert errors[0].request.url == s.url  # tied to the request being sent


def test_http_retry_does_not_resend_a_post_after_an_injected_read_error(
    mode: str, script: Callable[..., Script]
) -> None:
    """Like a real one: a POST may have reached the server before a read error."""
    s = script(Reply(200))
    pipeline = rs.Pipeline(
        http_retry(attempts=3, clock=FakeClock()),
        rs.chaos.Fault(rate=1, error=lambda: httpx.ReadError("chaos: reset")),
    )
    with pytest.raises(httpx.ReadError) as info:
        fetch(mode, pipeline, "POST", s.url, content=b"{}")
    assert info.value.request.method == "POST"
    assert s.seen == []


def test_a_plain_retry_stops_at_the_resend_check_after_an_injected_error(
    mode: str, script: Callable[..., Script]
) -> None:
    """The injected attempt counts as an attempt: the transport's re-send check refuses to send
    a POST again after a read error, whoever retries it."""
    s = script(Reply(200))
    pipeline = rs.Pipeline(
        rs.Retry(on=httpx.TransportError, attempts=3, backoff=rs.backoff.constant(0)),
        rs.chaos.Fault(rate=0.5, error=httpx.ReadError, random=Draws(0.1, 0.9)),
    )
    with pytest.raises(httpx.ReadError):
        fetch(mode, pipeline, "POST", s.url, content=b"{}")
    assert s.seen == []


def test_http_retry_retries_an_injected_503_and_honours_its_retry_after(
    mode: str, script: Callable[..., Script]
) -> None:
    s = script(Reply(200, body=b"real"))
    clock = FakeClock()
    pipeline = rs.Pipeline(
        http_retry(attempts=3, backoff=rs.backoff.constant(5), clock=clock),
        rs.chaos.Outcome(
            rate=0.5,
            factory=lambda: httpx.Response(503, headers={"Retry-After": "2"}),
            random=Draws(0.1, 0.9),
        ),
    )
    response = fetch(mode, pipeline, "GET", s.url)
    assert (response.status_code, response.text) == (200, "real")
    assert len(s.seen) == 1
    assert clock.monotonic() == 2.0  # the injected response's Retry-After, not the backoff


def test_a_plain_retry_honours_an_injected_retry_after(
    mode: str, script: Callable[..., Script]
) -> None:
    """The transport attaches an injected response's delay hint as it does a real one's."""
    s = script(Reply(200, body=b"real"))
    clock = FakeClock()
    pipeline = rs.Pipeline(
        rs.Retry(
            on=httpx.TransportError,
            on_result=lambda r: r.status_code == 429,
            attempts=2,
            backoff=rs.backoff.constant(5),
            clock=clock,
        ),
        rs.chaos.Outcome(
            rate=0.5,
            factory=lambda: httpx.Response(429, headers={"Retry-After": "1"}),
            random=Draws(0.1, 0.9),
        ),
    )
    assert fetch(mode, pipeline, "GET", s.url).text == "real"
    assert clock.monotonic() == 1.0


def test_a_breaker_counts_injected_failures_like_real_ones(
    mode: str, script: Callable[..., Script]
) -> None:
    s = script(Reply(200, body=b"real"))
    breaker = http_breaker("inventory", failure_count=2, clock=FakeClock())
    pipeline = rs.Pipeline(
        breaker,
        rs.chaos.Outcome(rate=0.5, factory=lambda: httpx.Response(503), random=Draws(0.1, 0.1)),
    )
    for _ in range(2):
        response = fetch(mode, pipeline, "GET", s.url)
        assert (response.status_code, str(response.request.url)) == (503, s.url)
    assert breaker.state.value == "open"
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
