"""The live-state collector behind the dashboard: a listener that keeps, per named policy, the
last minute of per-second counts, the circuit state and its transitions.

Nothing is collected unless :class:`Live` is attached as a listener (``listeners=[live]`` on a
policy or on a pipeline, which covers every policy inside it): a policy without listeners
builds no events and pays nothing. Memory is bounded: at most ``max_policies`` names (later
names are counted in ``dropped``), ``WINDOW`` seconds of history and ``TRANSITIONS``
transitions per policy.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .._clock import Clock, resolve_clock
from ..errors import ConfigurationError
from ..events import (
    CallRejected,
    CircuitStateChanged,
    Event,
    FallbackUsed,
    IdempotentReplay,
    RateLimitWaited,
    RecordsEvicted,
    RetriesExhausted,
    RetryScheduled,
    StoreFailed,
    TimeoutElapsed,
)

__all__ = ["METRICS", "TRANSITIONS", "WINDOW", "Live", "default_live"]

#: Seconds of per-second history kept (and sent) per metric.
WINDOW = 60
#: Transitions kept per policy (the most recent).
TRANSITIONS = 20
#: Seconds the latency percentiles are computed over.
LATENCY_WINDOW = 10
#: The per-second counters of every policy, in the order the dashboard shows them.
METRICS = (
    "admitted",
    "failed",
    "rejected",
    "queued",
    "retries",
    "give_ups",
    "timeouts",
    "fallbacks",
    "replays",
    "store_failures",
    "evicted",
)
_INDEX = {m: i for i, m in enumerate(METRICS)}
assert METRICS[:2] == ("admitted", "failed")  # record_call counts them by index
_NAME_LIMIT = 200  # characters of a policy name kept (names are configured; this is a guard)
_PIPELINES = 8  # pipeline names kept per policy
# latency buckets: upper bounds in seconds, 100 µs .. ~105 s, 4 per factor of 2 (±10 %)
_BOUNDS = tuple(1e-4 * 2 ** (i / 4) for i in range(81))
_REJECT_KIND = {
    "circuit_open": "circuit_breaker",
    "rate_limited": "rate_limiter",
    "bulkhead_full": "bulkhead",
    "idempotency_conflict": "idempotent",
    "concurrency_limit": "adaptive_concurrency",
}


def instance_name() -> str:
    """This process's label in a fleet view: ``host:pid``."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def _current_state(policy: Any) -> str | None:
    # a circuit breaker's state now (None for other policies, or when it cannot be read)
    if getattr(policy, "kind", None) != "circuit_breaker":
        return None
    try:
        state = policy.state
    except Exception:  # a store-backed breaker whose store is down: shown once it reports
        return None
    return str(getattr(state, "value", state))


def _percentile(hist: Sequence[int], total: int, q: float) -> float:
    # the upper bound of the bucket holding the q-th observation, in milliseconds
    rank, seen = q * total, 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= rank and n:
            return round(1000 * _BOUNDS[min(i, len(_BOUNDS) - 1)], 3)
    return round(1000 * _BOUNDS[-1], 3)


class _Policy:
    """The state kept for one policy name (under the collector's lock)."""

    __slots__ = (
        "breaker",
        "counts",
        "hists",
        "kind",
        "name",
        "pipelines",
        "state",
        "totals",
        "transitions",
    )

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.state: str | None = None
        self.transitions: deque[tuple[float, str, str, str]] = deque(maxlen=TRANSITIONS)
        self.counts = [[0] * WINDOW for _ in METRICS]  # ring per metric, slot = second % WINDOW
        self.totals = [0] * len(METRICS)
        self.hists: list[list[int]] | None = None  # ring of latency histograms (meters only)
        self.pipelines: list[str] = []
        self.breaker: Any = None  # a watched breaker counting streaks (consecutive_failures)

    def clear(self, second: int) -> None:
        slot = second % WINDOW
        for ring in self.counts:
            ring[slot] = 0
        if self.hists is not None:
            self.hists[slot] = [0] * (len(_BOUNDS) + 1)


