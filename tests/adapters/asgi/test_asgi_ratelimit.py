"""RateLimitMiddleware: 429 with Retry-After and the IETF RateLimit fields, keys and routes,
trusted proxies, configuration.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import resilience as rs
from interceptors.asgi import (
    RateLimitMiddleware,
    TrustedProxies,
)
from interceptors.asgi._common import format_retry_after

from ..._asgi_apps import FakeLimiter, TestApp
from ..._server import serve

# -- rate limiting ---------------------------------------------------------------------------


def test_rate_limit_429_with_retry_after_and_ietf_fields(app: TestApp) -> None:
    limiter = FakeLimiter()
    with (
        serve(RateLimitMiddleware(app, limiter=limiter)) as url,
        httpx.Client(base_url=url) as client,
    ):
        first = client.get("/hello")
        second = client.get("/hello")
        third = client.get("/hello")
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    assert first.text == "hello"
    assert first.headers["ratelimit-policy"] == '"api";q=2;w=1'
    assert first.headers["ratelimit"] == '"api";r=1;t=1'
    assert second.headers["ratelimit"] == '"api";r=0;t=1'
    assert third.headers["retry-after"] == "1"
    assert third.headers["ratelimit"] == '"api";r=0;t=1'
    assert third.headers["content-type"] == "application/problem+json"
    assert third.json()["status"] == 429
    assert limiter.keys == ["127.0.0.1"] * 3


def test_rate_limit_keys_and_route_selection(app: TestApp) -> None:
    limiter = FakeLimiter(rate=1)
    mw = RateLimitMiddleware(
        app,
        limiter=limiter,
        trusted_proxies=["127.0.0.0/8"],
        exclude=["/health"],
        headers=False,
    )
    with serve(mw) as url, httpx.Client(base_url=url) as client:
        assert client.get("/health").status_code == 200
        xff = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7"}
        r1 = client.get("/hello", headers=xff)
        assert "ratelimit" not in r1.headers
        assert client.get("/hello", headers=xff).status_code == 429
        assert client.get("/hello", headers={"X-Forwarded-For": "198.51.100.1"}).is_success
    assert limiter.keys == ["203.0.113.7", "203.0.113.7", "198.51.100.1"]


def test_rate_limit_untrusted_peer_ignores_forwarded_for() -> None:
    limiter = FakeLimiter()
    seen: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        pass

    mw = RateLimitMiddleware(inner, limiter=limiter, trusted_proxies=["10.0.0.0/8"])
    headers = [(b"x-forwarded-for", b"1.1.1.1")]
    scope = {"type": "http", "path": "/a", "headers": headers, "client": ("192.0.2.1", 1)}
    asyncio.run(mw(scope, receive, send))
    no_client = {"type": "http", "path": "/b", "headers": headers, "client": None}
    asyncio.run(mw(no_client, receive, send))  # no principal: not limited
    assert limiter.keys == ["192.0.2.1"]
    assert seen == ["/a", "/b"]


def test_rate_limit_async_limiter_and_cost() -> None:
    calls: list[tuple[str, int]] = []

    class AsyncLimiter:
        name = 'we"ird\\'

        async def atry_acquire(self, *, key: str, cost: int = 1) -> Any:
            calls.append((key, cost))
            return FakeLimiter().try_acquire(key=key, cost=cost)

        def try_acquire(self, *, key: str, cost: int = 1) -> Any:
            raise AssertionError("the async form is preferred")

    sent: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        sent.append(message)

    mw = RateLimitMiddleware(
        inner, limiter=AsyncLimiter(), key=lambda scope: "tenant-1", cost=lambda scope: 2
    )
    asyncio.run(mw({"type": "http", "path": "/", "headers": []}, receive, send))
    assert calls == [("tenant-1", 2)]
    fields = dict(sent[0]["headers"])
    # no rate/per on this limiter: no window and no reset time to report
    assert fields[b"ratelimit"] == b'"we\\"ird\\\\";r=0;t=0'
    assert fields[b"ratelimit-policy"] == b'"we\\"ird\\\\";q=2'


def test_rate_limit_configuration_errors() -> None:
    bad: list[dict[str, Any]] = [
        {"limiter": object()},
        {"limiter": FakeLimiter(), "cost": 0},
        {"limiter": FakeLimiter(), "key": "ip"},
        {"limiter": FakeLimiter(), "trusted_proxies": "10.0.0.0/8"},
        {"limiter": FakeLimiter(), "trusted_proxies": ["10.0.0.0/33"]},
    ]
    for kwargs in bad:
        with pytest.raises(rs.ConfigurationError):
            RateLimitMiddleware(TestApp(), **kwargs)


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("10.0.0.1", None, "10.0.0.1"),  # trusted peer, no header: the proxy itself
        ("10.0.0.1", "203.0.113.5", "203.0.113.5"),
        ("10.0.0.1", "1.1.1.1, 203.0.113.5, 10.0.0.7", "203.0.113.5"),  # rightmost untrusted
        ("10.0.0.1", "10.0.0.9, 10.0.0.8", "10.0.0.9"),  # all trusted: leftmost
        ("10.0.0.1", "garbage, 10.0.0.8", "10.0.0.8"),  # unparseable: last trusted hop
        ("10.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
        ("10.0.0.1", "203.0.113.5:8080", "203.0.113.5"),
        ("::ffff:10.0.0.1", "198.51.100.2", "198.51.100.2"),  # v4-mapped peer
        ("192.0.2.9", "203.0.113.5", "192.0.2.9"),  # untrusted peer: header ignored
        ("unix-socket", "203.0.113.5", "unix-socket"),
    ],
)
def test_trusted_proxies_client_ip(peer: str, xff: str | None, expected: str) -> None:
    headers = [] if xff is None else [(b"x-forwarded-for", xff.encode())]
    scope = {"client": (peer, 1234), "headers": headers}
    assert TrustedProxies(["10.0.0.0/8"]).client_ip(scope) == expected


def test_multiple_forwarded_for_fields_are_one_list() -> None:
    scope = {
        "client": ("10.0.0.1", 1),
        "headers": [(b"x-forwarded-for", b"9.9.9.9"), (b"x-forwarded-for", b"8.8.8.8, 10.1.1.1")],
    }
    assert TrustedProxies(["10.0.0.0/8"]).client_ip(scope) == "8.8.8.8"


def test_format_retry_after_rounds_up() -> None:
    assert [format_retry_after(v) for v in (0, 0.01, 1.0, 2.5)] == [b"0", b"1", b"1", b"3"]
    assert format_retry_after(None) is None
    assert format_retry_after(-1) is None
    assert format_retry_after(float("inf")) is None


# -- several windows and per-key tiers ---------------------------------------------------------
def _sf_items(value: bytes) -> list[tuple[str, dict[str, Any]]]:
    import http_sf

    members: Any = http_sf.parse(value, tltype="list")
    assert http_sf.ser(members).encode("ascii") == value  # serialized as http-sf would
    return [(name, dict(params)) for name, params in members]


def test_one_ratelimit_item_per_window_round_trips_through_http_sf() -> None:
    clock = rs.testing.FakeClock()
    limiter = rs.RateLimiter(
        "api",
        limits=[rs.Limit(rate=2, per=1), rs.Limit(rate=3, per=3600, name="hourly")],
        clock=clock,
    )
    mw = RateLimitMiddleware(_noop_app, limiter=limiter)
    first = dict(mw._fields(limiter.try_acquire(key="k"), None))
    assert _sf_items(first[b"ratelimit-policy"]) == [
        ("api/1s", {"q": 2, "w": 1}),
        ("api/hourly", {"q": 3, "w": 3600}),
    ]
    assert _sf_items(first[b"ratelimit"]) == [
        ("api/1s", {"r": 1, "t": 1}),
        ("api/hourly", {"r": 2, "t": 1200}),
    ]
    limiter.try_acquire(key="k")
    clock.advance(1)
    limiter.try_acquire(key="k")  # the hourly window is spent now
    refused = limiter.try_acquire(key="k")
    assert not refused.allowed
    assert refused.retry_after == 1199.0
    fields = dict(mw._fields(refused, format_retry_after(refused.retry_after)))
    # the window that refused says when it admits again; the other when it is full
    assert _sf_items(fields[b"ratelimit"]) == [
        ("api/1s", {"r": 1, "t": 1}),
        ("api/hourly", {"r": 0, "t": 1199}),
    ]


def test_the_key_is_the_principal_a_tiered_limiter_sees(app: TestApp) -> None:
    free, paid = rs.Limit(rate=1, per=60), [rs.Limit(rate=3, per=60), rs.Limit(rate=100, per=3600)]
    seen: list[str] = []

    def tier(key: str) -> rs.Limit | list[rs.Limit]:
        seen.append(key)
        return paid if key.startswith("pro:") else free

    limiter = rs.RateLimiter("plans", limits=tier, clock=rs.testing.FakeClock())
    mw = RateLimitMiddleware(
        app, limiter=limiter, key=lambda scope: dict(scope["headers"]).get(b"x-user", b"").decode()
    )
    with serve(mw) as url, httpx.Client(base_url=url) as client:
        alice = [client.get("/hello", headers={"x-user": "free:alice"}) for _ in range(2)]
        pro = [client.get("/hello", headers={"x-user": "pro:bob"}) for _ in range(4)]
    assert [r.status_code for r in alice] == [200, 429]
    assert [r.status_code for r in pro] == [200, 200, 200, 429]
    # each principal's own windows, on admitted and refused responses alike
    assert alice[0].headers["ratelimit-policy"] == '"plans/60s";q=1;w=60'
    assert alice[1].headers["ratelimit-policy"] == '"plans/60s";q=1;w=60'
    assert alice[1].headers["ratelimit"] == '"plans/60s";r=0;t=60'
    assert pro[0].headers["ratelimit-policy"] == '"plans/60s";q=3;w=60, "plans/3600s";q=100;w=3600'
    assert pro[0].headers["ratelimit"] == '"plans/60s";r=2;t=20, "plans/3600s";r=99;t=36'
    assert pro[3].headers["ratelimit-policy"] == pro[0].headers["ratelimit-policy"]
    assert pro[3].headers["ratelimit"] == '"plans/60s";r=0;t=20, "plans/3600s";r=97;t=108'
    assert pro[3].headers["retry-after"] == "20"
    assert seen == ["free:alice", "pro:bob"]  # looked up once per key, then cached


async def _noop_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})
