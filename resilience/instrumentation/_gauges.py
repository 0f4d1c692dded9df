"""Observable gauges reading policies' public state (bulkheads, adaptive concurrency, adaptive
throttles, rate limiters), for :class:`resilience.instrumentation.OpenTelemetry`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from ..errors import ConfigurationError

__all__ = ["Gauges"]

_log = logging.getLogger("resilience")


class Gauges:
    """The gauges of the observed policies (internal; see ``OpenTelemetry.observe``)."""

    def __init__(self, meter: Any) -> None:
        self._lock = threading.Lock()
        self._bulkheads: list[Any] = []
        self._adaptive: list[Any] = []
        self._throttles: list[Any] = []
        self._limiters: list[tuple[Any, tuple[str | None, ...]]] = []
        gauge = meter.create_observable_gauge
        gauge(
            "resilience.bulkhead.in_use",
            callbacks=[self._in_use],
            unit="{call}",
            description="Bulkhead slots currently held",
        )
        gauge(
            "resilience.bulkhead.capacity",
            callbacks=[self._capacity],
            unit="{call}",
            description="Bulkhead slots (max_concurrent)",
        )
        gauge(
            "resilience.bulkhead.queued",
            callbacks=[self._queued],
            unit="{call}",
            description="Callers waiting for a bulkhead slot",
        )
        gauge(
            "resilience.concurrency.limit",
            callbacks=[self._limit],
            unit="{call}",
            description="Adaptive concurrency: the current limit",
        )
        gauge(
            "resilience.concurrency.in_flight",
            callbacks=[self._in_flight],
            unit="{call}",
            description="Adaptive concurrency: calls admitted and not finished",
        )
        gauge(
            "resilience.throttle.probability",
            callbacks=[self._probability],
            unit="1",
            description="Adaptive throttle: probability of rejecting the next call",
        )
        gauge(
            "resilience.ratelimit.remaining",
            callbacks=[self._remaining],
            unit="{permit}",
            description="Rate limiter: whole permits available now, per configured key",
        )

    def add(self, policy: object, keys: tuple[str | None, ...]) -> None:
        """Observe ``policy`` (for a rate limiter: its ``keys``)."""
        from .._adaptive import AdaptiveConcurrency
        from .._bulkhead import Bulkhead
        from ..ratelimit import RateLimiter
        from ..throttle import AdaptiveThrottle

        for key in keys:
            if key is not None and not isinstance(key, str):
                raise ConfigurationError(f"limiter keys are str or None, got {key!r}")
        with self._lock:
            if isinstance(policy, Bulkhead):
                self._bulkheads.append(policy)
            elif isinstance(policy, AdaptiveConcurrency):
                self._adaptive.append(policy)
            elif isinstance(policy, AdaptiveThrottle):
                self._throttles.append(policy)
            elif isinstance(policy, RateLimiter):
                self._limiters.append((policy, keys))
            else:
                raise ConfigurationError(
                    "observe() takes a Bulkhead, an AdaptiveConcurrency, an AdaptiveThrottle or "
                    f"a RateLimiter, got {policy!r}"
                )

    @staticmethod
    def _points(items: Iterable[Any], read: Any) -> list[Any]:
        from opentelemetry.metrics import Observation

        return [Observation(read(p), {"resilience.policy": p.name}) for p in items]

    def _in_use(self, options: Any) -> Iterable[Any]:
        return self._points(list(self._bulkheads), lambda p: p.in_use)

    def _capacity(self, options: Any) -> Iterable[Any]:
        return self._points(list(self._bulkheads), lambda p: p.max_concurrent)

    def _queued(self, options: Any) -> Iterable[Any]:
        return self._points(list(self._bulkheads), lambda p: p.queued)

    def _limit(self, options: Any) -> Iterable[Any]:
        return self._points(list(self._adaptive), lambda p: p.limit)

    def _in_flight(self, options: Any) -> Iterable[Any]:
        return self._points(list(self._adaptive), lambda p: p.in_flight)

    def _probability(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        out: list[Any] = []
        for throttle in list(self._throttles):
            try:
                value = throttle.rejection_probability()
            except Exception:  # a failing store: skip this point, keep the others
                _log.warning("resilience: could not read %r", throttle)
                continue
            out.append(Observation(value, {"resilience.policy": throttle.name}))
        return out

    def _remaining(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        out: list[Any] = []
        for limiter, keys in list(self._limiters):
            for key in keys:
                try:
                    remaining = limiter.try_acquire(key, cost=0).remaining
                except Exception:  # a failing store: skip this point, keep the others
                    _log.warning("resilience: could not read %r for key %r", limiter, key)
                    continue
                attrs = {"resilience.policy": limiter.name}
                if key is not None:
                    attrs["resilience.ratelimit.key"] = key
                out.append(Observation(remaining, attrs))
        return out
