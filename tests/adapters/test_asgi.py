"""ASGI middlewares against a real uvicorn server on loopback (plus a few direct ASGI calls)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import resilience as rs
from interceptors.asgi import (
    RateLimitMiddleware,
    ResilienceMiddleware,
    RouteFilter,
    ServerErrorResponse,
    TrustedProxies,
)
from interceptors.asgi._common import format_retry_after, header, parse_timeout
from resilience.testing import FakeClock

from .._asgi_apps import FakeLimiter, Permits, Reject, TestApp
from .._server import serve
from ..helpers import wait_until


@pytest.fixture
def app() -> TestApp:
    return TestApp()


@pytest.fixture
def permits() -> Permits:
    return Permits()


@pytest.fixture
def guarded(app: TestApp, permits: Permits) -> Iterator[httpx.Client]:
    mw = ResilienceMiddleware(app, pipeline=rs.Pipeline(permits))
    with serve(mw) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


# -- pass-through ---------------------------------------------------------------------------


def test_lifespan_passes_through_and_startup_shutdown_complete(app: TestApp) -> None:
    limiter = FakeLimiter()
    mw = RateLimitMiddleware(
        ResilienceMiddleware(app, pipeline=rs.Pipeline(Permits())), limiter=limiter
    )
    with serve(mw, lifespan="on") as url:
        assert app.lifespan == ["startup"]
        assert httpx.get(url + "/hello").text == "hello"
    assert app.lifespan == ["startup", "shutdown"]
    assert limiter.keys == ["127.0.0.1"]


@pytest.mark.parametrize("scope_type", ["websocket", "lifespan", "custom.protocol"])
def test_non_http_scopes_are_forwarded_untouched(scope_type: str) -> None:
    seen: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: Any) -> None:
        pass

    scope = {"type": scope_type, "path": "/", "headers": [], "client": ("1.2.3.4", 1)}
    limiter = FakeLimiter()
    for mw in (
        ResilienceMiddleware(inner, pipeline=Reject(rs.CircuitOpenError())),
        RateLimitMiddleware(inner, limiter=limiter),
    ):
        asyncio.run(mw(scope, receive, send))
    assert seen == [(scope, receive, send)] * 2
    assert limiter.keys == []


# -- streaming, disconnects, exceptions ------------------------------------------------------


def test_streaming_response_is_not_buffered(app: TestApp, guarded: httpx.Client) -> None:
    with guarded.stream("GET", "/stream") as response:
        chunks = response.iter_raw()
        first = next(chunks)
        # the app is still blocked after its first chunk: nothing was buffered
        assert first == b"first"
        assert app.state["stream_done"] is False
        app.release.set()
        assert b"".join(chunks) == b"second"
    assert wait_until(lambda: app.state["stream_done"] is True)


def test_client_disconnect_releases_the_permit(
    app: TestApp, permits: Permits, guarded: httpx.Client
) -> None:
    with guarded.stream("GET", "/forever") as response:
        chunks = response.iter_raw()  # keep a reference: a collected iterator closes the stream
        assert next(chunks)
        assert permits.in_flight == 1
        assert "disconnected" not in app.state
    # leaving the block closes the half-read response: the connection is dropped
    assert wait_until(lambda: permits.in_flight == 0)
    assert wait_until(lambda: app.state.get("disconnected") is True)


def test_app_exception_propagates_and_releases(permits: Permits, guarded: httpx.Client) -> None:
    response = guarded.get("/boom")
    assert response.status_code == 500  # uvicorn's own answer to an exception: it propagated
    assert response.headers["content-type"].startswith("text/plain")
    assert wait_until(lambda: permits.outcomes == ["RuntimeError"])
    assert permits.in_flight == 0


def test_exception_after_start_aborts_the_response(permits: Permits, guarded: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        guarded.get("/boom-after-start")
    assert wait_until(lambda: permits.outcomes == ["RuntimeError"])
    assert permits.in_flight == 0


def test_policy_error_after_start_never_sends_a_second_start() -> None:
    messages: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        raise rs.TimeoutExceededError("too slow", timeout=1.0)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        messages.append(message)

    mw = ResilienceMiddleware(inner, pipeline=Permits())
    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    with pytest.raises(rs.TimeoutExceededError):
        asyncio.run(mw(scope, receive, send))
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.body"]


def test_request_body_reaches_the_app_unchanged(app: TestApp, guarded: httpx.Client) -> None:
    body = [b"a" * 70_000, b"b" * 3, b"c" * 100_000]
    response = guarded.post("/echo", content=iter(body))
    assert response.content == b"".join(body)
    assert app.state["echo_chunks"] >= 2  # more_body framing reached the app


def test_5xx_response_counts_as_failure_but_reaches_client_intact(
    permits: Permits, guarded: httpx.Client
) -> None:
    response = guarded.get("/status/503")
    assert (response.status_code, response.text) == (503, "status")
    assert "retry-after" not in response.headers
    assert wait_until(lambda: permits.outcomes == [ServerErrorResponse.__name__])
    assert guarded.get("/status/404").status_code == 404
    assert wait_until(lambda: permits.outcomes[-1:] == ["ok"])


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


# -- inbound deadlines -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "upper"),
    [
        ({"X-Request-Timeout": "2.5"}, 2.5),
        ({"Request-Timeout": "250m"}, 0.25),
        ({"Request-Timeout": "soon", "X-Request-Timeout": "1"}, 1.0),
    ],
)
def test_inbound_deadline_is_published(
    guarded: httpx.Client, headers: dict[str, str], upper: float
) -> None:
    left = guarded.get("/deadline", headers=headers).json()
    assert 0 < left <= upper


@pytest.mark.parametrize("value", ["", "abc", "-1", "1e3", "999999999S"])
def test_malformed_inbound_deadline_is_ignored(guarded: httpx.Client, value: str) -> None:
    assert guarded.get("/deadline", headers={"X-Request-Timeout": value}).json() is None


@pytest.mark.parametrize("value", ["9999999999", "99999999H"])
@pytest.mark.parametrize("max_deadline", [300.0, None])
def test_absurd_request_timeout_never_breaks_an_outbound_grpc_call(
    value: str, max_deadline: float | None
) -> None:
    """A client-chosen deadline must not make our own outbound calls fail (and trip breakers)."""
    import grpc

    from interceptors.grpc import (
        AsyncResilienceClientInterceptor,
        ResilienceServerInterceptor,
        grpc_retry,
    )

    from ..grpc_fixtures import UU, Script, start_sync_server

    script = Script()
    # the payment server does not clamp, so it reports the deadline the call carried
    payment = ResilienceServerInterceptor(pipeline=None, max_deadline=None)
    server, port = start_sync_server(script, (payment,))
    breaker = rs.CircuitBreaker("payment", failure_count=3)
    client = AsyncResilienceClientInterceptor(pipeline=rs.Pipeline(breaker, grpc_retry()))

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=client.channel_interceptors()
        ) as channel:
            pay: Any = channel.unary_unary
            try:
                status, body = 200, await pay(UU)(b"pay")
            except grpc.RpcError as exc:
                status, body = 502, exc.code().name.encode()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    kw: dict[str, Any] = {} if max_deadline == 300.0 else {"max_deadline": max_deadline}
    mw = ResilienceMiddleware(handler, pipeline=Permits(), **kw)
    try:
        with serve(mw) as url, httpx.Client(base_url=url, timeout=10) as http:
            for _ in range(3):
                response = http.get("/", headers={"Request-Timeout": value})
                assert (response.status_code, response.content) == (200, b"re:pay")
    finally:
        server.stop(None)
    assert breaker.state is rs.CircuitState.CLOSED
    assert script.calls == 3
    for left in script.remaining:  # the deadline the payment server saw
        assert left is not None
        if max_deadline is not None:
            assert 299 < left <= 300.0  # clamped to the default max_deadline
        else:
            assert 1e7 < left <= 1e8  # passed on as the largest timeout grpcio takes


def test_max_deadline_clamps_the_published_deadline(app: TestApp) -> None:
    mw = ResilienceMiddleware(app, pipeline=Permits(), max_deadline=2.0)
    with serve(mw) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert 0 < client.get("/deadline", headers={"Request-Timeout": "600"}).json() <= 2.0
        assert 0 < client.get("/deadline", headers={"Request-Timeout": "1"}).json() <= 1.0
    for bad in (0, -1, float("inf"), "5"):
        with pytest.raises(rs.ConfigurationError, match="max_deadline"):
            ResilienceMiddleware(app, pipeline=Permits(), max_deadline=bad)  # type: ignore[arg-type]


def test_expired_inbound_deadline_gets_504_without_running_the_app(
    permits: Permits, guarded: httpx.Client
) -> None:
    response = guarded.get("/hello", headers={"X-Request-Timeout": "0"})
    assert response.status_code == 504
    assert permits.outcomes == []


def test_inbound_deadline_on_fake_clock(clock: rs.testing.FakeClock) -> None:
    seen: list[float | None] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        clock.advance(0.5)
        seen.append(rs.remaining())

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        pass

    mw = ResilienceMiddleware(
        inner, pipeline=Permits(), deadline_headers=("x-deadline",), clock=clock
    )
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"x-deadline", b"3")]}
    asyncio.run(mw(scope, receive, send))
    assert seen == [2.5]


def test_parse_timeout_forms() -> None:
    assert parse_timeout(b"10") == 10.0
    assert parse_timeout("1H") == 3600.0
    assert parse_timeout("2M") == 120.0
    assert parse_timeout("500u") == pytest.approx(0.0005)
    assert parse_timeout("100n") == pytest.approx(1e-7)
    for bad in (None, "", "1.5S", "123456789S", "1x", "nan", "inf", " 1 2"):
        assert parse_timeout(bad) is None


# -- route selection and operation names -----------------------------------------------------


def test_route_selection_and_operation_names(app: TestApp) -> None:
    permits = Permits()
    mw = ResilienceMiddleware(
        app,
        pipeline=permits,
        include=["/status", "/hello"],
        exclude=["/status/404"],
        operation=lambda scope: scope["method"] + " " + scope["path"].split("/")[1],
    )
    with serve(mw) as url, httpx.Client(base_url=url) as client:
        assert client.get("/hello").status_code == 200
        assert client.get("/status/404").status_code == 404  # excluded
        assert client.get("/health").status_code == 200  # not included
        assert client.post("/status/200").status_code == 200
    assert wait_until(lambda: len(permits.outcomes) == 2)
    assert permits.operations == ["GET hello", "POST status"]


def test_route_filter_predicate_and_validation() -> None:
    f = RouteFilter(when=lambda scope: scope.get("method") == "POST")
    assert f({"path": "/", "method": "POST"})
    assert not f({"path": "/", "method": "GET"})
    assert RouteFilter(include=["/"])({"path": "/anything"})
    with pytest.raises(rs.ConfigurationError):
        RouteFilter(include="/api")
    with pytest.raises(rs.ConfigurationError):
        RouteFilter(exclude=["api"])


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


def test_problem_body_is_valid_json(guarded: httpx.Client) -> None:
    response = guarded.get("/hello", headers={"X-Request-Timeout": "0"})
    assert json.loads(response.content)["status"] == 504
    assert int(response.headers["content-length"]) == len(response.content)


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
