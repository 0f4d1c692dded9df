"""httpx resilient transports against a real uvicorn server on loopback (FakeClock delays)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import resilience as rs
from interceptors.asgi._common import Receive, Scope, Send
from interceptors.httpx import (
    AsyncResilientTransport,
    ResilientTransport,
    http_retry,
    may_resend,
    parse_retry_after,
)
from interceptors.httpx._hints import _ratelimit_reset as ratelimit_reset
from resilience import Emitter
from resilience.events import RetryScheduled
from resilience.testing import FakeClock, RecordingListener

from .._asgi_apps import Reject
from .._server import serve

# -- the scripted server ---------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0


class ScriptedApp:
    """``/<id>``: the n-th request plays ``replies[id][n]`` (the last one repeats)."""

    def __init__(self) -> None:
        self.replies: dict[str, list[Reply]] = {}
        self.seen: dict[str, list[dict[str, Any]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        sid = scope["path"].strip("/")
        seen = self.seen.setdefault(sid, [])
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        seen.append({"method": scope["method"], "headers": headers, "body": body})
        replies = self.replies.get(sid) or [Reply()]
        reply = replies[min(len(seen), len(replies)) - 1]
        if reply.delay:
            await asyncio.sleep(reply.delay)
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [(k.encode(), v.encode()) for k, v in reply.headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[ScriptedApp, str]]:
    app = ScriptedApp()
    with serve(app) as url:
        yield app, url


class Script:
    def __init__(self, app: ScriptedApp, url: str, replies: list[Reply]) -> None:
        self.id = uuid.uuid4().hex
        self.app = app
        self.url = f"{url}/{self.id}"
        app.replies[self.id] = replies

    @property
    def seen(self) -> list[dict[str, Any]]:
        return self.app.seen.get(self.id, [])


@pytest.fixture
def script(server: tuple[ScriptedApp, str]) -> Callable[..., Script]:
    app, url = server
    return lambda *replies: Script(app, url, list(replies))


# -- sync / async driver ---------------------------------------------------------------------


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def fetch(
    mode: str,
    pipeline: rs.Policy | None,
    method: str,
    url: str,
    *,
    transport_kw: dict[str, Any] | None = None,
    **kw: Any,
) -> httpx.Response:
    """One request through a resilient transport (sync or async), body read."""
    tkw = dict(transport_kw or {})
    if mode == "sync":
        with httpx.Client(transport=ResilientTransport(pipeline, **tkw), timeout=10) as client:
            return client.request(method, url, **kw)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=AsyncResilientTransport(pipeline, **tkw), timeout=10
        ) as client:
            return await client.request(method, url, **kw)

    return asyncio.run(go())


def retry(clock: FakeClock, **kw: Any) -> rs.Retry:
    kw.setdefault("backoff", rs.backoff.constant(0.5))
    return http_retry(clock=clock, **kw)


# -- status codes and server-directed delays -------------------------------------------------


def test_retries_503_honouring_retry_after(mode: str, script: Any, clock: FakeClock) -> None:
    s = script(Reply(503, {"Retry-After": "2"}), Reply(503, {"Retry-After": "1"}), Reply(200))
    response = fetch(mode, retry(clock, attempts=3), "GET", s.url)
    assert (response.status_code, response.text) == (200, "ok")
    assert len(s.seen) == 3
    assert clock.sleeps == [2.0, 1.0]


def test_exhausted_returns_the_last_response(mode: str, script: Any, clock: FakeClock) -> None:
    s = script(Reply(503, body=b"first"), Reply(502, body=b"last"))
    response = fetch(mode, retry(clock, attempts=3), "GET", s.url)
    assert (response.status_code, response.text) == (502, "last")
    assert len(s.seen) == 3
    assert clock.sleeps == [0.5, 0.5]


def test_retry_after_http_date(mode: str, script: Any) -> None:
    clock = FakeClock(epoch=1_700_000_000.0)
    s = script(Reply(429, {"Retry-After": formatdate(1_700_000_007, usegmt=True)}), Reply(200))
    assert fetch(mode, retry(clock), "GET", s.url).status_code == 200
    assert clock.sleeps == [7.0]


@pytest.mark.parametrize(
    ("headers", "sleeps"),
    [
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, []),  # in the past: retry at once
        ({"Retry-After": "soon"}, [0.5]),  # malformed: backoff
        ({"Retry-After": "-3"}, [0.5]),
        ({"Retry-After": "1.5"}, [0.5]),  # delay-seconds are integers
        ({"RateLimit": '"default";r=0;t=4'}, [4.0]),
        ({"RateLimit": '"a";r=5;t=1, "b";r=0;t=9'}, [9.0]),
        ({"RateLimit": '"default";r=0;t=4', "Retry-After": "2"}, [2.0]),  # Retry-After wins
        ({"RateLimit": "garbage;;;=,"}, [0.5]),
    ],
)
def test_server_delay_forms(
    mode: str, script: Any, clock: FakeClock, headers: dict[str, str], sleeps: list[float]
) -> None:
    s = script(Reply(429, headers), Reply(200))
    assert fetch(mode, retry(clock), "GET", s.url).status_code == 200
    assert clock.sleeps == sleeps
    assert len(s.seen) == 2


def test_retry_after_beyond_the_cap_gives_up(mode: str, script: Any, clock: FakeClock) -> None:
    s = script(Reply(503, {"Retry-After": "3600"}), Reply(200))
    response = fetch(mode, retry(clock, max_retry_after=60), "GET", s.url)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3600"
    assert len(s.seen) == 1
    assert clock.sleeps == []


# -- server hints reach any Retry, not only http_retry() ---------------------------------------


def plain_retry(clock: FakeClock, **kw: Any) -> rs.Retry:
    """A Retry knowing nothing about HTTP headers: it must still get the server's hint."""
    kw.setdefault("backoff", rs.backoff.constant(0.01))
    return rs.Retry(
        on=httpx.TransportError,
        on_result=lambda r: r.status_code in (429, 503),
        attempts=3,
        clock=clock,
        **kw,
    )


