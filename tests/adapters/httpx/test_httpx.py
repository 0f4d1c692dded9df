"""httpx transports: breakers, per-host policies, events and spans, header parsing and
configuration errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import resilience as rs
from interceptors.httpx import (
    AsyncResilientTransport,
    ResilientTransport,
    http_retry,
    parse_retry_after,
)
from interceptors.httpx._hints import _ratelimit_reset as ratelimit_reset
from resilience import Emitter
from resilience.events import RetryScheduled
from resilience.testing import FakeClock, RecordingListener

from ..._asgi_apps import Reject
from .httpx_support import (
    Reply,
    ScriptedApp,
    Tracking,
    fetch,
    retry,
    run_transport,
)

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

    def wrap_sync(self, fn: Callable[..., Any], em: Emitter) -> Callable[..., Any]:
        def counting(*args: Any) -> Any:
            self.calls += 1
            return fn(*args)

        return counting

    def wrap_async(
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
