"""The simulation: Poisson arrivals through real policy objects into a synthetic dependency."""

from __future__ import annotations

import asyncio
import math
import random as _random
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import resilience as rs

from ..errors import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigurationError,
    RateLimitedError,
    ThrottledError,
)
from ..events import (
    CallRejected,
    CircuitStateChanged,
    Event,
    FallbackUsed,
    HedgeStarted,
    RetryScheduled,
)
from ._loop import SimClock, run_virtual
from ._policies import DependencyError, build_policies, field_path, validate_pipelines
from ._scenario import Scenario

__all__ = [
    "DependencyError",
    "Run",
    "Second",
    "SimulationResult",
    "arrival_times",
    "build_policies",
    "simulate",
]

# a refusal (CallRejected.reason) → the outcome column it counts in, even if a fallback answered
_REFUSED_AS = {
    "circuit_open": "rejected",
    "rate_limited": "shed",
    "bulkhead_full": "shed",
    "concurrency_limit": "shed",
    "throttled": "shed",
}


@dataclass
class Second:
    """Counters of one second of simulated time (requests are counted when they end).

    Every request ends in exactly one of ``ok`` (the dependency answered), ``fallback`` (a
    fallback answered a failure or a timeout), ``failed`` (the caller got the error),
    ``rejected`` (an open breaker refused the call) or ``shed`` (a rate limiter, bulkhead or
    adaptive limit refused it). A refused call counts as ``rejected`` / ``shed`` whether the
    caller then got the refusal or a fallback's answer; ``refused_answered`` says how many of
    those a fallback answered. ``attempts`` counts dependency calls, ``retries`` retries and
    ``hedges`` the hedged attempts a :class:`resilience.Hedge` sent (extra concurrent calls).

    Example:
        >>> Second(t=0).success_rate is None
        True
    """

    t: int
    offered: int = 0
    ok: int = 0
    fallback: int = 0
    failed: int = 0
    rejected: int = 0
    shed: int = 0
    refused_answered: int = 0
    attempts: int = 0
    retries: int = 0
    hedges: int = 0
    p50: float | None = None
    p99: float | None = None
    breaker: str = ""
    latencies: list[float] = field(default_factory=list, repr=False)

    @property
    def ended(self) -> int:
        """Requests that ended in this second."""
        return self.ok + self.fallback + self.failed + self.rejected + self.shed

    @property
    def success_rate(self) -> float | None:
        """Real successes over requests ended (``None`` when none ended)."""
        return self.ok / self.ended if self.ended else None

    @property
    def fallback_answers(self) -> int:
        """Requests a fallback answered: after a failure, or after a refusal."""
        return self.fallback + self.refused_answered


@dataclass
class Run:
    """One pipeline's run over the scenario.

    Attributes:
        name: the pipeline's name in the scenario.
        seconds: per-second counters.
        transitions: ``(time, breaker, from, to, reason)`` of every breaker transition.
        latencies: every request's latency (seconds), in end order.
        arrivals: every request's arrival time (seconds): the same list for every pipeline of a
            scenario.
    """

    name: str
    seconds: list[Second]
    transitions: list[tuple[float, str, str, str, str]]
    latencies: list[float]
    arrivals: list[float] = field(default_factory=list, repr=False)

    def total(self, attr: str) -> int:
        """Sum of a counter over the run (``"ok"``, ``"retries"``...)."""
        return sum(int(getattr(s, attr)) for s in self.seconds)

    def percentile(self, q: float) -> float | None:
        """Latency percentile over the whole run (``q`` in [0, 100])."""
        return _percentile(sorted(self.latencies), q)

    def summary(self) -> dict[str, float | int | None]:
        """The headline numbers (what the side-by-side table shows).

        ``fallbacks``, ``failed``, ``rejected_by_breaker`` and ``shed`` are exclusive outcomes
        (see :class:`Second`); ``fallback_answers`` counts every answer a fallback gave,
        including those to refused calls, and ``answered_rate`` is ``ok`` plus those.
        """
        ended = sum(s.ended for s in self.seconds)
        answered = self.total("ok") + self.total("fallback_answers")
        return {
            "requests": self.total("offered"),
            "success_rate": self.total("ok") / ended if ended else None,
            "answered_rate": answered / ended if ended else None,
            "fallbacks": self.total("fallback"),
            "failed": self.total("failed"),
            "rejected_by_breaker": self.total("rejected"),
            "shed": self.total("shed"),
            "fallback_answers": self.total("fallback_answers"),
            "dependency_calls": self.total("attempts"),
            "retries": self.total("retries"),
            "hedges": self.total("hedges"),
            "breaker_transitions": len(self.transitions),
            "p50": self.percentile(50),
            "p99": self.percentile(99),
        }