@pytest.mark.parametrize(
    ("headers", "sleeps"),
    [
        ({"Retry-After": "1"}, [1.0]),
        ({"RateLimit": '"default";r=0;t=4'}, [4.0]),
        ({"Retry-After": "soon"}, [0.01]),  # garbage: ignored, the backoff decides
        ({"Retry-After": "-3"}, [0.01]),
        ({}, [0.01]),
    ],
)
def test_plain_retry_honours_the_server_hint(
    mode: str, script: Any, clock: FakeClock, headers: dict[str, str], sleeps: list[float]
) -> None:
    s = script(Reply(503, headers), Reply(200))
    rec = RecordingListener()
    response = fetch(mode, plain_retry(clock, listeners=[rec]), "GET", s.url)
    assert response.status_code == 200
    assert clock.sleeps == sleeps
    (scheduled,) = rec.of(RetryScheduled)
    assert scheduled.delay == sleeps[0]  # type: ignore[attr-defined]
    assert scheduled.server_directed is (sleeps != [0.01])  # type: ignore[attr-defined]


def test_plain_retry_hint_from_an_http_date_uses_the_transport_clock(
    mode: str, script: Any
) -> None:
    clock = FakeClock(epoch=1_700_000_000.0)
    s = script(Reply(503, {"Retry-After": formatdate(1_700_000_003, usegmt=True)}), Reply(200))
    response = fetch(mode, plain_retry(clock), "GET", s.url, transport_kw={"clock": clock})
    assert response.status_code == 200
    assert clock.sleeps == [3.0]


def test_plain_retry_hint_is_capped_by_the_deadline(
    mode: str, script: Any, clock: FakeClock
) -> None:
    s = script(Reply(503, {"Retry-After": "5"}), Reply(200))
    rec = RecordingListener()
    with rs.deadline_scope(2.0, clock=clock):
        response = fetch(mode, plain_retry(clock, listeners=[rec]), "GET", s.url)
    assert response.status_code == 503  # waiting 5 s would cross the deadline: stop now
    assert len(s.seen) == 1
    assert clock.sleeps == []
    assert [e.reason for e in rec.of(rs.events.RetriesExhausted)] == ["deadline"]  # type: ignore[attr-defined]


def test_a_retry_after_hook_given_to_the_retry_wins(
    mode: str, script: Any, clock: FakeClock
) -> None:
    s = script(Reply(503, {"Retry-After": "1"}), Reply(200))
    policy = plain_retry(clock, retry_after=lambda outcome: 0.25)
    assert fetch(mode, policy, "GET", s.url).status_code == 200
    assert clock.sleeps == [0.25]
    s = script(Reply(503, {"Retry-After": "1"}), Reply(200))
    clock.sleeps.clear()
    assert fetch(mode, plain_retry(clock, retry_after=None), "GET", s.url).status_code == 200
    assert clock.sleeps == [0.01]  # retry_after=None: server hints off


