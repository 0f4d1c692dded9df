"""Chaos policies in a ResilienceMiddleware pipeline, behind a real uvicorn server: server-side
faults and latency, switched at run time; the app is not called when a fault is injected."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import resilience as rs
from interceptors.asgi import ResilienceMiddleware
from interceptors.asgi._common import Receive, Scope, Send
from resilience.testing import FakeClock, RecordingListener

from ..._asgi_apps import TestApp
from ..._server import serve


class Counted:
    """The test app, counting the requests that reached it."""

    def __init__(self) -> None:
        self.app = TestApp()
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


@pytest.fixture
def counted() -> Counted:
    return Counted()


def client_for(app: Any, pipeline: rs.Policy, **kw: Any) -> Iterator[httpx.Client]:
    with (
        serve(ResilienceMiddleware(app, pipeline=pipeline, **kw)) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        yield client


def test_fault_switched_at_run_time(counted: Counted) -> None:
    flag = {"on": False}
    seen = RecordingListener()
    fault = rs.chaos.Fault(
        rate=1, error=RuntimeError, enabled=lambda: flag["on"], listeners=[seen], name="srv"
    )
    for client in client_for(counted, fault):
        assert client.get("/hello").text == "hello"
        flag["on"] = True
        assert client.get("/hello").status_code == 500  # an unmapped error: the server's 500
        flag["on"] = False
        assert client.get("/hello").status_code == 200
    assert counted.calls == 2
    [event] = seen.of(rs.events.ChaosInjected)
    assert (event.policy, event.injection, event.operation) == ("srv", "fault", "GET")


def test_fault_with_a_mapped_error_answers_with_its_status(counted: Counted) -> None:
    shed = rs.chaos.Fault(rate=1, error=lambda: rs.RateLimitedError(retry_after=2.0))
    for client in client_for(counted, shed):
        response = client.get("/hello")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert counted.calls == 0


def test_latency_ends_at_the_inbound_deadline(counted: Counted) -> None:
    clock = FakeClock()
    seen = RecordingListener()
    slow = rs.chaos.Latency(rate=1, seconds=3, clock=clock, listeners=[seen])
    for client in client_for(counted, slow, clock=clock):
        bounded = client.get("/deadline", headers={"Request-Timeout": "1.5"})
        unbounded = client.get("/deadline")
    assert bounded.status_code == 504  # the deadline ran out during the latency: app not run
    assert json.loads(unbounded.text) is None
    assert [e.delay for e in seen.of(rs.events.ChaosInjected)] == [1.5, 3.0]
    assert clock.monotonic() == 4.5
    assert counted.calls == 1


def test_a_timeout_in_the_pipeline_answers_504_for_injected_latency(counted: Counted) -> None:
    clock = FakeClock()
    pipeline = rs.Pipeline(
        rs.Timeout(1, clock=clock), rs.chaos.Latency(rate=1, seconds=5, clock=clock)
    )
    for client in client_for(counted, pipeline):
        response = client.get("/hello")
    assert response.status_code == 504
    assert counted.calls == 0
