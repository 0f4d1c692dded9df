"""Per-call telemetry: the call-duration histogram, attempt spans and the state gauges."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import resilience as rs
from resilience import _calls
from resilience.events import CallCompleted, Event
from resilience.testing import FakeClock, RecordingListener

from ..conftest import Runner, Step

OTel = rs.instrumentation.OpenTelemetry


class Telemetry:
    """An OpenTelemetry listener on the SDK's in-memory span exporter and metric reader."""

    def __init__(self, **options: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.listener = OTel(
            tracer_provider=self.tracer_provider,
            meter_provider=MeterProvider(metric_readers=[self.reader]),
            **options,
        )

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        out: list[Any] = []
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        out.extend(metric.data.data_points)
        return out

    def durations(self) -> dict[tuple[tuple[str, Any], ...], Any]:
        return {
            tuple(sorted(p.attributes.items())): p for p in self.points("resilience.call.duration")
        }


@pytest.fixture
def tel(clock: FakeClock) -> Iterator[Telemetry]:
    # durations on the fake clock: the policies' own, and the process clock for the
    # compositions without one
    with rs.testing.testing_mode(clock=clock):
        yield Telemetry()


def _run(runner: Runner, fn: Any, *args: Any) -> Any:
    if runner.is_async:
        return asyncio.run(fn(*args))
    return fn(*args)


def test_one_duration_point_per_decorated_call(
    tel: Telemetry, runner: Runner, clock: FakeClock
) -> None:
    pipeline = rs.Pipeline(
        rs.Retry(on=OSError, attempts=3, backoff=rs.backoff.constant(0.5), clock=clock),
        name="inventory",
        listeners=[tel.listener],
    )
    fn = runner.scripted([Step(OSError("a"), 1.0), Step("ok", 2.0)])
    wrapped = pipeline(fn)
    assert _run(runner, wrapped) == "ok"
    assert _run(runner, wrapped) == "ok"
    (point,) = tel.points("resilience.call.duration")
    assert dict(point.attributes) == {
        "resilience.policy": "inventory",
        "resilience.pipeline": "inventory",
        "resilience.operation": fn.__qualname__,
        "resilience.outcome": "success",
    }
    assert point.count == 2
    # first call: 1.0 + 0.5 backoff + 2.0; second call: 2.0 (the script's last step repeats)
    assert point.sum == pytest.approx(5.5)
    # the events counter is unchanged by call telemetry: only the retry is counted
    (counted,) = tel.points("resilience.events")
    assert counted.attributes["resilience.event"] == "retry"


def test_outcomes_success_error_and_rejected(tel: Telemetry, runner: Runner) -> None:
    breaker = rs.CircuitBreaker("payments", failure_count=1, listeners=[tel.listener])
    boom = runner.scripted([ValueError("no")])
    with pytest.raises(ValueError):
        runner.run(breaker, boom)
    with pytest.raises(rs.CircuitOpenError):
        runner.run(breaker, boom)
    points = tel.durations()
    outcomes = {dict(k)["resilience.outcome"]: dict(k).get("error.type") for k in points}
    assert outcomes == {"error": "ValueError", "rejected": "resilience.errors.CircuitOpenError"}
    assert all(p.count == 1 for p in points.values())
    assert all(dict(k)["resilience.policy"] == "payments" for k in points)
    assert all("resilience.pipeline" not in dict(k) for k in points)


def test_a_refusal_after_an_attempt_ran_is_an_error(
    tel: Telemetry, runner: Runner, clock: FakeClock
) -> None:
    policy = rs.Pipeline(
        rs.Retry(on=OSError, attempts=3, backoff=rs.backoff.constant(0), clock=clock),
        rs.CircuitBreaker("b", failure_count=1, clock=clock),
        name="p",
        listeners=[tel.listener],
    )
    fn = runner.scripted([OSError("down")])
    with pytest.raises(rs.CircuitOpenError):
        runner.run(policy, fn)
    assert len(runner.calls) == 1  # the second attempt was refused by the open breaker
    (key,) = tel.durations()
    assert dict(key)["resilience.outcome"] == "error"  # but the call itself did run
    assert dict(key)["error.type"] == "resilience.errors.CircuitOpenError"


def test_only_listeners_asking_for_calls_receive_them(tel: Telemetry, runner: Runner) -> None:
    rec = RecordingListener()
    policy = rs.Pipeline(rs.Timeout(5), name="p", listeners=[rec, tel.listener])
    assert runner.run(policy, runner.scripted(["ok"])) == "ok"
    assert rec.events == []
    assert len(tel.points("resilience.call.duration")) == 1


def test_a_listener_inside_the_pipeline_gets_the_whole_call(tel: Telemetry, runner: Runner) -> None:
    policy = rs.Pipeline(
        rs.Timeout(5, listeners=[tel.listener]),
        rs.Retry(on=OSError, attempts=2, listeners=[tel.listener]),
        name="nested",
    )
    assert runner.run(policy, runner.scripted(["ok"])) == "ok"
    ((key, point),) = tel.durations().items()
    assert point.count == 1  # one listener, even attached twice
    assert dict(key)["resilience.pipeline"] == "nested"


def test_stacked_decorators_are_timed_once(tel: Telemetry, runner: Runner) -> None:
    inner_seen: list[Event] = []

    class CallsOnly:
        call_events = True

        def __call__(self, event: Event) -> None:
            inner_seen.append(event)

    fn = runner.scripted(["ok"])
    inner = rs.Timeout(5, name="inner", listeners=[CallsOnly()])(fn)
    outer = rs.Retry(on=OSError, name="outer", listeners=[tel.listener])(inner)
    assert _run(runner, outer) == "ok"
    ((key, point),) = tel.durations().items()
    assert point.count == 1
    assert dict(key)["resilience.policy"] == "outer"
    (event,) = inner_seen  # the inner decorator's listener: the same single call
    assert isinstance(event, CallCompleted)
    assert event.policy == "outer"
    assert _run(runner, inner) == "ok"  # the inner decorated function alone still reports
    assert [e.policy for e in inner_seen] == ["outer", "inner"]


def test_wrap_names_the_operation(tel: Telemetry, runner: Runner) -> None:
    policy = rs.Retry(on=OSError, name="http", listeners=[tel.listener])
    call = policy.wrap(runner.scripted(["ok"]), operation="GET api.example.com")
    assert _run(runner, call) == "ok"
    (key,) = tel.durations()
    assert dict(key)["resilience.operation"] == "GET api.example.com"


def test_call_metrics_off_builds_the_plain_composition(runner: Runner) -> None:
    tel = Telemetry(call_metrics=False)
    wrapped = rs.Retry(on=OSError, listeners=[tel.listener])(runner.scripted(["ok"]))
    assert _run(runner, wrapped) == "ok"
    assert tel.points("resilience.call.duration") == []
    assert not hasattr(wrapped, "__resilience_calls__")
    assert wrapped.__code__.co_name != "resilience_call"


def test_no_listener_means_no_hook() -> None:
    def f() -> int:
        return 1

    policy = rs.Pipeline(rs.Timeout(1), rs.Retry(on=OSError))
    assert _calls.calls_of(policy, f, policy._emitter(None, f)) is None
    wrapped = policy(f)
    assert wrapped.__code__.co_name != "resilience_call"
    assert not hasattr(wrapped, "__resilience_calls__")


def test_attempt_spans_are_children_of_the_current_span(runner: Runner, clock: FakeClock) -> None:
    tel = Telemetry(attempt_spans=True)
    policy = rs.Pipeline(
        rs.Retry(on=OSError, attempts=3, backoff=rs.backoff.constant(0), clock=clock),
        name="orders",
        listeners=[tel.listener],
    )
    fn = runner.scripted([OSError("a"), TimeoutError("b"), "ok"])
    tracer = tel.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request") as parent:
        assert runner.run(policy, fn) == "ok"
    spans = tel.exporter.get_finished_spans()
    attempts = [s for s in spans if s.name == "resilience.attempt"]
    assert len(attempts) == 3
    parent_id = parent.get_span_context().span_id
    assert all(s.parent is not None and s.parent.span_id == parent_id for s in attempts)
    attrs = [dict(s.attributes or {}) for s in attempts]
    assert [a["resilience.attempt"] for a in attrs] == [1, 2, 3]
    assert [a.get("http.request.resend_count") for a in attrs] == [None, 1, 2]
    assert [a["resilience.outcome"] for a in attrs] == ["error", "error", "success"]
    assert [a.get("error.type") for a in attrs] == ["OSError", "TimeoutError", None]
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert {a["resilience.pipeline"] for a in attrs} == {"orders"}


def test_attempt_spans_are_off_by_default(tel: Telemetry, runner: Runner) -> None:
    policy = rs.Retry(on=OSError, attempts=2, listeners=[tel.listener])
    assert runner.run(policy, runner.scripted(["ok"])) == "ok"
    assert tel.exporter.get_finished_spans() == ()


def test_a_failing_attempt_listener_never_breaks_the_call(
    runner: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        attempt_spans = True

        def __call__(self, event: Event) -> None:
            pass

        def start_attempt(self, origin: Any, attempt: int) -> Any:
            raise RuntimeError("broken tracer")

        def end_attempt(self, token: Any, exc: BaseException | None) -> None:
            raise AssertionError("never started")

    assert runner.run(rs.Timeout(5, listeners=[Broken()]), runner.scripted(["ok"])) == "ok"
    assert "start_attempt" in caplog.text


def test_bulkhead_and_adaptive_gauges_read_the_policies() -> None:
    gate = rs.Bulkhead("db", max_concurrent=3)
    adaptive = rs.AdaptiveConcurrency("api", initial_limit=7, min_limit=2, max_limit=20)
    tel = Telemetry(observe=[gate, adaptive])

    def value(name: str) -> list[tuple[int, dict[str, Any]]]:
        return [(p.value, dict(p.attributes)) for p in tel.points(name)]

    seen: dict[str, Any] = {}

    def inside() -> None:
        seen["in_use"] = value("resilience.bulkhead.in_use")
        seen["in_flight"] = value("resilience.concurrency.in_flight")

    gate.call(adaptive.call, inside)
    assert seen["in_use"] == [(1, {"resilience.policy": "db"})]
    assert seen["in_flight"] == [(1, {"resilience.policy": "api"})]
    assert value("resilience.bulkhead.in_use") == [(0, {"resilience.policy": "db"})]
    assert value("resilience.bulkhead.capacity") == [(3, {"resilience.policy": "db"})]
    assert value("resilience.bulkhead.queued") == [(0, {"resilience.policy": "db"})]
    assert value("resilience.concurrency.limit") == [(adaptive.limit, {"resilience.policy": "api"})]


def test_limiter_remaining_for_the_configured_keys(clock: FakeClock) -> None:
    limiter = rs.RateLimiter("api", rate=5, clock=clock)
    tel = Telemetry()
    tel.listener.observe(limiter, keys=[None, "alice"])
    limiter.try_acquire()
    limiter.try_acquire("alice", cost=3)
    points = {
        p.attributes.get("resilience.ratelimit.key"): p.value
        for p in tel.points("resilience.ratelimit.remaining")
    }
    assert points == {None: 4, "alice": 2}
    assert limiter.try_acquire("alice", cost=2).allowed  # observing charged nothing


def test_observe_refuses_other_policies() -> None:
    tel = Telemetry()
    with pytest.raises(rs.ConfigurationError):
        tel.listener.observe(rs.Retry(on=OSError))
    with pytest.raises(rs.ConfigurationError):
        tel.listener.observe(rs.RateLimiter("api", rate=1), keys=[3])  # type: ignore[list-item]


def test_events_flow_through_an_httpx_transport_pipeline(clock: FakeClock) -> None:
    import httpx

    from interceptors.httpx import ResilientTransport, http_retry

    tel = Telemetry(attempt_spans=True)
    statuses = iter([503, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(statuses))

    pipeline = rs.Pipeline(
        http_retry(attempts=2, backoff=rs.backoff.constant(0), clock=clock),
        name="inventory",
        listeners=[tel.listener],
    )
    transport = ResilientTransport(pipeline, transport=httpx.MockTransport(handler))
    with httpx.Client(transport=transport) as client:
        assert client.get("http://service.local/items").status_code == 200
    ((key, point),) = tel.durations().items()
    assert point.count == 1
    assert dict(key)["resilience.operation"] == "GET service.local"
    assert dict(key)["resilience.outcome"] == "success"
    attempts = [s for s in tel.exporter.get_finished_spans() if s.name == "resilience.attempt"]
    assert [dict(s.attributes or {}).get("http.request.resend_count") for s in attempts] == [
        None,
        1,
    ]
