"""The simulation: Poisson arrivals through real policy objects into a synthetic dependency."""

from __future__ import annotations

import asyncio
import inspect
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
    RejectedError,
    TimeoutExceededError,
)
from ..events import CircuitStateChanged, Event, RetryScheduled
from ._loop import SimClock, run_virtual
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

_CLASSES = {
    "timeout": "Timeout",
    "retry": "Retry",
    "circuit_breaker": "CircuitBreaker",
    "fallback": "Fallback",
    "rate_limiter": "RateLimiter",
    "bulkhead": "Bulkhead",
    "adaptive_concurrency": "AdaptiveConcurrency",
}
_ON: dict[str, Callable[[], type[BaseException]]] = {
    "error": lambda: DependencyError,
    "timeout": lambda: TimeoutExceededError,
    "rejected": lambda: RejectedError,
    "any": lambda: Exception,
}
_STATE_CODE = {"closed": 0, "half_open": 1, "open": 2}


class DependencyError(ConnectionError):
    """The synthetic dependency failed (an error, an outage or a hang that ended).

    Example:
        >>> isinstance(DependencyError("refused"), ConnectionError)
        True
    """


@dataclass
class Second:
    """Counters of one second of simulated time (requests are counted when they end).

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
    attempts: int = 0
    retries: int = 0
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
        """The headline numbers (what the side-by-side table shows)."""
        ended = sum(s.ended for s in self.seconds)
        return {
            "requests": self.total("offered"),
            "success_rate": self.total("ok") / ended if ended else None,
            "answered_rate": (self.total("ok") + self.total("fallback")) / ended if ended else None,
            "fallbacks": self.total("fallback"),
            "failed": self.total("failed"),
            "fast_rejected": self.total("rejected"),
            "shed": self.total("shed"),
            "dependency_calls": self.total("attempts"),
            "retries": self.total("retries"),
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


def _on(spec: Any) -> Any:
    names = [spec] if isinstance(spec, str) else list(spec)
    try:
        return tuple(_ON[n]() for n in names)
    except KeyError:
        raise ConfigurationError(
            f"on must name outcomes among {sorted(_ON)}, got {spec!r}"
        ) from None


def _backoff(spec: Any, rnd: Any) -> Any:
    if not isinstance(spec, dict):
        return spec
    spec = dict(spec)
    kind = spec.pop("kind", "exponential")
    factory = getattr(rs.backoff, kind, None)
    if factory is None or kind.startswith("_"):
        raise ConfigurationError(f"unknown backoff kind {kind!r}")
    if "random" in inspect.signature(factory).parameters:
        spec["random"] = rnd
    return factory(**spec)


def build_policies(
    specs: list[dict[str, Any]], clock: SimClock, rnd: _random.Random, listener: Any
) -> list[rs.Policy]:
    """Construct real policy objects from scenario specifications (outermost first).

    ``type`` is a policy class name (``"CircuitBreaker"``) or its snake-case form
    (``"circuit_breaker"``); the other keys are the constructor's keyword arguments, except:
    ``backoff`` / ``open_for`` tables (``{kind = "exponential", initial = ...}``) become
    :mod:`resilience.backoff` schedules, ``budget`` tables a :class:`resilience.RetryBudget`,
    and ``on`` names outcomes (``"error"``, ``"timeout"``, ``"rejected"``, ``"any"``). The
    clock, the random generator and the listener are injected.

    Example:
        >>> import random
        >>> [p] = build_policies([{"type": "timeout", "seconds": 2}], SimClock(),
        ...                      random.Random(1), lambda e: None)
        >>> p.describe()["seconds"]
        2.0
    """
    out: list[rs.Policy] = []
    for raw in specs:
        spec = dict(raw)
        kind = str(spec.pop("type", ""))
        cls_name = _CLASSES.get(kind, kind)
        cls = getattr(rs, cls_name, None)
        if not (isinstance(cls, type) and issubclass(cls, rs.Policy)):
            raise ConfigurationError(
                f"unknown policy type {kind!r} (one of {sorted(_CLASSES)}; RateLimiter, "
                f"Bulkhead and AdaptiveConcurrency need a release that has them)"
            )
        params = inspect.signature(cls).parameters
        if "on" in spec:
            spec["on"] = _on(spec["on"])
        elif cls_name == "Retry":
            spec["on"] = (DependencyError, TimeoutExceededError)
        elif cls_name == "Fallback":
            spec["on"] = Exception
        for key in ("backoff", "open_for"):
            if key in spec:
                spec[key] = _backoff(spec[key], rnd)
        if isinstance(spec.get("budget"), dict):
            spec["budget"] = rs.RetryBudget(**spec["budget"], clock=clock)
        if "clock" in params:
            spec["clock"] = clock
        if "random" in params:
            spec["random"] = rnd
        spec["listeners"] = [listener]
        args: list[Any] = []
        first = next(iter(params.values()), None)
        if first is not None and first.kind is inspect.Parameter.POSITIONAL_ONLY:
            args.append(spec.pop(first.name, kind))
        elif cls_name == "Timeout":
            args.append(spec.pop("seconds"))
        out.append(cls(*args, **spec))
    return out


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
    draws: ContextVar[_random.Random] = ContextVar("simulated_request_draws")
    policy_rnd = _stream(scenario.seed, "policies")  # jitter
    rec = _Recorder(clock, scenario.duration)
    policies = build_policies(specs, clock, policy_rnd, rec)
    breakers = [p for p in policies if isinstance(p, rs.CircuitBreaker)]
    sems: dict[int, asyncio.Semaphore] = {}

    async def dependency() -> str:
        now = clock.monotonic()
        st = scenario.dependency_at(now)
        rec.at().attempts += 1
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
            rnd = draws.get()
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
        draws.set(_random.Random(seed))
        t0 = clock.monotonic()
        kind = "failed"
        try:
            if scenario.client_timeout:
                async with asyncio.timeout(scenario.client_timeout):
                    result = await guarded()
            else:
                result = await guarded()
            kind = "ok" if result == "ok" else "fallback"
        except (RateLimitedError, BulkheadFullError):
            kind = "shed"
        except CircuitOpenError:
            kind = "rejected"
        except Exception:
            kind = "failed"
        sec = rec.at()
        setattr(sec, kind, getattr(sec, kind) + 1)
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
            raise ConfigurationError(f"no pipeline {name!r} in the scenario")
    arrivals = arrival_times(scenario)
    runs = [_run_one(scenario, name, scenario.pipelines[name], arrivals) for name in names]
    return SimulationResult(scenario=scenario, runs=runs)
