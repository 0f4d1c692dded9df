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
``resilience.hedge.cancelled``       counter      ``resilience.policy``, ``resilience.pipeline``;
                                                  hedged attempts cancelled (they lost)
``resilience.chaos.delay``           histogram    ``resilience.policy``, ``resilience.pipeline``;
                                                  latency injected by ``chaos.Latency``
``resilience.call.duration``         histogram    ``resilience.policy``, ``resilience.pipeline``,
                                                  ``resilience.operation``,
                                                  ``resilience.outcome``, ``error.type``;
                                                  every protected call (``call_metrics``)
``resilience.bulkhead.in_use``       gauge        ``resilience.policy`` (observed policies)
``resilience.bulkhead.capacity``     gauge        ``resilience.policy``
``resilience.bulkhead.queued``       gauge        ``resilience.policy``
``resilience.concurrency.limit``     gauge        ``resilience.policy`` (adaptive concurrency)
``resilience.concurrency.in_flight`` gauge        ``resilience.policy``
``resilience.ratelimit.remaining``   gauge        ``resilience.policy``,
                                                  ``resilience.ratelimit.key``
``resilience.throttle.probability``  gauge        ``resilience.policy`` (adaptive throttle)
===================================  ===========  =========================================

Every event is also added as a span event named ``resilience.<kind>`` to the current span (the
HTTP / gRPC / application span the call runs in), with the same attributes plus the event's
numeric fields (``resilience.attempt``, ``resilience.delay``, ...). A chaos injection carries
``resilience.chaos.injection`` (``fault``, ``latency``, ``outcome``, ``behavior``) on the
counter and the span event, and a hedge won carries the winning ``resilience.attempt`` (1: the
first attempt) on the counter too. With ``standalone_spans=True``,
an event that happens outside any recording span gets a short span of its own instead.
With ``attempt_spans=True``, each attempt of the protected function runs in a child span of the
current span (``resilience.attempt``, ``http.request.resend_count`` on resends, ``error.type``).

Attributes are low-cardinality by construction: policy and pipeline names are configured, the
operation is a function qualname / route template / RPC method, ``error.type`` is a class name.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from ..events import (
    CallCompleted,
    ChaosInjected,
    CircuitStateChanged,
    Event,
    HedgeCancelled,
    HedgeWon,
    Origin,
    RateLimitWaited,
    RecordsEvicted,
    RetryScheduled,
    error_type,
)
from ._gauges import Gauges

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
    if isinstance(event, ChaosInjected):
        attrs["resilience.chaos.injection"] = event.injection
    elif isinstance(event, HedgeWon):  # bounded by the hedge's attempts
        attrs["resilience.attempt"] = event.attempt
    return attrs


