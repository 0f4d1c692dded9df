"""``listeners=`` on the ASGI middlewares, behind a real uvicorn: the events of the policies a
middleware runs, and its own (a 429, an idempotent replay, a conflict), reach its listeners.
"""

from __future__ import annotations

import httpx
import pytest

import resilience as rs
from interceptors.asgi import IdempotencyMiddleware, RateLimitMiddleware, ResilienceMiddleware
from resilience.events import CallRejected, CircuitStateChanged, IdempotentReplay
from resilience.testing import FakeClock, RecordingListener

from ..._asgi_apps import TestApp
from ..._server import serve


def test_resilience_middleware_hands_its_pipelines_events_to_its_listeners(
    clock: FakeClock,
) -> None:
    mine = RecordingListener()
    breaker = rs.CircuitBreaker("backend", failure_count=2, open_for=30, clock=clock)
    app = ResilienceMiddleware(TestApp(), pipeline=rs.Pipeline(breaker), listeners=[mine])
    with serve(app) as url, httpx.Client(base_url=url) as http:
        assert [http.get("/status/500").status_code for _ in range(2)] == [500, 500]
        refused = http.get("/hello")
    assert refused.status_code == 503
    opened = mine.last(CircuitStateChanged)
    assert (opened.policy, opened.to_state, opened.operation) == ("backend", "open", "GET")
    rejected = mine.last(CallRejected)
    assert (rejected.reason, rejected.retry_after) == ("circuit_open", 30.0)
    assert breaker.listeners == ()  # the breaker itself has none: they came through the adapter


def test_rate_limit_middleware_reports_each_429(clock: FakeClock) -> None:
    mine, the_limiters = RecordingListener(), RecordingListener()
    limiter = rs.RateLimiter("per-ip", rate=2, per=60, clock=clock, listeners=[the_limiters])
    app = RateLimitMiddleware(TestApp(), limiter=limiter, listeners=[mine])
    with serve(app) as url, httpx.Client(base_url=url) as http:
        statuses = [http.post("/hello").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    (event,) = mine.events
    assert isinstance(event, CallRejected)
    assert (event.policy, event.operation, event.reason) == ("per-ip", "POST", "rate_limited")
    assert event.retry_after == pytest.approx(30.0)
    assert the_limiters.kinds() == ["rejected"]  # the limiter's own listeners: its own event


def test_idempotency_middleware_reports_replays_and_conflicts() -> None:
    mine = RecordingListener()

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"created"})

    with (
        serve(IdempotencyMiddleware(app, name="orders", listeners=[mine])) as url,
        httpx.Client(base_url=url) as http,
    ):
        key = {"Idempotency-Key": '"order-1"'}
        first = http.post("/orders", content=b"pear", headers=key)
        again = http.post("/orders", content=b"pear", headers=key)
        reused = http.post("/orders", content=b"plum", headers=key)
    assert (first.status_code, again.status_code, reused.status_code) == (201, 201, 422)
    assert again.headers["idempotent-replayed"] == "true"
    assert [type(e) for e in mine.events] == [IdempotentReplay, CallRejected]
    assert all((e.policy, e.operation) == ("orders", "POST") for e in mine.events)
    assert mine.last(CallRejected).reason == "idempotency_conflict"


def test_listeners_must_be_callables() -> None:
    with pytest.raises(rs.ConfigurationError, match="listeners"):
        ResilienceMiddleware(TestApp(), pipeline=rs.Timeout(1), listeners=[42])  # type: ignore[list-item]
    with pytest.raises(rs.ConfigurationError, match="listeners"):
        RateLimitMiddleware(TestApp(), limiter=rs.RateLimiter("x", rate=1), listeners="print")  # type: ignore[arg-type]
