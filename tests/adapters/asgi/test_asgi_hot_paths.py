"""The middlewares' hot paths give what their general paths give: the cached ``RateLimit``
fields of an ``rs.RateLimiter`` decision, the in-memory limiter called without a coroutine,
the per-request ``send`` wrapper, route selection and inbound deadlines read in one pass."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

import resilience as rs
from interceptors.asgi import RateLimitMiddleware, ResilienceMiddleware
from resilience.ratelimit import Decision


async def _noop_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


def _scope(path: str = "/", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": headers or [],
        "client": ("127.0.0.1", 5000),
    }


def _run(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(app(scope, _receive, send))
    return sent


@pytest.mark.parametrize("rate_per", [(10, 1.0), (7, 60.0), (1_000_000, 1.0), (3, 0.5)])
@pytest.mark.parametrize(
    ("limit", "remaining", "reset"),
    [
        (10, 9, 0.1),
        (10, 0, 1.0),
        (1, -3, 0.0),
        (5, 10**16, 2.5),
        (10**17, 10**17, 1e14),
        (3, 2, 999_999_999_999_998.0),
        (2, 1, -0.0),
        (10, 5, -1.0),  # the general path's cases: negative, not finite, huge
        (10, 5, math.inf),
        (10, 5, math.nan),
        (10, 5, 1e15),
    ],
)
def test_cached_fields_of_a_ratelimiter_decision_equal_the_general_ones(
    rate_per: tuple[float, float], limit: int, remaining: int, reset: float
) -> None:
    limiter = rs.RateLimiter("api", rate=rate_per[0], per=rate_per[1])
    mw = RateLimitMiddleware(_noop_app, limiter=limiter)
    decision = Decision(True, 0.0, remaining, limit, reset)
    expected = mw._format._any_fields(decision, None)
    assert mw._fields(decision, None) == expected
    assert mw._fields(decision, None) == expected  # from the cache this time


def test_the_policy_cache_stays_bounded_and_right() -> None:
    mw = RateLimitMiddleware(_noop_app, limiter=rs.RateLimiter("api", rate=10))
    for limit in range(1, 1000):
        decision = Decision(True, 0.0, 1, limit, 0.5)
        assert mw._fields(decision, None) == mw._format._any_fields(decision, None)
    assert len(mw._format._policies) <= 256


def test_in_memory_ratelimiter_is_called_without_a_coroutine_and_refunds() -> None:
    limiter = rs.RateLimiter("api", rate=1, per=60)
    mw = RateLimitMiddleware(_noop_app, limiter=limiter)
    assert mw._acquire == limiter.try_acquire
    assert not mw._async
    assert mw._refund == limiter.refund
    assert not mw._refund_async
    sent = _run(mw, _scope())
    assert sent[0]["status"] == 200
    assert (b"ratelimit", b'"api";r=0;t=60') in sent[0]["headers"]
    assert _run(mw, _scope())[0]["status"] == 429

    # an inner refusal gives the permit back through the sync refund
    limiter2 = rs.RateLimiter("api", rate=1, per=60)
    inner = ResilienceMiddleware(_noop_app, pipeline=rs.Bulkhead("b", max_concurrent=1))
    outer = RateLimitMiddleware(inner, limiter=limiter2)
    bulkhead: Any = inner.pipeline
    bulkhead._in_use = 1  # the only slot is taken: the next request is refused with 503
    assert _run(outer, _scope())[0]["status"] == 503
    bulkhead._in_use = 0
    assert _run(outer, _scope())[0]["status"] == 200  # the refused request spent nothing


def test_a_ratelimiter_subclass_keeps_its_awaited_variant() -> None:
    calls: list[str] = []

    class Audited(rs.RateLimiter):
        async def atry_acquire(self, key: str | None = None, cost: float = 1) -> Any:
            calls.append("async")
            return await super().atry_acquire(key=key, cost=cost)

    mw = RateLimitMiddleware(_noop_app, limiter=Audited("api", rate=5))
    assert _run(mw, _scope())[0]["status"] == 200
    assert calls == ["async"]


def test_send_wrapper_still_rejects_a_second_start_and_counts_5xx() -> None:
    async def twice(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.start", "status": 200, "headers": []})

    mw = ResilienceMiddleware(twice, pipeline=rs.Timeout(5))
    with pytest.raises(RuntimeError, match="twice"):
        _run(mw, _scope())

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 502, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    breaker = rs.CircuitBreaker("b", consecutive_failures=1, open_for=60)
    mw = ResilienceMiddleware(failing, pipeline=breaker)
    assert _run(mw, _scope())[0]["status"] == 502
    assert _run(mw, _scope())[0]["status"] == 503  # the 502 opened the breaker

    seen: list[int] = []

    def never(status: int) -> bool:
        seen.append(status)
        return False

    mw = ResilienceMiddleware(failing, pipeline=rs.Timeout(5), failure_status=never)
    assert _run(mw, _scope())[0]["status"] == 502
    assert seen == [502]


def test_route_selection_and_deadline_headers_in_one_pass() -> None:
    seen: list[float | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(rs.remaining())
        await _noop_app(scope, receive, send)

    clock = rs.testing.FakeClock()
    mw = ResilienceMiddleware(
        app,
        pipeline=rs.Bulkhead("b", max_concurrent=5),
        include=["/api"],
        exclude=["/api/health"],
        when=lambda scope: scope["method"] == "GET",
        clock=clock,
    )
    # excluded: no pipeline, so no deadline even with the header
    _run(mw, _scope("/api/health", [(b"request-timeout", b"0")]))
    # malformed first header, well-formed second: the second one is the deadline
    _run(mw, _scope("/api/x", [(b"request-timeout", b"soon"), (b"x-request-timeout", b"2")]))
    # an unrelated header only: no deadline
    _run(mw, _scope("/api/x", [(b"accept", b"*/*")]))
    assert seen == [None, 2.0, None]
    assert rs.remaining() is None  # withdrawn after the request
    expired = _run(mw, _scope("/api/x", [(b"request-timeout", b"0")]))
    assert expired[0]["status"] == 504
    assert len(seen) == 3


def test_timeout_still_cancels_the_app_under_the_middlewares() -> None:
    started = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        started.set()
        await asyncio.sleep(60)

    mw = RateLimitMiddleware(
        ResilienceMiddleware(
            slow, pipeline=rs.Pipeline(rs.Timeout(0.05), rs.Bulkhead("b", max_concurrent=2))
        ),
        limiter=rs.RateLimiter("api", rate=100),
    )
    sent = _run(mw, _scope())
    assert started.is_set()
    assert sent[0]["status"] == 504
