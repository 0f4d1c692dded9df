"""Policies that compose without traps (issue 11, items 1 and 2).

1. A breaker (and a retry budget, adaptive concurrency) never learns from a refusal raised by a
   policy inside it: a local 429 is not a failure of the dependency.
"""

from __future__ import annotations

import asyncio
import functools
import re
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import resilience as rs
from resilience.testing import FakeClock

from .conftest import Runner, Step

README = Path(__file__).resolve().parent.parent / "README.md"


def _refuse(runner: Runner, policy: rs.Policy, fn: Callable[..., Any]) -> BaseException:
    with pytest.raises(rs.RejectedError) as info:
        runner.run(policy, fn)
    return info.value


def _ok(runner: Runner) -> Callable[..., Any]:
    return runner.wrap(lambda: "ok")


def _remaining(limiter: rs.RateLimiter, key: str | None = None) -> int:
    """Permits left in ``key``'s bucket, without taking any (a cost-0 check)."""
    return limiter.try_acquire(key=key, cost=0).remaining


# -- the README's pipeline -------------------------------------------------------------------
def _readme_taste() -> str:
    text = README.read_text()
    section = text.split("## A taste", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


def _on_clock(clock: FakeClock) -> types.SimpleNamespace:
    """``resilience`` with every time-dependent constructor defaulting to ``clock``."""
    fake = types.SimpleNamespace(**{k: getattr(rs, k) for k in rs.__all__})
    for name in ("Timeout", "Retry", "CircuitBreaker", "RateLimiter", "RetryBudget"):
        setattr(fake, name, functools.partial(getattr(rs, name), clock=clock))
    return fake


def test_readme_pipeline_keeps_the_breaker_closed_when_its_limiter_saturates() -> None:
    clock = FakeClock()
    source = _readme_taste().replace("import resilience as rs\n", "")
    namespace: dict[str, Any] = {"rs": _on_clock(clock)}
    exec(compile(source, str(README), "exec"), namespace)  # the README's own code
    payments: rs.Pipeline = namespace["payments"]
    charge = namespace["charge"]
    breaker = next(p for p in payments.policies if isinstance(p, rs.CircuitBreaker))
    limiter = next(p for p in payments.policies if isinstance(p, rs.RateLimiter))

    async def traffic() -> list[object]:
        out: list[object] = []
        for second in range(3):  # 3 s of 500 calls/s against a healthy dependency
            for n in range(500):
                try:
                    out.append(await charge(f"order-{second}-{n}"))
                except rs.RateLimitedError as exc:
                    out.append(exc.policy)
            clock.advance(1.0)
        return out

    outcomes = asyncio.run(traffic())
    assert "payments" in outcomes  # the limiter was saturated: local 429s
    assert {"status": "queued"} not in outcomes  # never the breaker's fallback
    assert breaker.state is rs.CircuitState.CLOSED
    m = breaker.metrics
    assert m.failures == 0
    assert m.calls == outcomes.count(None)  # only calls that reached the dependency count
    assert limiter.name == "payments"


# -- item 1: breakers ignore refusals from inside --------------------------------------------
def _inner_refusers(clock: FakeClock) -> dict[str, rs.Policy]:
    drained = rs.RateLimiter("inner", rate=1, per=3600, clock=clock)
    drained.try_acquire()
    full = rs.Bulkhead("inner", max_concurrent=1, clock=clock)
    full._in_use = 1  # every slot is held by another call
    ac = rs.AdaptiveConcurrency("inner", initial_limit=1, min_limit=1, clock=clock)
    ac.try_acquire()
    open_breaker = rs.CircuitBreaker("inner", failure_count=1, clock=clock)
    open_breaker.open()
    return {"rate_limiter": drained, "bulkhead": full, "adaptive": ac, "breaker": open_breaker}


@pytest.mark.parametrize("inner", ["rate_limiter", "bulkhead", "adaptive", "breaker"])
@pytest.mark.parametrize("shared", [False, True], ids=["local", "store"])
def test_breaker_does_not_count_refusals_from_inner_policies(
    runner: Runner, clock: FakeClock, inner: str, shared: bool
) -> None:
    store = rs.MemoryStore(clock=clock) if shared else None
    breaker = rs.CircuitBreaker("dep", failure_count=1, store=store, clock=clock)
    pipeline = rs.Pipeline(breaker, _inner_refusers(clock)[inner])
    for _ in range(5):
        _refuse(runner, pipeline, _ok(runner))
    assert breaker.state is rs.CircuitState.CLOSED
    assert breaker.metrics.calls == 0  # neither a failure nor a success


def test_half_open_probe_refused_inside_gives_its_permit_back(
    runner: Runner, clock: FakeClock
) -> None:
    breaker = rs.CircuitBreaker("dep", failure_count=1, open_for=10, clock=clock)
    limiter = rs.RateLimiter("dep", rate=1, per=60, clock=clock)
    pipeline = rs.Pipeline(breaker, limiter)
    with pytest.raises(ConnectionError):
        runner.run(pipeline, runner.scripted([ConnectionError]))  # opens; takes the permit
    clock.advance(10)
    assert breaker.state is rs.CircuitState.HALF_OPEN
    exc = _refuse(runner, pipeline, _ok(runner))  # the probe is refused by the limiter
    assert isinstance(exc, rs.RateLimitedError)
    assert breaker.state is rs.CircuitState.HALF_OPEN  # not reopened, permit released
    clock.advance(60)
    assert runner.run(pipeline, _ok(runner)) == "ok"  # a fresh probe is admitted
    assert breaker.metrics.state is rs.CircuitState.CLOSED


def test_stacked_decorators_are_one_composition(runner: Runner, clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker("dep", failure_count=1, clock=clock)
    limiter = rs.RateLimiter("dep", rate=1, per=3600, clock=clock)
    fn = breaker(limiter(_ok(runner)))
    results = []
    for _ in range(3):
        try:
            out = fn()
            results.append(asyncio.run(out) if runner.is_async else out)
        except rs.RateLimitedError:
            results.append("429")
    assert results == ["ok", "429", "429"]
    assert breaker.state is rs.CircuitState.CLOSED


def test_rejections_raised_by_the_function_itself_still_count(
    runner: Runner, clock: FakeClock
) -> None:
    # A RejectedError the protected function raises is the dependency's answer (here: a
    # client library refusing, and a refusal escaping a separate composition called inside).
    breaker = rs.CircuitBreaker("dep", failure_count=2, clock=clock)
    elsewhere = rs.RateLimiter("other", rate=1, per=3600, clock=clock)
    elsewhere.try_acquire()
    limited = elsewhere(lambda: "never")

    def body() -> None:
        limited()

    with pytest.raises(rs.CircuitOpenError):
        runner.run(breaker, runner.scripted([rs.CircuitOpenError(policy="remote")]))
    with pytest.raises(rs.RateLimitedError):
        runner.run(breaker, runner.wrap(body))
    assert breaker.state is rs.CircuitState.OPEN


def test_count_rejections_opts_in(runner: Runner, clock: FakeClock) -> None:
    breaker = rs.CircuitBreaker("dep", failure_count=2, count_rejections=True, clock=clock)
    limiter = rs.RateLimiter("dep", rate=1, per=3600, clock=clock)
    limiter.try_acquire()
    pipeline = rs.Pipeline(breaker, limiter)
    for _ in range(2):
        _refuse(runner, pipeline, _ok(runner))
    assert breaker.state is rs.CircuitState.OPEN
    assert breaker.describe()["count_rejections"] is True
    with pytest.raises(rs.ConfigurationError):
        rs.CircuitBreaker("dep", failure_count=1, count_rejections="yes")  # type: ignore[arg-type]


def test_retry_throttle_is_not_drained_by_local_refusals(runner: Runner, clock: FakeClock) -> None:
    throttle = rs.RetryThrottle(max_tokens=10, token_ratio=0.1)
    limiter = rs.RateLimiter("dep", rate=1, per=3600, clock=clock)
    limiter.try_acquire()
    pipeline = rs.Pipeline(rs.Retry(on=ConnectionError, budget=throttle, clock=clock), limiter)
    for _ in range(10):
        _refuse(runner, pipeline, _ok(runner))
    assert throttle.tokens == 10
    assert throttle.try_withdraw()


def test_retry_budget_does_not_count_refused_calls(runner: Runner, clock: FakeClock) -> None:
    budget = rs.RetryBudget(ratio=0.5, min_per_second=0, clock=clock)
    limiter = rs.RateLimiter("dep", rate=2, per=3600, clock=clock)
    retry = rs.Retry(
        on=(ConnectionError, rs.RateLimitedError),
        attempts=3,
        budget=budget,
        backoff=rs.backoff.constant(0),
        retry_after=None,
        clock=clock,
    )
    pipeline = rs.Pipeline(retry, limiter)
    assert runner.run(pipeline, _ok(runner)) == "ok"
    assert runner.run(pipeline, _ok(runner)) == "ok"
    for _ in range(20):  # refused: every attempt, so no deposit and no retry is kept
        _refuse(runner, pipeline, _ok(runner))
    assert budget.snapshot()["calls"] == 2
    assert budget.snapshot()["retries"] == 0
    assert budget.try_withdraw()  # the real calls' allowance: 0.5 * 2 = one retry


def test_adaptive_concurrency_takes_no_sample_from_inner_refusals(
    runner: Runner, clock: FakeClock
) -> None:
    ac = rs.AdaptiveConcurrency("api", initial_limit=10, clock=clock)
    limiter = rs.RateLimiter("api", rate=1, per=3600, clock=clock)
    pipeline = rs.Pipeline(ac, limiter)
    assert runner.run(pipeline, runner.scripted([Step("slow ok", 1.0)])) == "slow ok"
    assert ac.long_rtt == 1.0
    for _ in range(5):
        _refuse(runner, pipeline, _ok(runner))  # refused at once: RTT 0
    assert ac.long_rtt == 1.0
    assert ac.in_flight == 0
