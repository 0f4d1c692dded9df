"""Policies that compose without traps (issue 11, items 1 and 2).

1. A breaker (and a retry budget, adaptive concurrency) never learns from a refusal raised by a
   policy inside it: a local 429 is not a failure of the dependency.
2. A refused call spends nothing: outer rate limiters refund the permits it took.
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

from ..conftest import Runner, Step
from ..helpers import permits_left, scripts_run

README = Path(__file__).resolve().parent.parent.parent / "README.md"


def _refuse(runner: Runner, policy: rs.Policy, fn: Callable[..., Any]) -> BaseException:
    with pytest.raises(rs.RejectedError) as info:
        runner.run(policy, fn)
    return info.value


def _ok(runner: Runner) -> Callable[..., Any]:
    return runner.wrap(lambda: "ok")


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
    charged = [o for o in outcomes if isinstance(o, dict) and o["status"] == "charged"]
    assert m.calls == len(charged)  # only calls that reached the dependency count
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


# -- item 2: a refused call spends nothing ---------------------------------------------------
def test_inner_limit_refusal_refunds_the_outer_limiter(runner: Runner, clock: FakeClock) -> None:
    per_second = rs.RateLimiter("per-second", rate=10, clock=clock)
    per_day = rs.RateLimiter("per-day", rate=3, per=86400, clock=clock)
    pipeline = rs.Pipeline(per_second, per_day)
    refused_by = []
    for _ in range(12):  # one instant: 3 admitted, then the daily limit refuses
        try:
            runner.run(pipeline, _ok(runner))
        except rs.RateLimitedError as exc:
            refused_by.append(exc.policy)
    assert refused_by == ["per-day"] * 9  # never the per-second limit
    assert permits_left(per_second) == 7  # only the 3 calls that ran were charged


def test_one_users_refusals_do_not_drain_a_shared_per_ip_limit(
    runner: Runner, clock: FakeClock
) -> None:
    per_ip = rs.RateLimiter("ip", rate=5, per=60, clock=clock, key=lambda ip, user: ip)
    per_user = rs.RateLimiter("user", rate=1, per=3600, clock=clock, key=lambda ip, user: user)
    pipeline = rs.Pipeline(per_ip, per_user)
    fn = runner.wrap(lambda: "ok")

    def call(user: str) -> str:
        if runner.is_async:
            return str(asyncio.run(pipeline.acall(fn, "10.0.0.1", user)))
        return str(pipeline.call(fn, "10.0.0.1", user))

    assert call("mallory") == "ok"
    for _ in range(20):
        with pytest.raises(rs.RateLimitedError) as info:
            call("mallory")
        assert info.value.policy == "user"
    assert call("alice") == "ok"  # the shared per-IP budget was not burned by mallory
    assert permits_left(per_ip, "10.0.0.1") == 3


@pytest.mark.parametrize("inner", ["bulkhead", "breaker", "adaptive"])
def test_any_inner_refusal_refunds(runner: Runner, clock: FakeClock, inner: str) -> None:
    outer = rs.RateLimiter("outer", rate=5, per=60, clock=clock)
    pipeline = rs.Pipeline(outer, _inner_refusers(clock)[inner])
    for _ in range(10):
        _refuse(runner, pipeline, _ok(runner))
    assert permits_left(outer) == 5


def test_a_paced_limiter_gives_the_refused_call_its_slot_back(
    runner: Runner, clock: FakeClock
) -> None:
    pacer = rs.RateLimiter("pacer", rate=4, burst=1, max_wait=1.0, clock=clock)
    daily = rs.RateLimiter("daily", rate=1, per=86400, clock=clock)
    daily.try_acquire()
    pipeline = rs.Pipeline(pacer, daily)
    for _ in range(5):
        _refuse(runner, pipeline, _ok(runner))
    assert clock.monotonic() == 0.0  # nobody queued behind the refused calls' slots
    assert pacer.acquire().waited == 0.0


@pytest.mark.parametrize("keyed", [False, True])
def test_a_warm_up_limiter_is_left_as_it_was(runner: Runner, keyed: bool) -> None:
    # A cold warm-up limiter charges a refused call a dear permit (3 intervals) and a stored
    # token; the refund gives both back, so it behaves exactly like one that saw no call.
    clocks = (FakeClock(), FakeClock())
    used, untouched = (
        rs.RateLimiter("w", rate=10, warmup=10, clock=c, key=(lambda: "k") if keyed else None)
        for c in clocks
    )
    daily = rs.RateLimiter("daily", rate=1, per=86400, clock=clocks[0])
    daily.try_acquire()
    for _ in range(5):
        _refuse(runner, rs.Pipeline(used, daily), _ok(runner))
    traces = []
    for limiter, c in zip((used, untouched), clocks, strict=True):
        trace = []
        for _ in range(12):
            d = limiter.try_acquire(key="k" if keyed else None)
            trace.append((d.allowed, d.remaining, round(d.retry_after, 6), round(d.reset_after, 6)))
            c.advance(0.05)
        traces.append(trace)
    assert traces[0] == traces[1]
    assert [t[0] for t in traces[0]].count(False) > 0  # the trace does reach the cold limit


def test_failures_and_timeouts_are_not_refunded(runner: Runner, clock: FakeClock) -> None:
    outer = rs.RateLimiter("outer", rate=5, per=60, clock=clock)
    with pytest.raises(ValueError, match="boom"):
        runner.run(outer, runner.scripted([ValueError("boom")]))
    with pytest.raises(rs.TimeoutExceededError):
        runner.run(
            rs.Pipeline(outer, rs.Timeout(1, clock=clock)), runner.scripted([Step("late", 2.0)])
        )
    with pytest.raises(rs.RateLimitedError):  # raised by the function: it ran
        runner.run(outer, runner.scripted([rs.RateLimitedError(policy="remote")]))
    assert permits_left(outer) == 2


def test_retry_inside_an_outer_limiter(runner: Runner, clock: FakeClock) -> None:
    outer = rs.RateLimiter("outer", rate=5, per=60, clock=clock)
    inner = rs.RateLimiter("inner", rate=1, per=3600, clock=clock)
    retry = rs.Retry(
        on=(ConnectionError, rs.RateLimitedError),
        attempts=3,
        backoff=rs.backoff.constant(0),
        retry_after=None,
        clock=clock,
    )
    pipeline = rs.Pipeline(outer, retry, inner)
    # The first attempt runs and fails, the next two are refused: the call did reach the
    # dependency, so the outer limiter keeps its permit.
    with pytest.raises(rs.RateLimitedError):
        runner.run(pipeline, runner.scripted([ConnectionError]))
    assert permits_left(outer) == 4
    # Every attempt refused: nothing ran, the outer permit comes back.
    with pytest.raises(rs.RateLimitedError):
        runner.run(pipeline, _ok(runner))
    assert permits_left(outer) == 4


# -- item 2 on Redis: the refund is one round trip of the Lua twin ---------------------------
def _redis_pipeline(url: str, clock: FakeClock) -> tuple[rs.Pipeline, rs.RateLimiter, Any]:
    import uuid

    from resilience.stores.redis import RedisStore

    store = RedisStore.from_url(url, prefix=f"cmp{uuid.uuid4().hex[:8]}", clock=clock)
    per_ip = rs.RateLimiter("ip", rate=5, per=60, store=store, key=lambda ip, user: ip)
    per_user = rs.RateLimiter(
        "user", rate=1, per=3600, store=store, key=lambda ip, user: user, clock=clock
    )
    return rs.Pipeline(per_ip, per_user), per_ip, store


def test_redis_refund_is_one_round_trip(redis_server: Any) -> None:
    import redis

    clock = FakeClock(start=1000.0)
    pipeline, per_ip, store = _redis_pipeline(redis_server.url, clock)
    client = redis.Redis.from_url(redis_server.url)
    assert pipeline.call(lambda ip, user: "ok", "10.0.0.1", "mallory") == "ok"
    before = 0
    for n in range(10):
        if n == 1:  # the scripts are loaded by now (a first EVALSHA is followed by an EVAL)
            before = scripts_run(client)
        with pytest.raises(rs.RateLimitedError) as info:
            pipeline.call(lambda ip, user: "ok", "10.0.0.1", "mallory")
        assert info.value.policy == "user"
    assert scripts_run(client) - before == 27  # per refusal: outer take, inner take, refund
    assert pipeline.call(lambda ip, user: "ok", "10.0.0.1", "alice") == "ok"
    assert permits_left(per_ip, "10.0.0.1") == 3  # only mallory's and alice's real calls
    store.close()


async def test_redis_refund_async(redis_server: Any) -> None:
    clock = FakeClock(start=1000.0)
    pipeline, per_ip, store = _redis_pipeline(redis_server.url, clock)

    async def ok(ip: str, user: str) -> str:
        return "ok"

    assert await pipeline.acall(ok, "10.0.0.2", "mallory") == "ok"
    for _ in range(10):
        with pytest.raises(rs.RateLimitedError):
            await pipeline.acall(ok, "10.0.0.2", "mallory")
    assert await pipeline.acall(ok, "10.0.0.2", "alice") == "ok"
    assert (await per_ip.atry_acquire(key="10.0.0.2", cost=0)).remaining == 3
    await store.aclose()
    store.close()


# -- through an adapter: ResilienceMiddleware on a real uvicorn server -----------------------
def test_middleware_answers_429_without_opening_its_breaker_or_spending_outer_permits() -> None:
    import httpx

    from interceptors.asgi import ResilienceMiddleware

    from .._asgi_apps import TestApp
    from .._server import serve

    clock = FakeClock()
    breaker = rs.CircuitBreaker("api", failure_ratio=0.5, min_calls=4, clock=clock)
    per_minute = rs.RateLimiter("per-minute", rate=100, per=60, clock=clock)
    per_second = rs.RateLimiter("per-second", rate=2, clock=clock)
    mw = ResilienceMiddleware(TestApp(), pipeline=rs.Pipeline(breaker, per_minute, per_second))
    with serve(mw) as url, httpx.Client(base_url=url, timeout=10) as client:
        statuses = [client.get("/hello").status_code for _ in range(12)]
    assert statuses == [200, 200] + [429] * 10
    assert breaker.state is rs.CircuitState.CLOSED
    assert (breaker.metrics.calls, breaker.metrics.failures) == (2, 0)
    assert permits_left(per_minute) == 98


def test_a_stamped_refusal_still_pickles(clock: FakeClock) -> None:
    import pickle

    limiter = rs.RateLimiter("x", rate=1, per=60, clock=clock)
    limiter.try_acquire()
    with pytest.raises(rs.RateLimitedError) as info:
        limiter.call(lambda: "a local function: not picklable")
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is rs.RateLimitedError
    assert (copy.policy, copy.retry_after, str(copy)) == ("x", 60.0, str(info.value))


def test_a_shared_breaker_spends_no_round_trip_on_an_inner_refusal(
    runner: Runner, clock: FakeClock
) -> None:
    ops: list[str] = []

    class Counting(rs.MemoryStore):
        def apply(self, op: Any, /) -> Any:
            ops.append(type(op).__name__)
            return super().apply(op)  # aapply() runs this too

    breaker = rs.CircuitBreaker("dep", failure_count=1, store=Counting(clock=clock), clock=clock)
    limiter = rs.RateLimiter("dep", rate=1, per=3600, clock=clock)
    limiter.try_acquire()
    for _ in range(3):
        _refuse(runner, rs.Pipeline(breaker, limiter), _ok(runner))
    assert ops == ["_AcquireOp"] * 3  # the permit only: nothing to record in CLOSED