@dataclass
class SimulationResult:
    """Every pipeline's :class:`Run` over one scenario."""

    scenario: Scenario
    runs: list[Run]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    k = max(0, min(len(values) - 1, math.ceil(q / 100 * len(values)) - 1))
    return values[k]


@dataclass
class _Request:
    """What one request went through: its dependency draws and its last refusal."""

    draws: _random.Random
    refusal: str = ""  # the reason of the last refusal no dependency call or retry followed
    covered: str = ""  # the refusal a fallback answered ("" when it answered a failure)


_REQUEST: ContextVar[_Request] = ContextVar("simulated_request")


class _Recorder:
    def __init__(self, clock: SimClock, duration: float) -> None:
        self.clock = clock
        self.seconds = [Second(t=i) for i in range(max(1, math.ceil(duration)))]
        self.transitions: list[tuple[float, str, str, str, str]] = []
        self.latencies: list[float] = []

    def at(self) -> Second:
        i = int(self.clock.monotonic())
        return self.seconds[min(i, len(self.seconds) - 1)]

    def __call__(self, event: Event) -> None:
        if isinstance(event, RetryScheduled):
            self.at().retries += 1
            _set_refusal("")
        elif isinstance(event, HedgeStarted):
            self.at().hedges += 1
        elif isinstance(event, CallRejected):
            _set_refusal(event.reason)
        elif isinstance(event, FallbackUsed):
            req = _REQUEST.get(None)
            if req is not None:
                req.covered = req.refusal
        elif isinstance(event, CircuitStateChanged):
            self.transitions.append(
                (
                    self.clock.monotonic(),
                    event.policy,
                    event.from_state,
                    event.to_state,
                    event.reason,
                )
            )


def _set_refusal(reason: str) -> None:
    req = _REQUEST.get(None)
    if req is not None:
        req.refusal = reason


def _stream(seed: int, purpose: str) -> _random.Random:
    """An independent random stream for one purpose (str seeds are hashed with SHA-512)."""
    return _random.Random(f"resilience.simulate:{seed}:{purpose}")


def arrival_times(scenario: Scenario) -> list[float]:
    """The request arrival times of ``scenario`` (Poisson, following its load): the same for
    every pipeline, drawn from a random stream of their own.

    Example:
        >>> from resilience.simulate import Scenario
        >>> s = Scenario.from_dict({"duration": 10, "load": {"rate": 5}, "pipelines": {"a": []}})
        >>> times = arrival_times(s)
        >>> times == arrival_times(s), all(0 < t < 10 for t in times), 20 < len(times) < 80
        (True, True, True)
    """
    rnd = _stream(scenario.seed, "arrivals")
    out: list[float] = []
    t = 0.0
    while True:
        rate = scenario.rate_at(t)
        t += rnd.expovariate(rate) if rate > 0 else 0.1
        if t >= scenario.duration:
            return out
        if rate > 0:
            out.append(t)