def test_statuses_outside_the_list_are_not_retried(
    mode: str, script: Any, clock: FakeClock
) -> None:
    s = script(Reply(500), Reply(200))
    assert fetch(mode, retry(clock), "GET", s.url).status_code == 500
    assert len(s.seen) == 1


# -- which requests may be sent again ---------------------------------------------------------


def test_post_without_key_is_not_retried(mode: str, script: Any, clock: FakeClock) -> None:
    s = script(Reply(503), Reply(200))
    assert fetch(mode, retry(clock), "POST", s.url, content=b"{}").status_code == 503
    assert len(s.seen) == 1


def test_post_with_key_is_retried_with_the_same_key(
    mode: str, script: Any, clock: FakeClock
) -> None:
    s = script(Reply(503), Reply(200))
    headers = {"Idempotency-Key": "order-17"}
    response = fetch(mode, retry(clock), "POST", s.url, content=b"{}", headers=headers)
    assert response.status_code == 200
    assert [r["headers"]["idempotency-key"] for r in s.seen] == ["order-17", "order-17"]
    assert [r["body"] for r in s.seen] == [b"{}", b"{}"]


def test_automatic_idempotency_key_is_stable_across_attempts(
    mode: str, script: Any, clock: FakeClock
) -> None:
    s = script(Reply(503), Reply(502), Reply(200))
    response = fetch(
        mode,
        retry(clock),
        "PATCH",
        s.url,
        json={"a": 1},
        transport_kw={"idempotency_key": True},
    )
    assert response.status_code == 200
    keys = {r["headers"]["idempotency-key"] for r in s.seen}
    assert len(s.seen) == 3
    assert len(keys) == 1
    assert uuid.UUID(keys.pop()).version == 4


def test_streaming_body_is_never_replayed(mode: str, script: Any, clock: FakeClock) -> None:
    s = script(Reply(503), Reply(200))
    careless = rs.Retry(  # ignores may_resend: the transport's own guard must hold
        on=httpx.TransportError,
        on_result=lambda r: r.status_code == 503,
        backoff=rs.backoff.constant(0),
        clock=clock,
    )
    headers = {"Idempotency-Key": "k"}
    if mode == "sync":
        content: Any = iter([b"a", b"b"])
    else:

        async def agen() -> Any:
            yield b"a"
            yield b"b"

        content = agen()
    response = fetch(mode, careless, "PUT", s.url, content=content, headers=headers)
    assert response.status_code == 503
    assert [r["body"] for r in s.seen] == [b"ab"]


def test_careless_retry_of_unkeyed_post_returns_the_first_response(
    mode: str, script: Any, clock: FakeClock
) -> None:
    s = script(Reply(503, body=b"only"), Reply(200))
    careless = rs.Retry(on=Exception, on_result=lambda r: r.status_code == 503, clock=clock)
    response = fetch(mode, careless, "POST", s.url, content=b"x")
    assert (response.status_code, response.text) == (503, "only")
    assert len(s.seen) == 1


def test_may_resend_rules() -> None:
    get = httpx.Request("GET", "http://h/")
    post = httpx.Request("POST", "http://h/", content=b"x")
    assert may_resend(get)
    assert not may_resend(post)
    assert not may_resend(post, httpx.ReadError("reset"))
    assert may_resend(post, httpx.ConnectError("refused"))  # nothing was sent
    assert may_resend(post, methods={"POST"})
    assert not may_resend(httpx.Request("GET", "http://h/", content=iter([b"x"])))
    streamed = httpx.Request("PUT", "http://h/", content=iter([b"x"]))
    streamed.read()  # read into memory: now replayable
    assert may_resend(streamed)


# -- connections and responses are released --------------------------------------------------


def test_retried_responses_are_closed_and_the_pool_does_not_run_dry(
    mode: str, script: Any, clock: FakeClock
) -> None:
    s = script(Reply(503, body=b"x" * 100_000), Reply(503, body=b"y" * 100_000), Reply(200))
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    timeout = httpx.Timeout(5, pool=0.5)
    if mode == "sync":
        inner: Any = httpx.HTTPTransport(limits=limits)
        with httpx.Client(
            transport=ResilientTransport(retry(clock), transport=inner), timeout=timeout
        ) as client:
            statuses = [client.get(s.url).status_code for _ in range(3)]
    else:

        async def go() -> list[int]:
            inner = httpx.AsyncHTTPTransport(limits=limits)
            async with httpx.AsyncClient(
                transport=AsyncResilientTransport(retry(clock), transport=inner), timeout=timeout
            ) as client:
                return [(await client.get(s.url)).status_code for _ in range(3)]

        statuses = asyncio.run(go())
    assert statuses == [200, 200, 200]
    assert len(s.seen) == 5


