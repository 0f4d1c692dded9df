"""ResilienceMiddleware: policy errors as problem+json responses (status, Retry-After, detail),
real timeouts as 504.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

import resilience as rs
from interceptors.asgi import (
    ResilienceMiddleware,
)

from ..._asgi_apps import Permits, Reject, TestApp
from ..._server import serve
from ...helpers import wait_until

# -- policy errors → HTTP --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "retry_after", "slug"),
    [
        (rs.RateLimitedError("slow down", retry_after=2.2), 429, "3", "rate-limited"),
        (rs.CircuitOpenError("open", retry_after=10), 503, "10", "circuit-open"),
        (rs.BulkheadFullError("full"), 503, None, "bulkhead-full"),
        (rs.TimeoutExceededError("late", timeout=1), 504, None, "timeout"),
    ],
)
def test_policy_errors_map_to_problem_json(
    app: TestApp, error: Exception, status: int, retry_after: str | None, slug: str
) -> None:
    mw = ResilienceMiddleware(app, pipeline=rs.Pipeline(Permits(), Reject(error)))
    with serve(mw) as url:
        response = httpx.get(url + "/hello")
    assert response.status_code == status
    assert response.headers.get("retry-after") == retry_after
    assert response.headers["content-type"] == "application/problem+json"
    doc = response.json()
    assert doc["status"] == status
    assert doc["type"] == "urn:resilience:problem:" + slug
    assert doc["detail"] == str(error)


def test_forced_open_breaker_says_so_in_the_problem_detail(app: TestApp) -> None:
    breaker = rs.CircuitBreaker("upstream", failure_count=1)
    breaker.open()
    mw = ResilienceMiddleware(app, pipeline=rs.Pipeline(breaker))
    with serve(mw) as url:
        response = httpx.get(url + "/hello")
    assert response.status_code == 503
    assert "retry-after" not in response.headers  # no timer: no promise of a time
    doc = response.json()
    assert doc["type"] == "urn:resilience:problem:circuit-open"
    assert "forced open" in doc["detail"]


def test_real_timeout_gives_504_and_cancels_the_app(app: TestApp) -> None:
    permits = Permits()
    mw = ResilienceMiddleware(app, pipeline=rs.Pipeline(permits, rs.Timeout(0.2)))
    with serve(mw) as url:
        response = httpx.get(url + "/slow", timeout=10)
    assert response.status_code == 504
    assert response.json()["title"] == "Gateway Timeout"
    assert wait_until(lambda: permits.outcomes == ["TimeoutExceededError"])


def test_unrelated_exceptions_are_not_mapped() -> None:
    mw = ResilienceMiddleware(TestApp(), pipeline=Reject(KeyError("x")))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        raise AssertionError("nothing must be sent")

    with pytest.raises(KeyError):
        asyncio.run(mw({"type": "http", "path": "/", "headers": []}, receive, send))


def test_server_pipeline_with_retry_is_rejected() -> None:
    with pytest.raises(rs.ConfigurationError, match="Retry"):
        ResilienceMiddleware(TestApp(), pipeline=rs.Pipeline(rs.Timeout(1), rs.Retry(on=OSError)))
    with pytest.raises(rs.ConfigurationError, match="pipeline"):
        ResilienceMiddleware(TestApp(), pipeline="nope")  # type: ignore[arg-type]


def test_problem_body_is_valid_json(guarded: httpx.Client) -> None:
    response = guarded.get("/hello", headers={"X-Request-Timeout": "0"})
    assert json.loads(response.content)["status"] == 504
    assert int(response.headers["content-length"]) == len(response.content)
