"""A refusal by a policy inside a hedge is settled as Retry settles it: it never reached the
dependency (the budget does not learn from it and gets back what it paid), and a refusal that
ends a call after another attempt did reach the dependency is that call's outcome (unstamped:
outer breakers count it, outer limiters keep their permits)."""

from __future__ import annotations

import pytest

import resilience as rs
from resilience.simulate import SimClock, run_virtual


def refused_only(clock: SimClock) -> tuple[rs.CircuitBreaker, rs.RetryBudget]:
    breaker = rs.CircuitBreaker("dep", failure_count=1, clock=clock)
    breaker.open()
    return breaker, rs.RetryBudget(ratio=1, min_per_second=0, clock=clock)


def test_a_call_refused_on_every_attempt_stays_a_refusal_and_pays_nothing() -> None:
    clock = SimClock()
    breaker, budget = refused_only(clock)
    budget.deposit()  # an earlier call: one hedge is affordable
    calls: list[int] = []

    async def dependency() -> str:
        calls.append(1)
        return "ok"

    hedge = rs.Hedge(delay=0.1, attempts=2, budget=budget, clock=clock)
    policy = rs.Pipeline(hedge, breaker)
    with pytest.raises(rs.CircuitOpenError) as info:
        run_virtual(policy.acall(dependency), clock)
    assert calls == []
    assert rs.refused_by_policy(info.value)  # nothing ran: still a refusal for outer policies
    # the hedge's withdrawal and this call's deposit were given back, no failure was recorded
    snapshot = budget.snapshot()
    assert (snapshot["calls"], snapshot["retries"]) == (1, 0)
    assert budget.try_withdraw()


def test_a_refusal_after_an_attempt_reached_the_dependency_is_the_calls_outcome() -> None:
    clock = SimClock()
    inner = rs.CircuitBreaker("inner", failure_count=1, clock=clock)
    outer = rs.CircuitBreaker("outer", failure_count=1, clock=clock)

    async def dependency() -> str:
        raise ConnectionError("reset")  # the first attempt fails and opens the inner breaker

    # the hedge sent at once after the failure is refused by the now open inner breaker
    policy = rs.Pipeline(outer, rs.Hedge(delay=1.0, attempts=2, clock=clock), inner)
    with pytest.raises(rs.CircuitOpenError) as info:
        run_virtual(policy.acall(dependency), clock)
    assert inner.state.value == "open"
    assert not rs.refused_by_policy(info.value)  # unstamped, as a Retry's last refusal is
    assert outer.state.value == "open"  # the outer breaker counted the call's failure


def test_a_final_refusal_while_an_attempt_is_in_flight_is_the_calls_outcome() -> None:
    """An attempt still running when the call ends may have reached the dependency."""
    clock = SimClock()
    gate = rs.Bulkhead("gate", max_concurrent=1)

    async def dependency() -> str:
        await clock.asleep(10)
        return "slow"

    hedge = rs.Hedge(delay=0.1, attempts=2, on=ConnectionError, clock=clock)
    with pytest.raises(rs.BulkheadFullError) as info:  # not `on`: final at once
        run_virtual(rs.Pipeline(hedge, gate).acall(dependency), clock)
    assert not rs.refused_by_policy(info.value)
    assert gate.in_use == 0  # the cancelled first attempt gave its slot back


def test_a_final_refusal_with_nothing_sent_stays_a_refusal() -> None:
    clock = SimClock()
    breaker, budget = refused_only(clock)

    async def dependency() -> str:
        return "ok"

    hedge = rs.Hedge(delay=0.1, attempts=2, on=ConnectionError, budget=budget, clock=clock)
    with pytest.raises(rs.CircuitOpenError) as info:
        run_virtual(rs.Pipeline(hedge, breaker).acall(dependency), clock)
    assert rs.refused_by_policy(info.value)
    assert budget.snapshot()["calls"] == 0  # the deposit was given back