class OpenTelemetry:
    """A listener that records events as OpenTelemetry metrics and span events.

    Attach it to the outermost policy or pipeline of a composition (or to any policy inside a
    pipeline) to also get the ``resilience.call.duration`` histogram of every call.

    Args:
        tracer_provider: defaults to the global one.
        meter_provider: defaults to the global one.
        standalone_spans: give events outside any recording span a span of their own.
        call_metrics: record ``resilience.call.duration`` for every protected call (the
            :class:`~resilience.events.CallCompleted` event); ``False`` keeps the
            composition's calls unmeasured.
        attempt_spans: run each attempt of the protected function in a child span of the
            current span (off by default).
        observe: policies whose state is reported by observable gauges: bulkheads, adaptive
            concurrency limiters, adaptive throttles, rate limiters (their global bucket;
            :meth:`observe` takes keys).

    Example:
        >>> import resilience as rs
        >>> gate = rs.Bulkhead("db", max_concurrent=10)
        >>> otel = rs.instrumentation.OpenTelemetry(observe=[gate])
        >>> retry = rs.Retry(on=ConnectionError, listeners=[otel])
    """

    #: Whether compositions report a :class:`~resilience.events.CallCompleted` to this listener.
    call_events: bool
    #: Whether compositions run each attempt under :meth:`start_attempt` / :meth:`end_attempt`.
    attempt_spans: bool

    def __init__(
        self,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        *,
        standalone_spans: bool = False,
        call_metrics: bool = True,
        attempt_spans: bool = False,
        observe: Sequence[object] = (),
    ) -> None:
        from opentelemetry import context, metrics, trace

        from .. import __version__

        self._trace = trace
        self._context = context
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
        self._hedges_cancelled = meter.create_counter(
            "resilience.hedge.cancelled",
            unit="{attempt}",
            description="Hedged attempts cancelled because another attempt answered first",
        )
        self._chaos_delay = meter.create_histogram(
            "resilience.chaos.delay", unit="s", description="Latency injected by chaos policies"
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
        self.call_events = bool(call_metrics)
        self.attempt_spans = bool(attempt_spans)
        self._duration = meter.create_histogram(
            "resilience.call.duration",
            unit="s",
            description="Duration of protected calls, by outcome",
        )
        self._gauges = Gauges(meter)
        for policy in observe:
            self.observe(policy)

    def observe(self, policy: object, *, keys: Sequence[str | None] = (None,)) -> None:
        """Report ``policy``'s state with observable gauges, read at each collection.

        A :class:`resilience.Bulkhead`: ``resilience.bulkhead.in_use`` / ``.capacity`` /
        ``.queued``; a :class:`resilience.AdaptiveConcurrency`: ``resilience.concurrency.limit``
        / ``.in_flight``; a :class:`resilience.AdaptiveThrottle`:
        ``resilience.throttle.probability`` (its ``rejection_probability()``, with a store one
        round trip per collection); a :class:`resilience.RateLimiter`:
        ``resilience.ratelimit.remaining``
        for each of ``keys`` (``None`` is the global bucket; keys are attribute values, so list
        a bounded set). Reading a limiter's remaining permits is a zero-cost check
        (``try_acquire(key, cost=0)``): it charges nothing, but with a store it is a round trip
        per key and collection.

        Raises:
            ConfigurationError: ``policy`` is none of those.
        """
        self._gauges.add(policy, tuple(keys))

    def start_attempt(self, origin: Origin, attempt: int) -> Any:
        """Open the span of attempt ``attempt`` (1-based) of a call and make it current (called
        by the composition when :attr:`attempt_spans` is true); returns the token for
        :meth:`end_attempt`."""
        attrs: dict[str, Any] = {
            "resilience.policy": origin["policy"],
            "resilience.operation": origin["operation"],
            "resilience.attempt": attempt,
        }
        if origin["pipeline"] is not None:
            attrs["resilience.pipeline"] = origin["pipeline"]
        if attempt > 1:
            attrs["http.request.resend_count"] = attempt - 1
        span = self._tracer.start_span("resilience.attempt", attributes=attrs)
        token = self._context.attach(self._trace.set_span_in_context(span))
        return (span, token)

    def end_attempt(self, token: Any, exc: BaseException | None, /) -> None:
        """Close the span opened by :meth:`start_attempt` with the attempt's outcome."""
        span, ctx_token = token
        try:
            if exc is None:
                span.set_attribute("resilience.outcome", "success")
            else:
                etype = error_type(exc) or "_OTHER"
                span.set_attribute("resilience.outcome", "error")
                span.set_attribute("error.type", etype)
                span.record_exception(exc)
                span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, etype))
        finally:
            span.end()
            self._context.detach(ctx_token)

    def _call_completed(self, event: CallCompleted) -> None:
        attrs: dict[str, Any] = {
            "resilience.policy": event.policy,
            "resilience.operation": event.operation,
            "resilience.outcome": event.outcome,
        }
        if event.pipeline is not None:
            attrs["resilience.pipeline"] = event.pipeline
        if event.error_type is not None:
            attrs["error.type"] = event.error_type
        self._duration.record(event.duration, attrs)

    def _observe_states(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        with self._lock:
            items = list(self._states.items())
        return [Observation(v, {"resilience.policy": k}) for k, v in items]

    def __call__(self, event: Event, /) -> None:
        """Record one event."""
        if isinstance(event, CallCompleted):  # every call: the histogram only
            self._call_completed(event)
            return
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
        elif isinstance(event, HedgeCancelled):
            self._hedges_cancelled.add(event.attempts, metric_attrs)
        elif isinstance(event, ChaosInjected) and event.delay is not None:
            self._chaos_delay.record(event.delay, metric_attrs)
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
