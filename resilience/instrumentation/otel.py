"""OpenTelemetry listener: events → metrics and span events, using only ``opentelemetry-api``.

Metrics (instrument names are stable; units are seconds):

===================================  ===========  =========================================
instrument                           kind         attributes
===================================  ===========  =========================================
``resilience.events``                counter      ``resilience.event``, ``resilience.policy``,
                                                  ``resilience.pipeline``, ``resilience.reason``,
                                                  ``error.type``
``resilience.retry.delay``           histogram    ``resilience.policy``, ``resilience.pipeline``
``resilience.ratelimit.wait``        histogram    ``resilience.policy``, ``resilience.pipeline``
``resilience.circuit.state``         gauge        ``resilience.policy``; 0 closed, 1 open,
                                                  2 half-open
``resilience.records.evicted``       counter      ``resilience.policy``, ``resilience.pipeline``;
                                                  records evicted early by a full memory store
===================================  ===========  =========================================

Every event is also added as a span event named ``resilience.<kind>`` to the current span (the
HTTP / gRPC / application span the call runs in), with the same attributes plus the event's
numeric fields (``resilience.attempt``, ``resilience.delay``, ...). With ``standalone_spans=True``,
an event that happens outside any recording span gets a short span of its own instead.

Attributes are low-cardinality by construction: policy and pipeline names are configured, the
operation is a function qualname / route template / RPC method, ``error.type`` is a class name.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable
from typing import Any

from ..events import (
    CircuitStateChanged,
    Event,
    RateLimitWaited,
    RecordsEvicted,
    RetryScheduled,
)

__all__ = ["OpenTelemetry"]

_STATE_VALUE = {"closed": 0, "open": 1, "half_open": 2}
_IDENTITY = ("policy", "pipeline", "operation")


def _attributes(event: Event) -> dict[str, Any]:
    attrs: dict[str, Any] = {"resilience.event": event.kind, "resilience.policy": event.policy}
    if event.pipeline is not None:
        attrs["resilience.pipeline"] = event.pipeline
    reason = getattr(event, "reason", None)
    if isinstance(reason, str):
        attrs["resilience.reason"] = reason
    etype = getattr(event, "error_type", None)
    if isinstance(etype, str):
        attrs["error.type"] = etype
    if isinstance(event, CircuitStateChanged):
        attrs["resilience.circuit.from"] = event.from_state
        attrs["resilience.circuit.to"] = event.to_state
    decision = getattr(event, "decision", None)
    if isinstance(decision, str):
        attrs["resilience.decision"] = decision
    return attrs


class OpenTelemetry:
    """A listener that records events as OpenTelemetry metrics and span events.

    Args:
        tracer_provider: defaults to the global one.
        meter_provider: defaults to the global one.
        standalone_spans: give events outside any recording span a span of their own.

    Example:
        >>> import resilience as rs
        >>> otel = rs.instrumentation.OpenTelemetry()
        >>> retry = rs.Retry(on=ConnectionError, listeners=[otel])
    """

    def __init__(
        self,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        *,
        standalone_spans: bool = False,
    ) -> None:
        from opentelemetry import metrics, trace

        from .. import __version__

        self._trace = trace
        self._tracer = trace.get_tracer("resilience", __version__, tracer_provider)
        meter = metrics.get_meter("resilience", __version__, meter_provider)
        self._events = meter.create_counter(
            "resilience.events", unit="{event}", description="Resilience policy events"
        )
        self._retry_delay = meter.create_histogram(
            "resilience.retry.delay", unit="s", description="Delay before a retry"
        )
        self._wait = meter.create_histogram(
            "resilience.ratelimit.wait", unit="s", description="Time waited for a permit"
        )
        self._evicted = meter.create_counter(
            "resilience.records.evicted",
            unit="{record}",
            description="Records evicted before their TTL by a full in-memory store",
        )
        self._states: dict[str, int] = {}
        self._lock = threading.Lock()
        meter.create_observable_gauge(
            "resilience.circuit.state",
            callbacks=[self._observe_states],
            unit="1",
            description="Circuit state: 0 closed, 1 open, 2 half-open",
        )
        self._standalone = standalone_spans

    def _observe_states(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        with self._lock:
            items = list(self._states.items())
        return [Observation(v, {"resilience.policy": k}) for k, v in items]

    def __call__(self, event: Event, /) -> None:
        """Record one event."""
        attrs = _attributes(event)
        self._events.add(1, attrs)
        metric_attrs = {
            k: v for k, v in attrs.items() if k in ("resilience.policy", "resilience.pipeline")
        }
        if isinstance(event, RetryScheduled):
            self._retry_delay.record(event.delay, metric_attrs)
        elif isinstance(event, RateLimitWaited):
            self._wait.record(event.wait, metric_attrs)
        elif isinstance(event, RecordsEvicted):
            self._evicted.add(event.count, metric_attrs)
        elif isinstance(event, CircuitStateChanged):
            with self._lock:
                self._states[event.policy] = _STATE_VALUE.get(event.to_state, -1)
        span_attrs = dict(attrs)
        if event.operation:
            span_attrs["resilience.operation"] = event.operation
        for f in dataclasses.fields(event):
            if f.name in _IDENTITY:
                continue
            value = getattr(event, f.name)
            if isinstance(value, bool | int | float) and value is not None:
                span_attrs[f"resilience.{f.name}"] = value
        span = self._trace.get_current_span()
        name = f"resilience.{event.kind}"
        if span.is_recording():
            span.add_event(name, span_attrs)
        elif self._standalone:
            with self._tracer.start_as_current_span(name, attributes=span_attrs):
                pass
