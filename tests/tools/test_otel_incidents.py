"""OpenTelemetry for chaos, hedging, adaptive throttling and locks: the SDK's in-memory
exporters see the injection kind, the hedge's winner and cancellations, the throttle's
rejections and probability, and the lock's refusals."""

from __future__ import annotations

import random
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import resilience as rs
from resilience.simulate import SimClock, run_virtual
from resilience.testing import FakeClock


class Telemetry:
    """An OpenTelemetry listener on the SDK's in-memory span exporter and metric reader."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.listener = rs.instrumentation.OpenTelemetry(
            tracer_provider=self.tracer_provider,
            meter_provider=MeterProvider(metric_readers=[self.reader]),
        )

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [
            p
            for rm in (data.resource_metrics if data is not None else ())
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == name
            for p in m.data.data_points
        ]


def events(tel: Telemetry) -> dict[str, list[dict[str, Any]]]:
    """``resilience.events`` points by event kind: each point's attributes plus its value."""
    out: dict[str, list[dict[str, Any]]] = {}
    for p in tel.points("resilience.events"):
        attrs = dict(p.attributes)
        out.setdefault(attrs["resilience.event"], []).append({**attrs, "value": p.value})
    return out


def span_events(tel: Telemetry, name: str) -> list[dict[str, Any]]:
    return [
        dict(e.attributes or {})
        for s in tel.exporter.get_finished_spans()
        for e in s.events
        if e.name == name
    ]


def test_chaos_injections_carry_their_kind_and_latency_is_a_histogram() -> None:
    tel = Telemetry()
    clock = FakeClock()
    fault = rs.chaos.Fault(rate=1.0, error=OSError, name="drop", listeners=[tel.listener])
    slow = rs.chaos.Latency(
        rate=1.0, seconds=0.25, name="slow", clock=clock, listeners=[tel.listener]
    )
    with tel.tracer_provider.get_tracer("t").start_as_current_span("request"):
        with pytest.raises(OSError):
            fault.call(lambda: "ok")
        assert slow.call(lambda: "ok") == "ok"
    chaos = {p["resilience.policy"]: p for p in events(tel)["chaos"]}
    assert chaos["drop"]["resilience.chaos.injection"] == "fault"
    assert chaos["slow"]["resilience.chaos.injection"] == "latency"
    (delay,) = tel.points("resilience.chaos.delay")
    assert (dict(delay.attributes), delay.count, delay.sum) == (
        {"resilience.policy": "slow"},
        1,
        pytest.approx(0.25),
    )
    spans = span_events(tel, "resilience.chaos")
    assert [s["resilience.chaos.injection"] for s in spans] == ["fault", "latency"]
    assert spans[1]["resilience.delay"] == pytest.approx(0.25)


def test_a_hedge_reports_started_won_and_cancelled() -> None:
    tel = Telemetry()
    clock = SimClock()
    latencies = iter([1.0, 0.05, 0.05])  # the first attempt is slow: a hedge wins

    async def fetch() -> str:
        await clock.asleep(next(latencies))
        return "ok"

    hedge = rs.Hedge(delay=0.1, attempts=3, clock=clock, name="search", listeners=[tel.listener])

    async def main() -> str:
        with tel.tracer_provider.get_tracer("t").start_as_current_span("request"):
            return await hedge.acall(fetch)

    assert run_virtual(main(), clock) == "ok"
    by_kind = events(tel)
    (started,) = by_kind["hedge"]
    assert (started["resilience.reason"], started["value"]) == ("delay", 1)
    (won,) = by_kind["hedge_won"]
    assert won["resilience.attempt"] == 2  # the winner: the hedge, not the first attempt
    assert by_kind["hedge_cancelled"][0]["value"] == 1
    (cancelled,) = tel.points("resilience.hedge.cancelled")
    assert (dict(cancelled.attributes), cancelled.value) == ({"resilience.policy": "search"}, 1)
    (span_won,) = span_events(tel, "resilience.hedge_won")
    assert (span_won["resilience.attempt"], span_won["resilience.attempts"]) == (2, 2)


def test_cancelled_hedges_count_every_attempt() -> None:
    tel = Telemetry()
    clock = SimClock()
    latencies = iter([0.5, 1.0, 1.0])  # two hedges sent, the first attempt answers

    async def fetch() -> str:
        await clock.asleep(next(latencies))
        return "ok"

    hedge = rs.Hedge(delay=0.1, attempts=3, clock=clock, listeners=[tel.listener])
    assert run_virtual(hedge.acall(fetch), clock) == "ok"
    (won,) = events(tel)["hedge_won"]
    assert won["resilience.attempt"] == 1
    (cancelled,) = tel.points("resilience.hedge.cancelled")
    assert cancelled.value == 2  # one event, two attempts


def test_throttle_rejections_and_probability() -> None:
    tel = Telemetry()
    throttle = rs.AdaptiveThrottle(
        "search",
        on=ConnectionError,
        k=1.0,
        clock=FakeClock(),
        random=random.Random(0),
        listeners=[tel.listener],
    )
    tel.listener.observe(throttle)

    def overloaded() -> None:
        raise ConnectionError("overloaded")

    for _ in range(50):
        with pytest.raises((ConnectionError, rs.ThrottledError)):
            throttle.call(overloaded)
    (rejected,) = events(tel)["rejected"]
    assert rejected["resilience.reason"] == "throttled"
    assert rejected["value"] > 0
    (probability,) = tel.points("resilience.throttle.probability")
    assert dict(probability.attributes) == {"resilience.policy": "search"}
    assert probability.value == pytest.approx(throttle.rejection_probability())
    assert probability.value > 0.5


def test_a_throttle_whose_store_fails_is_skipped_by_the_gauge() -> None:
    class Unreadable(rs.AdaptiveThrottle):
        def rejection_probability(self) -> float:
            raise rs.StoreError("down")

    tel = Telemetry()
    tel.listener.observe(Unreadable("broken", on=ConnectionError, clock=FakeClock()))
    tel.listener.observe(rs.AdaptiveThrottle("fine", on=ConnectionError, clock=FakeClock()))
    points = tel.points("resilience.throttle.probability")
    assert [(dict(p.attributes), p.value) for p in points] == [({"resilience.policy": "fine"}, 0)]


def test_lock_refusals_and_losses() -> None:
    tel = Telemetry()
    lock = rs.Lock("orders", ttl=30, clock=FakeClock(), listeners=[tel.listener])
    with lock.hold("o-1"), pytest.raises(rs.LockHeldError), lock.hold("o-1"):
        pass
    (refused,) = events(tel)["lock_rejected"]
    assert (refused["resilience.policy"], refused["resilience.reason"]) == ("orders", "lock_held")


def test_an_async_hedge_inside_a_pipeline_names_the_pipeline() -> None:
    tel = Telemetry()
    clock = SimClock()
    latencies = iter([1.0, 0.05])

    async def fetch() -> str:
        await clock.asleep(next(latencies))
        return "ok"

    policy = rs.Pipeline(rs.Hedge(delay=0.1, clock=clock), name="api", listeners=[tel.listener])
    assert run_virtual(policy.acall(fetch), clock) == "ok"
    (cancelled,) = tel.points("resilience.hedge.cancelled")
    assert dict(cancelled.attributes) == {
        "resilience.policy": "hedge",
        "resilience.pipeline": "api",
    }
