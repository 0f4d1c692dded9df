"""OpenTelemetry listener, checked with the SDK's in-memory exporters."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import resilience as rs
from resilience.events import CircuitStateChanged
from resilience.testing import FakeClock

from ..conftest import Runner


@pytest.fixture
def otel() -> tuple[
    rs.instrumentation.OpenTelemetry, InMemorySpanExporter, InMemoryMetricReader, TracerProvider
]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    listener = rs.instrumentation.OpenTelemetry(
        tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    return listener, exporter, reader, tracer_provider


def _points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    out: list[Any] = []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    out.extend(metric.data.data_points)
    return out


def test_retry_events_become_metrics_and_span_events(
    otel: Any, runner: Runner, clock: FakeClock
) -> None:
    listener, exporter, reader, tracer_provider = otel
    policy = rs.Pipeline(
        rs.Retry(on=OSError, attempts=3, backoff=rs.backoff.constant(0.5), clock=clock),
        name="inventory",
        listeners=[listener],
    )
    fn = runner.scripted([OSError("a"), OSError("b"), "ok"])
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request"):
        assert runner.run(policy, fn) == "ok"

    events = _points(reader, "resilience.events")
    assert len(events) == 1
    point = events[0]
    assert point.value == 2
    assert dict(point.attributes) == {
        "resilience.event": "retry",
        "resilience.policy": "retry",
        "resilience.pipeline": "inventory",
        "resilience.reason": "exception",
        "error.type": "OSError",
    }
    delays = _points(reader, "resilience.retry.delay")
    assert delays[0].count == 2
    assert delays[0].sum == pytest.approx(1.0)

    (span,) = exporter.get_finished_spans()
    assert [e.name for e in span.events] == ["resilience.retry", "resilience.retry"]
    attrs = dict(span.events[1].attributes or {})
    assert attrs["resilience.attempt"] == 2
    assert attrs["resilience.delay"] == 0.5
    assert attrs["resilience.operation"] == fn.__qualname__


def test_circuit_state_gauge(otel: Any) -> None:
    listener, _exporter, reader, _tp = otel
    listener(
        CircuitStateChanged(
            policy="payments", from_state="closed", to_state="open", reason="failure_ratio"
        )
    )
    (point,) = _points(reader, "resilience.circuit.state")
    assert point.value == 1
    assert dict(point.attributes) == {"resilience.policy": "payments"}


def test_standalone_spans_outside_any_span(otel: Any, clock: FakeClock) -> None:
    _listener, exporter, _reader, tracer_provider = otel
    listener = rs.instrumentation.OpenTelemetry(
        tracer_provider=tracer_provider, meter_provider=None, standalone_spans=True
    )
    with pytest.raises(rs.TimeoutExceededError):
        rs.Timeout(1, clock=clock, listeners=[listener]).call(lambda: clock.advance(2))
    (span,) = exporter.get_finished_spans()
    assert span.name == "resilience.timeout"
    assert dict(span.attributes or {})["resilience.timeout"] == 1.0


def test_early_evictions_become_a_metric(otel: Any, clock: FakeClock) -> None:
    listener, _exporter, reader, _tp = otel
    policy = rs.Idempotent(
        key=lambda k: k, max_entries=2, name="orders", clock=clock, listeners=[listener]
    )

    @policy
    def create(k: str) -> str:
        return k

    for k in "abcde":
        create(k)
    (point,) = _points(reader, "resilience.records.evicted")
    assert point.value == 3
    assert dict(point.attributes) == {"resilience.policy": "orders"}
    events = [
        p for p in _points(reader, "resilience.events")
        if p.attributes["resilience.event"] == "records_evicted"
    ]  # fmt: skip
    assert sum(p.value for p in events) == 3
