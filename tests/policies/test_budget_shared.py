"""Budgets shared through a store (``store=``), on the memory store and a fake clock: one bound
for every instance (process) using the name, counts sent with the next decision or in the
background, ``on_store_error``, async decisions awaited, refunds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import resilience as rs
from resilience._degraded import degraded_count
from resilience.events import StoreFailed
from resilience.simulate import SimClock, run_virtual
from resilience.testing import FakeClock, RecordingListener

from ..conftest import Runner
from ..helpers import Boom, BrokenStore


class CountingStore(rs.MemoryStore):
    """A memory store counting the operations applied through each entry point."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.sync_ops = 0
        self.async_ops = 0

    def apply(self, op: Any, /) -> Any:
        self.sync_ops += 1
        return super().apply(op)

    async def aapply(self, op: Any, /) -> Any:
        self.async_ops += 1
        return super()._apply_locked(op, self.clock.monotonic())


def fleet(clock: FakeClock, store: Any, n: int = 4, **kw: Any) -> list[rs.RetryBudget]:
    """``n`` budgets with one name: the processes of a fleet."""
    kw = {"ratio": 0.2, "min_per_second": 0.0, **kw}
    return [rs.RetryBudget(name="api", store=store, clock=clock, **kw) for _ in range(n)]


def storm(runner: Runner, clock: FakeClock, budgets: list[rs.RetryBudget], calls: int) -> int:
    """Every budget's process makes ``calls`` calls to a dependency that always fails (3
    attempts each); the attempts made in total."""
    fn = runner.scripted([Boom("down")])
    for budget in budgets:
        policy = rs.Retry(
            on=Boom, attempts=3, backoff=rs.backoff.constant(0), budget=budget, clock=clock
        )
        for _ in range(calls):
            with pytest.raises(Boom):
                runner.run(policy, fn)
    return len(runner.calls)


def test_a_store_needs_a_name_and_valid_options() -> None:
    store = rs.MemoryStore()
    with pytest.raises(rs.ConfigurationError, match="name"):
        rs.RetryBudget(store=store)
    with pytest.raises(rs.ConfigurationError, match="name"):
        rs.RetryThrottle(store=store)
    with pytest.raises(rs.ConfigurationError, match="name"):
        rs.RetryBudget(name="", store=store)
    with pytest.raises(rs.ConfigurationError, match="on_store_error"):
        rs.RetryBudget(name="a", store=store, on_store_error="fail")  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError, match="store"):
        rs.RetryThrottle(name="a", store=object())  # type: ignore[arg-type]
    assert "name='a'" in repr(rs.RetryBudget(name="a", store=store))
    assert rs.RetryBudget(name="solo").store is None  # a name alone changes nothing


def test_one_bound_for_the_fleet_not_one_per_process(runner: Runner, clock: FakeClock) -> None:
    # 4 processes x 25 calls, all failing, 3 attempts each; ratio 0.2, a reserve of 1 retry
    # per second over the 10 s window
    shared = fleet(clock, rs.MemoryStore(clock=clock), min_per_second=1.0)
    assert storm(runner, clock, shared, calls=25) == 100 + (20 + 10)  # 0.2 x 100 + 10
    runner.calls.clear()
    apart = [rs.RetryBudget(ratio=0.2, min_per_second=1.0, clock=clock) for _ in range(4)]
    assert storm(runner, clock, apart, calls=25) == 100 + 4 * (5 + 10)  # a reserve each


def test_counts_wait_for_a_decision_or_the_background_send(clock: FakeClock) -> None:
    store = CountingStore(clock=clock)
    a, b = fleet(clock, store, n=2)
    a.deposit()  # the first count is sent at once
    a.deposit()
    a.deposit()
    assert store.sync_ops == 1
    assert b.snapshot()["calls"] == 1  # the other two are still pending in a
    clock.advance(0.1)
    a.deposit()  # 0.1 s after the previous send: everything pending goes
    assert b.snapshot()["calls"] == 4
    assert a.try_withdraw() is False  # 0.2 x 4 < 1: a decision carries a's counts (none left)
    for _ in range(6):
        a.deposit()  # pending: no send within 0.1 s of the decision
    assert b.snapshot()["calls"] == 4
    assert a.try_withdraw() is True  # carried with the decision: 0.2 x 10 = 2 retries
    assert b.snapshot() == {"calls": 10, "retries": 1, "ratio": 0.2}
    clock.advance(10.0)
    assert b.snapshot()["calls"] == 0  # the window slid on the store's clock


def test_refunds_reach_the_fleet(clock: FakeClock) -> None:
    a, b = fleet(clock, rs.MemoryStore(clock=clock), n=2, ratio=1.0)
    for _ in range(3):
        a.deposit()
    assert b.try_withdraw()
    a.refund(retry=False)  # a call refused before reaching the dependency
    b.refund(retry=True)  # a retry refused inside the retry
    assert a.try_withdraw()  # carries a's refund
    assert b.snapshot() == {"calls": 2, "retries": 1, "ratio": 1.0}