class Live:
    """A listener collecting every observed policy's live state for :class:`Dashboard`.

    Attach it to the policies or pipelines to watch (``listeners=[live]``); put
    :meth:`meter` innermost in a pipeline to also count the calls that ran (admitted), their
    failures and latencies. :meth:`snapshot` returns the state as JSON-ready data;
    :meth:`publish` sends it to a Redis store periodically for a fleet-wide dashboard.

    Args:
        max_policies: at most this many policy names are tracked; events of further names are
            counted in the snapshot's ``dropped`` and otherwise ignored.
        clock: the monotonic clock seconds are counted on (tests inject a FakeClock).
        instance: this process's label in a fleet view (default ``host:pid``).

    Example:
        >>> import resilience as rs
        >>> clock = rs.testing.FakeClock()
        >>> live = rs.instrumentation.Live(clock=clock)
        >>> retry = rs.Retry(on=ValueError, attempts=2, backoff=rs.backoff.constant(0),
        ...                  clock=clock, name="fetch", listeners=[live])
        >>> def flaky() -> int:
        ...     raise ValueError
        >>> try:
        ...     retry.call(flaky)
        ... except ValueError:
        ...     pass
        >>> p = live.snapshot()["policies"][0]
        >>> p["name"], p["kind"], p["totals"]["retries"], p["totals"]["give_ups"]
        ('fetch', 'retry', 1, 1)
    """

    def __init__(
        self, *, max_policies: int = 200, clock: Clock | None = None, instance: str | None = None
    ) -> None:
        given: object = max_policies
        if not isinstance(given, int) or isinstance(given, bool) or given < 1:
            raise ConfigurationError(f"max_policies must be a positive int, got {max_policies!r}")
        self.max_policies = max_policies
        self.instance = instance or instance_name()
        self._clock = resolve_clock(clock)
        # wall-clock time stamps the snapshots (a FakeClock's time() in tests)
        wall: Callable[[], float] | None = getattr(clock, "time", None)
        self._wall = wall if wall is not None else time.time
        self._lock = threading.Lock()
        self._policies: dict[str, _Policy] = {}
        self._dropped: set[str] = set()
        self._second = int(self._clock.monotonic())

    # -- collecting -------------------------------------------------------------------------
    def _advance(self, at: float | None = None) -> int:
        # called under the lock: zero the slots of the seconds elapsed since the last call
        now = int(self._clock.monotonic() if at is None else at)
        if now > self._second:
            for second in range(max(self._second + 1, now - WINDOW + 1), now + 1):
                for p in self._policies.values():
                    p.clear(second)
            self._second = now
        return now

    def _get(self, name: str, kind: str) -> _Policy | None:
        name = name[:_NAME_LIMIT]
        p = self._policies.get(name)
        if p is None:
            if len(self._policies) >= self.max_policies:
                if len(self._dropped) < 10 * self.max_policies:
                    self._dropped.add(name)
                return None
            p = self._policies[name] = _Policy(name, kind)
        elif p.kind == "policy" and kind != "policy":
            p.kind = kind
        return p

    def _add(self, p: _Policy, metric: str, n: int = 1) -> None:
        i = _INDEX[metric]
        p.counts[i][self._second % WINDOW] += n
        p.totals[i] += n

    def watch(self, *policies: Any) -> None:
        """Show these policies (objects with ``name`` and ``kind``) before their first event;
        a pipeline stands for the policies inside it. A circuit breaker's current state is
        read once (a breaker with a store asks the store). A breaker with
        ``consecutive_failures=`` is kept: each snapshot reads its current streak (its
        ``metrics.consecutive_failures``).

        Example:
            >>> import resilience as rs
            >>> live = rs.instrumentation.Live()
            >>> live.watch(rs.CircuitBreaker("db", failure_count=5))
            >>> [(p["name"], p["state"]) for p in live.snapshot()["policies"]]
            [('db', 'closed')]
        """
        flat: list[Any] = []
        todo = list(policies)
        while todo:
            policy = todo.pop(0)
            inner = getattr(policy, "policies", None)
            if isinstance(inner, tuple):
                todo[:0] = inner
            else:
                flat.append(policy)
        states = [_current_state(policy) for policy in flat]  # may ask a store: not locked
        with self._lock:
            self._advance()
            for policy, state in zip(flat, states, strict=True):
                p = self._get(str(policy.name), str(getattr(policy, "kind", "policy")))
                if p is not None and state is not None and p.state is None:
                    p.state = state
                if p is not None and getattr(policy, "consecutive_failures", None) is not None:
                    p.breaker = policy

    def __call__(self, event: Event, /) -> None:
        """Record one event (the listener protocol)."""
        with self._lock:
            self._advance()
            if isinstance(event, CallRejected):
                p = self._get(event.policy, _REJECT_KIND.get(event.reason, "policy"))
                if p is not None:
                    self._add(p, "rejected")
            elif isinstance(event, CircuitStateChanged):
                p = self._get(event.policy, "circuit_breaker")
                if p is not None:
                    p.state = event.to_state
                    p.transitions.append(
                        (self._clock.monotonic(), event.from_state, event.to_state, event.reason)
                    )
            elif isinstance(event, RetryScheduled | RetriesExhausted):
                p = self._get(event.policy, "retry")
                if p is not None:
                    self._add(p, "retries" if isinstance(event, RetryScheduled) else "give_ups")
            else:
                p = self._other(event)
            pipeline = event.pipeline
            if p is not None and pipeline is not None and len(p.pipelines) < _PIPELINES:
                pipeline = pipeline[:_NAME_LIMIT]
                if pipeline not in p.pipelines:
                    p.pipelines.append(pipeline)

    def _other(self, event: Event) -> _Policy | None:
        if isinstance(event, RateLimitWaited):  # a rate limiter's or a bulkhead's wait
            metric, kind = "queued", "policy"
        elif isinstance(event, TimeoutElapsed):
            metric, kind = "timeouts", "timeout"
        elif isinstance(event, FallbackUsed):
            metric, kind = "fallbacks", "fallback"
        elif isinstance(event, IdempotentReplay):
            metric, kind = "replays", "idempotent"
        elif isinstance(event, StoreFailed):
            metric, kind = "store_failures", "policy"
        elif isinstance(event, RecordsEvicted):
            metric, kind = "evicted", "idempotent"
        else:
            return None
        p = self._get(event.policy, kind)
        if p is not None:
            self._add(p, metric, event.count if isinstance(event, RecordsEvicted) else 1)
        return p

    def record_call(self, name: str, start: float, end: float, ok: bool) -> None:
        """Count one call that ran under the meter ``name`` from ``start`` to ``end`` (times
        of the collector's clock; see :meth:`meter`)."""
        bucket = bisect.bisect_left(_BOUNDS, end - start)
        with self._lock:
            if end >= self._second + 1:
                self._advance(end)
            p = self._policies.get(name) or self._get(name, "meter")
            if p is None:
                return
            slot = self._second % WINDOW
            p.counts[0][slot] += 1  # admitted
            p.totals[0] += 1
            if not ok:
                p.counts[1][slot] += 1  # failed
                p.totals[1] += 1
            if p.hists is None:
                p.hists = [[0] * (len(_BOUNDS) + 1) for _ in range(WINDOW)]
            p.hists[slot][bucket] += 1

    def meter(self, name: str) -> Any:
        """A policy counting the calls that reach it, their failures and latencies, reported
        under ``name`` (put it innermost in a pipeline: what it counts was admitted by every
        policy around it). See :class:`resilience.instrumentation.Meter`."""
        from ._meter import Meter

        return Meter(self, name)

    def publish(self, store: Any, *, every: float = 1.0, ttl: float = 10.0) -> Any:
        """Publish :meth:`snapshot` to ``store`` (a :class:`~resilience.RedisStore`) every
        ``every`` seconds from a daemon thread, each copy expiring after ``ttl`` seconds, for a
        fleet-wide dashboard (``python -m resilience dashboard --redis URL``). Returns the
        :class:`~resilience.instrumentation.Publisher`; its ``stop()`` ends the publishing."""
        from ._fleet import Publisher

        return Publisher(self, store, every, ttl)

    # -- reading ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The state of every tracked policy as JSON-ready data (see the dashboard docs).

        ``rates[metric]`` holds ``WINDOW`` per-second counts, oldest first; the last entry is
        the current, still running second.
        """
        with self._lock:
            watched = [(p.name, p.breaker) for p in self._policies.values() if p.breaker]
        streaks: dict[str, int] = {}
        for name, breaker in watched:  # not locked: a breaker with a store asks the store
            try:
                streaks[name] = breaker.metrics.consecutive_failures
            except Exception:  # its store is down: shown without the streak
                continue
        with self._lock:
            now = self._advance()
            mono, wall = self._clock.monotonic(), self._wall()
            order = [(now - WINDOW + 1 + k) % WINDOW for k in range(WINDOW)]
            policies = [
                self._describe(p, order, mono, wall, streaks.get(p.name))
                for p in self._policies.values()
            ]
            dropped = len(self._dropped)
        return {
            "version": 1,
            "time": wall,
            "window": WINDOW,
            "instances": [self.instance],
            "policies": policies,
            "dropped": dropped,
        }

    def _describe(
        self, p: _Policy, order: list[int], mono: float, wall: float, streak: int | None
    ) -> dict[str, Any]:
        latency: dict[str, Any] | None = None
        p99: list[float | None] | None = None
        if p.hists is not None:
            recent = [p.hists[s] for s in order[-LATENCY_WINDOW:]]
            hist = [sum(col) for col in zip(*recent, strict=True)]
            total = sum(hist)
            if total:
                latency = {q: _percentile(hist, total, v) for q, v in _QUANTILES}
                latency["count"] = total
            p99 = [_percentile(h, n, 0.99) if (n := sum(h)) else None for h in _rows(p, order)]
        return {
            "name": p.name,
            "kind": p.kind,
            "state": p.state,
            "consecutive_failures": streak,
            "pipelines": list(p.pipelines),
            "transitions": [
                {"at": round(wall - (mono - t), 3), "from": f, "to": to, "reason": r}
                for t, f, to, r in p.transitions
            ],
            "totals": dict(zip(METRICS, p.totals, strict=True)),
            "rates": {
                m: [ring[s] for s in order] for m, ring in zip(METRICS, p.counts, strict=True)
            },
            "latency": latency,
            "latency_p99": p99,
        }


_QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


def _rows(p: _Policy, order: Iterable[int]) -> list[list[int]]:
    assert p.hists is not None
    return [p.hists[s] for s in order]


_default: Live | None = None
_default_lock = threading.Lock()


def default_live() -> Live:
    """The process-wide collector (created on first use): what :class:`Dashboard` shows when
    given no source; attach it with ``listeners=[default_live()]``."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Live()
        return _default