class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that is not read up front (so closing it is observable)."""

    def __iter__(self) -> Iterator[bytes]:
        yield b"body"

    async def __aiter__(self) -> Any:
        yield b"body"


class Tracking(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An inner transport whose responses record whether they were closed."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.responses: list[httpx.Response] = []
        self.requests: list[httpx.Request] = []

    def _next(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.statuses[min(len(self.responses), len(self.statuses) - 1)]
        response = httpx.Response(status, stream=Body(), request=request)
        self.responses.append(response)
        return response

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._next(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self._next(request)


def run_transport(mode: str, pipeline: rs.Policy | None, inner: Any, **kw: Any) -> Any:
    request = httpx.Request(kw.pop("method", "GET"), kw.pop("url", "http://svc.local/x"), **kw)
    if mode == "sync":
        return ResilientTransport(pipeline, transport=inner).handle_request(request)

    async def go() -> Any:
        return await AsyncResilientTransport(pipeline, transport=inner).handle_async_request(
            request
        )

    return asyncio.run(go())


def test_every_discarded_response_is_closed(mode: str, clock: FakeClock) -> None:
    inner = Tracking([503, 503, 200])
    response = run_transport(mode, retry(clock), inner)
    assert response is inner.responses[-1]
    assert [r.is_closed for r in inner.responses] == [True, True, False]


def test_response_is_closed_when_a_later_policy_fails(mode: str, clock: FakeClock) -> None:
    inner = Tracking([503])
    pipeline = rs.Pipeline(rs.Fallback(on=ZeroDivisionError, value=None), retry(clock))

    class Boom(rs.Policy):
        kind = "boom"

        def _wrap_sync(self, fn: Any, em: Emitter) -> Any:
            def w(*a: Any) -> Any:
                fn(*a)
                raise KeyError("after")

            return w

        def _wrap_async(self, fn: Any, em: Emitter) -> Any:
            async def w(*a: Any) -> Any:
                await fn(*a)
                raise KeyError("after")

            return w

    with pytest.raises(KeyError):
        run_transport(mode, rs.Pipeline(pipeline, Boom(name="boom")), inner)
    assert [r.is_closed for r in inner.responses] == [True]


# -- transport errors --------------------------------------------------------------------------


class Failing(Tracking):
    def __init__(self, errors: list[Exception | None]) -> None:
        super().__init__([200])
        self.errors = errors

    def _next(self, request: httpx.Request) -> httpx.Response:
        n = len(self.requests)
        if n < len(self.errors) and self.errors[n] is not None:
            self.requests.append(request)
            raise self.errors[n]  # type: ignore[misc]
        return super()._next(request)


def test_connect_errors_are_retried_even_for_post(mode: str, clock: FakeClock) -> None:
    inner = Failing([httpx.ConnectError("refused"), None])
    response = run_transport(mode, retry(clock), inner, method="POST", content=b"x")
    assert response.status_code == 200
    assert len(inner.requests) == 2


def test_read_errors_are_not_retried_for_unkeyed_post(mode: str, clock: FakeClock) -> None:
    inner = Failing([httpx.ReadError("reset"), None])
    with pytest.raises(httpx.ReadError):
        run_transport(mode, retry(clock), inner, method="POST", content=b"x")
    assert len(inner.requests) == 1


def test_read_errors_are_retried_for_get(mode: str, clock: FakeClock) -> None:
    inner = Failing([httpx.ReadError("reset"), httpx.RemoteProtocolError("eof"), None])
    assert run_transport(mode, retry(clock), inner).status_code == 200
    assert clock.sleeps == [0.5, 0.5]


def test_careless_retry_of_unkeyed_post_after_error_reraises_it(
    mode: str, clock: FakeClock
) -> None:
    error = httpx.ReadError("reset")
    inner = Failing([error, None])
    careless = rs.Retry(on=Exception, backoff=rs.backoff.constant(0), clock=clock)
    with pytest.raises(httpx.ReadError) as info:
        run_transport(mode, careless, inner, method="POST", content=b"x")
    assert info.value is error
    assert len(inner.requests) == 1


# -- deadlines ---------------------------------------------------------------------------------


def test_attempt_timeouts_come_from_the_remaining_deadline(mode: str, clock: FakeClock) -> None:
    inner = Tracking([503, 200])
    seen: list[dict[str, Any]] = []

    class Spy(Tracking):
        def _next(self, request: httpx.Request) -> httpx.Response:
            seen.append(dict(request.extensions["timeout"]))
            return inner._next(request)

    timeout = {"connect": 1.0, "read": 9.0, "write": 9.0, "pool": None}
    policy = retry(clock, backoff=rs.backoff.constant(0.5))

    def run() -> Any:
        return run_transport(mode, policy, Spy([]), extensions={"timeout": timeout})

    with rs.deadline_scope(3.0, clock=clock):
        if mode == "sync":
            assert run().status_code == 200
        else:

            async def go() -> Any:
                transport = AsyncResilientTransport(policy, transport=Spy([]))
                return await transport.handle_async_request(
                    httpx.Request("GET", "http://svc.local/", extensions={"timeout": timeout})
                )

            assert asyncio.run(go()).status_code == 200
    assert seen == [
        {"connect": 1.0, "read": 3.0, "write": 3.0, "pool": 3.0},
        {"connect": 1.0, "read": 2.5, "write": 2.5, "pool": 2.5},
    ]


def test_far_off_deadline_is_clamped_to_what_the_socket_accepts(mode: str, script: Any) -> None:
    s = script(Reply(200))
    seen: list[dict[str, Any]] = []

    class Spy(Tracking):
        def _next(self, request: httpx.Request) -> httpx.Response:
            seen.append(dict(request.extensions["timeout"]))
            return super()._next(request)

    with rs.deadline_scope(1e12):  # e.g. what an absurd inbound Request-Timeout publishes
        assert fetch(mode, http_retry(), "GET", s.url).status_code == 200  # no OverflowError
        assert run_transport(mode, http_retry(), Spy([200])).status_code == 200
    assert seen == [{"connect": 1e8, "read": 1e8, "write": 1e8, "pool": 1e8}]


def test_expired_deadline_sends_nothing(mode: str, clock: FakeClock) -> None:
    inner = Tracking([200])
    with rs.deadline_scope(1.0, clock=clock):
        clock.advance(1.0)
        with pytest.raises(rs.TimeoutExceededError):
            run_transport(mode, retry(clock), inner)
    assert inner.requests == []


def test_real_deadline_bounds_a_slow_server(mode: str, script: Any) -> None:
    s = script(Reply(200, delay=3.0))
    with rs.deadline_scope(0.3), pytest.raises(httpx.ReadTimeout):
        fetch(mode, http_retry(attempts=1), "GET", s.url)


def test_timeout_policy_publishes_the_deadline(mode: str, script: Any, clock: FakeClock) -> None:
    s = script(Reply(503), Reply(200))
    pipeline = rs.Pipeline(rs.Timeout(5, clock=clock), retry(clock))
    assert fetch(mode, pipeline, "GET", s.url).status_code == 200


# -- breakers, per-host policies, events -----------------------------------------------------


def test_open_breaker_sends_nothing(mode: str, script: Any, clock: FakeClock) -> None:
    s = script(Reply(200))
    pipeline = rs.Pipeline(retry(clock), Reject(rs.CircuitOpenError("open", retry_after=5)))
    with pytest.raises(rs.CircuitOpenError):
        fetch(mode, pipeline, "GET", s.url)
    assert s.seen == []


class CountingPolicy(rs.Policy):
    kind = "counting"

    def __init__(self, host: str) -> None:
        super().__init__(name=f"per-host:{host}")
        self.calls = 0

    def _wrap_sync(self, fn: Callable[..., Any], em: Emitter) -> Callable[..., Any]:
        def counting(*args: Any) -> Any:
            self.calls += 1
            return fn(*args)

        return counting

    def _wrap_async(
        self, fn: Callable[..., Awaitable[Any]], em: Emitter
    ) -> Callable[..., Awaitable[Any]]:
        async def counting(*args: Any) -> Any:
            self.calls += 1
            return await fn(*args)

        return counting


def test_per_host_policies_are_built_once_per_host(
    mode: str, server: tuple[ScriptedApp, str], clock: FakeClock
) -> None:
    _, url = server
    built: dict[str, CountingPolicy] = {}

    def per_host(host: str) -> rs.Policy:
        built[host] = CountingPolicy(host)
        return built[host]

    port = url.rsplit(":", 1)[1]
    urls = [f"http://127.0.0.1:{port}/a", f"http://localhost:{port}/b"] * 2
    kw: dict[str, Any] = {"per_host": per_host}
    if mode == "sync":
        with httpx.Client(transport=ResilientTransport(retry(clock), **kw)) as client:
            statuses = [client.get(u).status_code for u in urls]
    else:

        async def go() -> list[int]:
            async with httpx.AsyncClient(
                transport=AsyncResilientTransport(retry(clock), **kw)
            ) as client:
                return [(await client.get(u)).status_code for u in urls]

        statuses = asyncio.run(go())
    assert statuses == [200] * 4
    assert sorted(built) == [f"127.0.0.1:{port}", f"localhost:{port}"]
    assert [p.calls for p in built.values()] == [2, 2]


def test_per_host_breaker_runs_inside_the_retry(mode: str, clock: FakeClock) -> None:
    inner = Tracking([503, 200])
    built: list[CountingPolicy] = []

    def per_host(host: str) -> rs.Policy:
        built.append(CountingPolicy(host))
        return built[-1]

    request = httpx.Request("GET", "http://svc.local/")
    if mode == "sync":
        t: Any = ResilientTransport(retry(clock), transport=inner, per_host=per_host)
        assert t.handle_request(request).status_code == 200
    else:
        ta = AsyncResilientTransport(retry(clock), transport=inner, per_host=per_host)
        assert asyncio.run(ta.handle_async_request(request)).status_code == 200
    assert built[0].calls == 2  # once per attempt


def test_events_carry_method_and_host_as_operation(mode: str, clock: FakeClock) -> None:
    rec = RecordingListener()
    inner = Tracking([503, 200])
    run_transport(mode, retry(clock, listeners=[rec]), inner, url="http://svc.local:8080/x/1")
    events = rec.of(RetryScheduled)
    assert [e.operation for e in events] == ["GET svc.local:8080"]


def test_resends_are_span_events_next_to_the_retry_events(mode: str, clock: FakeClock) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    listener = rs.instrumentation.OpenTelemetry(tracer_provider=provider)
    inner = Tracking([503, 503, 200])
    with provider.get_tracer("test").start_as_current_span("checkout"):
        run_transport(mode, retry(clock, listeners=[listener]), inner)
    (span,) = exporter.get_finished_spans()
    names = [e.name for e in span.events]
    assert names == [
        "resilience.retry",
        "resilience.http.resend",
        "resilience.retry",
        "resilience.http.resend",
    ]
    resends = [e.attributes for e in span.events if e.name == "resilience.http.resend"]
    assert [a["http.request.resend_count"] for a in resends if a] == [1, 2]


# -- parsing and configuration -----------------------------------------------------------------


def test_parse_retry_after_values() -> None:
    assert parse_retry_after("0", 0.0) == 0.0
    assert parse_retry_after(" 30 ", 0.0) == 30.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:00 GMT", 0.0) == 60.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:00 -0000", 0.0) == 60.0
    for bad in (None, "", "1e3", "12345678901", "Thu, 99 Foo 1970", "0x10"):
        assert parse_retry_after(bad, 0.0) is None


def test_ratelimit_field_values() -> None:
    assert ratelimit_reset('"default";r=0;t=30') == 30.0
    assert ratelimit_reset("default;r=0;t=30") == 30.0
    assert ratelimit_reset('"a";r=1;t=30') is None
    assert ratelimit_reset('"a";r=0;t=-1') is None
    assert ratelimit_reset(None) is None
    assert ratelimit_reset('"unterminated;r=0;t=3') is None


def test_configuration_errors() -> None:
    with pytest.raises(rs.ConfigurationError):
        ResilientTransport()
    with pytest.raises(rs.ConfigurationError):
        ResilientTransport("retry")  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError, match="AsyncResilientTransport"):
        ResilientTransport(http_retry(), transport=httpx.AsyncHTTPTransport())  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError, match=r"use ResilientTransport for that"):
        AsyncResilientTransport(http_retry(), transport=httpx.HTTPTransport())  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError, match=r"BaseTransport, got 'x'$"):
        ResilientTransport(http_retry(), transport="x")  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError):
        http_retry(statuses={700})
    with pytest.raises(rs.ConfigurationError):
        http_retry(max_retry_after=-1)
    with pytest.raises(rs.ConfigurationError):
        ResilientTransport(per_host=lambda host: "nope", transport=Tracking([200])).handle_request(  # type: ignore[arg-type,return-value]
            httpx.Request("GET", "http://x/")
        )