def test_the_throttle_is_shared(runner: Runner, clock: FakeClock) -> None:
    store = rs.MemoryStore(clock=clock)
    a, b = (rs.RetryThrottle(max_tokens=4, name="grpc", store=store, clock=clock) for _ in "ab")
    for _ in range(2):
        a.record(False)
        clock.advance(0.1)  # each failure sent on its own
    assert a.snapshot()["tokens"] == 2.0
    assert not b.try_withdraw()  # a's failures throttle b's retries: 2 is not above 4 / 2
    assert b.tokens == 4.0  # b's own bucket never saw a failure
    for _ in range(10):
        b.record(True)
    assert b.try_withdraw()  # 2 + 10 x 0.1 = 3 tokens
    assert a.snapshot() == {"tokens": 3.0, "max_tokens": 4.0}
    policy = rs.Retry(on=Boom, attempts=5, backoff=rs.backoff.constant(0), budget=a, clock=clock)
    with pytest.raises(Boom) as info:
        runner.run(policy, runner.scripted([Boom("down")]))
    assert len(runner.calls) == 1  # 3 - 1 = 2 tokens: no retry
    assert "(budget)" in info.value.__notes__[0]


@pytest.mark.parametrize("mode", ["local", "open", "closed"])
def test_a_failing_store_decides_per_on_store_error(clock: FakeClock, mode: Any) -> None:
    rec = RecordingListener()
    name = f"down-{mode}"
    budget = rs.RetryBudget(
        ratio=0.5,
        min_per_second=0,
        name=name,
        store=BrokenStore(),
        on_store_error=mode,
        clock=clock,
        listeners=[rec],
    )
    for _ in range(4):
        budget.deposit()  # the background send fails: its counts are not recorded
    decisions = [budget.try_withdraw() for _ in range(4)]
    expected = {"local": [True, True, False, False], "open": [True] * 4, "closed": [False] * 4}
    assert decisions == expected[mode]  # "local": this process's own 0.5 x 4 = 2 retries
    kinds = [e.decision for e in rec.of(StoreFailed)]
    assert kinds == ["unrecorded"] + [mode] * 4
    assert degraded_count(name, mode) == 4
    with pytest.raises(rs.StoreError):
        budget.snapshot()


def test_local_fallback_counts_the_retries_the_store_allowed(clock: FakeClock) -> None:
    class Flaky(rs.MemoryStore):
        down = False

        def apply(self, op: Any, /) -> Any:
            if self.down:
                raise rs.StoreError("down")
            return super().apply(op)

    store = Flaky(clock=clock)
    budget = fleet(clock, store, n=1, ratio=0.5)[0]
    for _ in range(4):
        budget.deposit()
    assert budget.try_withdraw()
    assert budget.try_withdraw()
    store.down = True
    assert not budget.try_withdraw()  # its own window: 2 of 0.5 x 4 already taken


def test_async_retries_await_the_store(clock: FakeClock) -> None:
    store = CountingStore(clock=clock)
    budget = fleet(clock, store, n=1, ratio=2.0)[0]
    throttle = rs.RetryThrottle(name="t", store=store, clock=clock)

    async def main() -> int:
        attempts = 0

        async def down() -> None:
            nonlocal attempts
            attempts += 1
            raise Boom("down")

        for b in (budget, throttle):
            policy = rs.Retry(on=Boom, attempts=3, backoff=rs.backoff.constant(0), budget=b)
            with pytest.raises(Boom):
                await policy.acall(down)
        return attempts

    assert asyncio.run(main()) == 6
    assert store.async_ops == 4  # every retry decision, awaited
    assert store.sync_ops == 2  # only the first counts of each, sent in the background
    assert budget.snapshot()["retries"] == 2


def test_hedges_await_a_shared_budget() -> None:
    clock = SimClock()
    store = CountingStore(clock=clock)
    # no ratio, a reserve of 1 per 10 s window: one hedge for the fleet
    a, b = fleet(clock, store, n=2, ratio=0.0, min_per_second=0.1)
    started: list[float] = []

    async def slow() -> str:
        started.append(clock.monotonic())
        await clock.asleep(1.0)
        return "ok"

    for budget in (a, b):
        hedge = rs.Hedge(delay=0.1, attempts=3, budget=budget, clock=clock)
        assert run_virtual(hedge.acall(slow), clock) == "ok"
    assert len(started) == 3  # 2 calls, 1 hedge in all: b's calls found the reserve spent
    # the hedge decisions, awaited: a's second hedge refused, then b's first (no more after one)
    assert store.async_ops == 3
    assert a.snapshot()["retries"] == 1
