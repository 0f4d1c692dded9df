"""Pure ASGI middlewares: server-side pipelines, per-client rate limits, idempotency keys; and
the live dashboard of the policies (:class:`Dashboard`).

Example:
    >>> import resilience as rs
    >>> from interceptors.asgi import ResilienceMiddleware
    >>> async def app(scope, receive, send): ...
    >>> app = ResilienceMiddleware(app, pipeline=rs.Pipeline(rs.Timeout(30)))
"""

from __future__ import annotations

from ._common import RouteFilter, TrustedProxies, mark_refused, parse_timeout
from ._dashboard import Dashboard, SnapshotSource
from ._handlers import HANDLED_ERRORS, install_exception_handlers, resilience_exception_handler
from ._idempotency import IdempotencyMiddleware
from ._ratelimit import RateLimitMiddleware
from ._resilience import ResilienceMiddleware, ServerErrorResponse

__all__ = [
    "HANDLED_ERRORS",
    "Dashboard",
    "IdempotencyMiddleware",
    "RateLimitMiddleware",
    "ResilienceMiddleware",
    "RouteFilter",
    "ServerErrorResponse",
    "SnapshotSource",
    "TrustedProxies",
    "install_exception_handlers",
    "mark_refused",
    "parse_timeout",
    "resilience_exception_handler",
]
