"""IdempotencyMiddleware takes include / exclude / when like every middleware (real uvicorn)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import resilience as rs
from interceptors.asgi import IdempotencyMiddleware

from ..._server import serve


def _app(runs: list[str], **options: Any) -> Starlette:
    async def create(request: Request) -> Response:
        runs.append(request.url.path)
        return JSONResponse({"run": len(runs)}, status_code=201)

    routes = [Route(p, create, methods=["POST"]) for p in ("/api/orders", "/api/health", "/other")]
    return Starlette(routes=routes, middleware=[Middleware(IdempotencyMiddleware, **options)])


def test_include_exclude_when_select_the_deduplicated_requests() -> None:
    runs: list[str] = []
    app = _app(
        runs,
        include=["/api"],
        exclude=["/api/health"],
        when=lambda scope: not any(k == b"x-skip" for k, _ in scope["headers"]),
    )
    key = {"Idempotency-Key": "k-1"}
    with serve(app) as url, httpx.Client(base_url=url) as client:
        first = client.post("/api/orders", json={"a": 1}, headers=key)
        again = client.post("/api/orders", json={"a": 1}, headers=key)
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.headers.get("idempotent-replayed") == "true"  # selected: deduplicated
        for path in ("/api/health", "/other"):  # excluded / not included: runs every time
            for _ in range(2):
                reply = client.post(path, json={}, headers=key)
                assert reply.status_code == 201
                assert "idempotent-replayed" not in reply.headers
        skipped = client.post("/api/orders", json={"a": 1}, headers={**key, "X-Skip": "1"})
        assert skipped.status_code == 201
        assert "idempotent-replayed" not in skipped.headers
    assert runs == ["/api/orders"] + ["/api/health"] * 2 + ["/other"] * 2 + ["/api/orders"]


@pytest.mark.parametrize(
    "options",
    [
        {"include": "/api"},
        {"include": ["api"]},
        {"exclude": [3]},
        {"when": "yes"},
        {"listeners": [42]},
    ],
)
def test_bad_options_are_refused_at_construction(options: dict[str, Any]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never runs
        raise AssertionError

    with pytest.raises(rs.ConfigurationError):
        IdempotencyMiddleware(app, **options)
