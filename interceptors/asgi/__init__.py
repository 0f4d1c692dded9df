"""Pure ASGI middlewares: server-side pipelines, per-client rate limits, idempotency keys.

Example:
    >>> import resilience as rs
    >>> from interceptors.asgi import ResilienceMiddleware
    >>> async def app(scope, receive, send): ...
    >>> app = ResilienceMiddleware(app, pipeline=rs.Pipeline(rs.Timeout(30)))
"""

from __future__ import annotations

from typing import Any

from ._common import RouteFilter, TrustedProxies, parse_timeout
from ._ratelimit import RateLimitMiddleware
from ._resilience import ResilienceMiddleware, ServerErrorResponse

__all__ = [
    "IdempotencyMiddleware",
    "RateLimitMiddleware",
    "ResilienceMiddleware",
    "RouteFilter",
    "ServerErrorResponse",
    "TrustedProxies",
    "parse_timeout",
]


def __getattr__(name: str) -> Any:
    # IdempotencyMiddleware lives in ._idempotency (written on the idempotency branch); it is
    # imported lazily until both branches are merged, then this becomes a plain import.
    if name == "IdempotencyMiddleware":
        from importlib import import_module

        return import_module(f"{__name__}._idempotency").IdempotencyMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
