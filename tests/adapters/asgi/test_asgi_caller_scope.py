"""An rs.Idempotent inside the middleware pipeline is scoped by caller (and by the scope hook)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import resilience as rs
from interceptors.asgi import (
    ResilienceMiddleware,
)
from interceptors.asgi._common import header
from resilience.testing import FakeClock

from ..._server import serve


# -- an rs.Idempotent in the pipeline is scoped by caller --------------------------------------
class Orders:
    """An app creating orders; it calls its own idempotent ``ship`` (one record for everyone)."""

    def __init__(self, clock: FakeClock) -> None:
        self.runs = 0
        self.shipped: list[str] = []
        self.ship = rs.Idempotent(key=lambda order: order, clock=clock)(self.shipped.append)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.runs += 1
        self.ship("order-1")
        body = b"order #%d" % self.runs
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": body})


def _by_key(clock: FakeClock) -> rs.Idempotent:
    def key(scope: Any, receive: Any, send: Any) -> str | None:
        raw = header(scope, b"idempotency-key")
        return None if raw is None else raw.decode()

    return rs.Idempotent(key=key, fingerprint=None, clock=clock)


def test_idempotent_in_the_pipeline_is_scoped_by_caller(clock: FakeClock) -> None:
    orders = Orders(clock)
    mw = ResilienceMiddleware(orders, pipeline=rs.Pipeline(rs.Timeout(10), _by_key(clock)))

    def post(client: httpx.Client, who: str) -> httpx.Response:
        headers = {"Idempotency-Key": "k", "Authorization": f"Bearer {who}"}
        return client.post("/orders", headers=headers)

    with serve(mw) as url, httpx.Client(base_url=url, timeout=10) as client:
        first = post(client, "alice")
        assert (first.status_code, first.content) == (201, b"order #1")
        # the same key from another caller is its own record: bob's request runs
        second = post(client, "bob")
        assert (second.status_code, second.content) == (201, b"order #2")
        # alice's duplicate does not run; the policy kept no response to replay: a 409 says so
        dup = post(client, "alice")
        assert (dup.status_code, dup.headers["idempotent-replayed"]) == (409, "true")
        assert dup.json()["type"] == "urn:resilience:problem:idempotency#response-not-retained"
    assert orders.runs == 2
    assert orders.shipped == ["order-1"]  # the app's own records are not scoped by caller


def test_idempotent_in_the_pipeline_scope_hook(clock: FakeClock) -> None:
    orders = Orders(clock)

    def tenant(scope: Any) -> str | None:
        raw = header(scope, b"x-tenant")
        return None if raw is None else raw.decode()

    mw = ResilienceMiddleware(orders, pipeline=_by_key(clock), scope=tenant)
    with serve(mw) as url, httpx.Client(base_url=url, timeout=10) as client:
        acme = {"Idempotency-Key": "k", "X-Tenant": "acme"}
        assert client.post("/", headers=acme).content == b"order #1"
        same = client.post("/", headers={**acme, "Authorization": "Bearer other"})
        assert same.status_code == 409  # the same tenant: the hook decides, a duplicate
        assert orders.runs == 1
        # no principal: never deduplicated, not even with itself
        for n in (2, 3):
            assert client.post("/", headers={"Idempotency-Key": "k"}).content == b"order #%d" % n
    with pytest.raises(rs.ConfigurationError, match="scope"):
        ResilienceMiddleware(orders, pipeline=_by_key(clock), scope="tenant")  # type: ignore[arg-type]
