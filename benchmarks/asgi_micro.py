"""Per-request cost of the ASGI middlewares alone (no server): ``python -m benchmarks.asgi_micro``.

Calls each stack 20,000 times on one event loop with a trivial app and no-op receive/send and
prints the best of 5 (µs per request). The difference to ``bare`` is the middleware's own cost.
It leaves out what only a server pays: an HTTP/1.1 server validates and serializes every
response header, so the two ``RateLimit`` fields cost about as much again under uvicorn + h11
(``benchmarks.http_load``), and the code runs there with colder caches than in this loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import resilience as rs
from interceptors.asgi import RateLimitMiddleware, ResilienceMiddleware

from .http_load import _Allow


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def send(message: Any) -> None:
    return None


SCOPE = {
    "type": "http",
    "method": "GET",
    "path": "/",
    "headers": [(b"host", b"x"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 5555),
}


async def main() -> None:
    variants: dict[str, Any] = {
        "bare": app,
        "ResilienceMiddleware(Pipeline())": ResilienceMiddleware(app, pipeline=rs.Pipeline()),
        "ResilienceMiddleware(Timeout)": ResilienceMiddleware(app, pipeline=rs.Timeout(10)),
        "RateLimitMiddleware(always-allow)": RateLimitMiddleware(app, limiter=_Allow()),
    }
    limiter_cls = getattr(rs, "RateLimiter", None)
    if limiter_cls is not None:
        variants["RateLimitMiddleware(RateLimiter)"] = RateLimitMiddleware(
            app, limiter=limiter_cls("bench", rate=1_000_000)
        )
        # what benchmarks.http_load's "ours" runs
        pipeline = rs.Pipeline(rs.Timeout(10), rs.Bulkhead("bench", max_concurrent=1000))
        variants["both (Timeout+Bulkhead, RateLimiter)"] = RateLimitMiddleware(
            ResilienceMiddleware(app, pipeline=pipeline),
            limiter=limiter_cls("bench", rate=1_000_000),
        )
    for name, stack in variants.items():
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(20_000):
                await stack(SCOPE, receive, send)
            best = min(best, (time.perf_counter() - t) / 20_000 * 1e6)
        print(f"{name:<36} {best:7.2f} µs/request")


if __name__ == "__main__":
    asyncio.run(main())