def _run_one(
    scenario: Scenario, name: str, specs: list[dict[str, Any]], arrivals: list[float]
) -> Run:
    clock = SimClock()
    # one stream per purpose, so what a pipeline does (how many attempts, how much jitter)
    # never shifts the arrivals or the dependency draws another pipeline sees; the dependency
    # draws of request i come from a stream of its own, the same in every pipeline
    seeds = _stream(scenario.seed, "dependency")
    request_seeds = [seeds.getrandbits(64) for _ in arrivals]
    policy_rnd = _stream(scenario.seed, "policies")  # jitter
    rec = _Recorder(clock, scenario.duration)
    policies = build_policies(specs, clock, policy_rnd, rec, path=field_path("pipelines", name))
    breakers = [p for p in policies if isinstance(p, rs.CircuitBreaker)]
    sems: dict[int, asyncio.Semaphore] = {}

    async def dependency() -> str:
        now = clock.monotonic()
        st = scenario.dependency_at(now)
        rec.at().attempts += 1
        req = _REQUEST.get()
        req.refusal = ""
        sem = None
        if st.capacity:
            sem = sems.get(st.capacity)
            if sem is None:
                sem = sems[st.capacity] = asyncio.Semaphore(st.capacity)
            await sem.acquire()
        try:
            if st.outage == "error":
                await asyncio.sleep(0.001)
                raise DependencyError("connection refused")
            if st.outage == "hang":
                await asyncio.sleep(st.hang)
                raise DependencyError("no response")
            rnd = req.draws
            latency = rnd.lognormvariate(st.mu, st.sigma) if st.sigma else st.p50
            fail = rnd.random() < st.error_rate
            await asyncio.sleep(latency)
            if fail:
                raise DependencyError("503 service unavailable")
            return "ok"
        finally:
            if sem is not None:
                sem.release()

    guarded: Callable[[], Any] = dependency
    if policies:
        guarded = rs.Pipeline(*policies, name=name)(dependency)

    async def request(seed: int) -> None:
        req = _Request(_random.Random(seed))
        _REQUEST.set(req)
        t0 = clock.monotonic()
        kind = "failed"
        answered = False
        try:
            if scenario.client_timeout:
                async with asyncio.timeout(scenario.client_timeout):
                    result = await guarded()
            else:
                result = await guarded()
            if result == "ok":
                kind = "ok"
            else:
                kind = _REFUSED_AS.get(req.covered, "fallback")
                answered = kind != "fallback"
        except (RateLimitedError, BulkheadFullError, ThrottledError):
            kind = "shed"
        except CircuitOpenError:
            kind = "rejected"
        except Exception:
            kind = "failed"
        sec = rec.at()
        setattr(sec, kind, getattr(sec, kind) + 1)
        sec.refused_answered += answered
        latency = clock.monotonic() - t0
        sec.latencies.append(latency)
        rec.latencies.append(latency)

    async def sampler() -> None:
        for sec in rec.seconds:
            await asyncio.sleep(max(0.0, sec.t + 0.5 - clock.monotonic()))
            if breakers:
                sec.breaker = breakers[0].state.value

    async def main() -> None:
        tasks: set[asyncio.Task[None]] = set()
        sample = asyncio.ensure_future(sampler())
        for t, seed in zip(arrivals, request_seeds, strict=True):
            await asyncio.sleep(t - clock.monotonic())
            rec.at().offered += 1
            task = asyncio.ensure_future(request(seed))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await sample
        while tasks:
            await asyncio.gather(*list(tasks))

    run_virtual(main(), clock)
    for sec in rec.seconds:
        lat = sorted(sec.latencies)
        sec.p50, sec.p99 = _percentile(lat, 50), _percentile(lat, 99)
    return Run(
        name=name,
        seconds=rec.seconds,
        transitions=rec.transitions,
        latencies=rec.latencies,
        arrivals=list(arrivals),
    )


def simulate(scenario: Scenario, *, only: list[str] | None = None) -> SimulationResult:
    """Run every pipeline of ``scenario`` (or those named in ``only``) on a virtual clock.

    Each pipeline sees the same arrival times (:func:`arrival_times`, ``Run.arrivals``), and
    the n-th request's dependency draws (latency, error) come from a stream of its own, the
    same in every pipeline: arrivals, dependency and policy jitter use independent seeded
    streams, so one pipeline's retries or jitter never shift what it is compared against.

    Example:
        >>> from resilience.simulate import Scenario, simulate
        >>> s = Scenario.from_dict({"duration": 20, "load": {"rate": 20},
        ...     "dependency": {"p50": 0.02, "p99": 0.1},
        ...     "phases": [{"start": 5, "end": 10, "outage": "error"}],
        ...     "pipelines": {"none": [], "breaker": [
        ...         {"type": "fallback", "value": "cached"},
        ...         {"type": "circuit_breaker", "failure_ratio": 0.5, "min_calls": 10,
        ...          "window": 5, "open_for": 2}]}})
        >>> none, breaker = simulate(s).runs
        >>> none.total("failed") > 50, breaker.total("failed"), breaker.total("fallback") > 50
        (True, 0, True)
    """
    names = list(scenario.pipelines) if only is None else only
    for name in names:
        if name not in scenario.pipelines:
            raise ConfigurationError(
                f"no pipeline {name!r} in the scenario (it has: {', '.join(scenario.pipelines)})"
            )
    validate_pipelines({name: scenario.pipelines[name] for name in names})  # before any run
    arrivals = arrival_times(scenario)
    runs = [_run_one(scenario, name, scenario.pipelines[name], arrivals) for name in names]
    return SimulationResult(scenario=scenario, runs=runs)
