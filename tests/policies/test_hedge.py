"""Hedge: delayed concurrent attempts, first acceptable outcome wins, losers cancelled.

Every test runs on the virtual-time loop of :mod:`resilience.simulate` (a FakeClock whose async
sleeps park the task until virtual time reaches them), so timings are exact and instant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import resilience as rs
from resilience.events import HedgeCancelled, HedgeStarted, HedgeWon
from resilience.simulate import SimClock, run_virtual
from resilience.testing import RecordingListener

from ..helpers import Boom


class Backend:
    """Attempt i sleeps ``latencies[i]`` then returns ``outcomes[i]`` (raised if an exception)."""

    def __init__(
        self, clock: SimClock, latencies: list[float], outcomes: list[object] | None = None
    ):
        self.clock = clock
        self.latencies = latencies
        self.outcomes = outcomes
        self.started: list[float] = []
        self.cleaned: list[int] = []
        self.cancelled: list[int] = []

    async def __call__(self) -> object:
        i = len(self.started)
        self.started.append(self.clock.monotonic())
        try:
            await self.clock.asleep(self.latencies[i])
        except asyncio.CancelledError:
            self.cancelled.append(i)
            raise
        finally:
            self.cleaned.append(i)
        out = self.outcomes[i] if self.outcomes is not None else f"attempt-{i + 1}"
        if isinstance(out, BaseException):
            raise out
        return out


def run(clock: SimClock, make: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        try:
            return await make()
        finally:
            await asyncio.sleep(0)
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            assert others == [], f"tasks left behind: {others}"

    return run_virtual(main(), clock)


def test_fast_primary_sends_no_hedge() -> None:
    clock, rec = SimClock(), RecordingListener()
    backend = Backend(clock, [0.05])
    hedge = rs.Hedge(delay=0.1, clock=clock, listeners=[rec])
    assert run(clock, lambda: hedge.acall(backend)) == "attempt-1"
    assert backend.started == [0.0]
    assert rec.events == []


def test_slow_primary_is_hedged_after_the_delay_and_cancelled_with_cleanup() -> None:
    clock, rec = SimClock(), RecordingListener()
    backend = Backend(clock, [1.0, 0.05])
    hedge = rs.Hedge(delay=0.1, clock=clock, listeners=[rec], name="h")

    async def call() -> tuple[object, float]:
        return await hedge.acall(backend), clock.monotonic()

    result, at = run(clock, call)
    assert result == "attempt-2"
    assert at == pytest.approx(0.15)
    assert backend.started == [0.0, pytest.approx(0.1)]
    assert backend.cancelled == [0]
    assert sorted(backend.cleaned) == [0, 1]
    assert [type(e) for e in rec.events] == [HedgeStarted, HedgeWon, HedgeCancelled]
    started = rec.of(HedgeStarted)[0]
    assert (started.policy, started.attempt, started.reason) == ("h", 2, "delay")
    assert (rec.of(HedgeWon)[0].attempt, rec.of(HedgeWon)[0].attempts) == (2, 2)
    assert rec.of(HedgeCancelled)[0].attempts == 1


def test_primary_still_wins_when_it_answers_before_the_hedge() -> None:
    clock = SimClock()
    backend = Backend(clock, [0.3, 0.5])
    assert run(clock, lambda: rs.Hedge(delay=0.1, clock=clock).acall(backend)) == "attempt-1"
    assert backend.cancelled == [1]


def test_up_to_attempts_in_flight_with_a_schedule() -> None:
    clock = SimClock()
    backend = Backend(clock, [5.0, 5.0, 0.1])
    seen: list[int] = []

    def schedule(started: int) -> float:
        seen.append(started)
        return 0.2 * started

    hedge = rs.Hedge(delay=schedule, attempts=3, clock=clock)
    assert run(clock, lambda: hedge.acall(backend)) == "attempt-3"
    assert backend.started == [0.0, pytest.approx(0.2), pytest.approx(0.6)]
    assert seen == [1, 2]  # asked once per hedge to send
    assert sorted(backend.cancelled) == [0, 1]


def test_unacceptable_failure_hedges_at_once_fallback_mode() -> None:
    clock, rec = SimClock(), RecordingListener()
    backend = Backend(clock, [0.01, 0.02], [Boom("first"), "ok"])
    hedge = rs.Hedge(delay=10, on=Boom, clock=clock, listeners=[rec])
    assert run(clock, lambda: hedge.acall(backend)) == "ok"
    assert backend.started == [0.0, pytest.approx(0.01)]
    assert rec.of(HedgeStarted)[0].reason == "failure"


def test_unacceptable_result_hedges_and_all_unacceptable_returns_the_last() -> None:
    clock = SimClock()
    backend = Backend(clock, [0.01, 0.5, 0.02], [503, 503, 502])
    hedge = rs.Hedge(delay=0.1, attempts=3, on_result=lambda r: r >= 500, clock=clock)
    # 1 fails at 0.01 -> hedge 2 at once; 2 still running at 0.11 -> hedge 3, fails at 0.13;
    # 2 fails at 0.51: the last to arrive
    assert run(clock, lambda: hedge.acall(backend)) == 503
    assert backend.started == [0.0, pytest.approx(0.01), pytest.approx(0.11)]


def test_all_attempts_failing_raise_the_last_failure_with_a_note() -> None:
    clock = SimClock()
    backend = Backend(clock, [0.3, 0.05], [Boom("primary"), Boom("hedge")])
    hedge = rs.Hedge(delay=0.1, clock=clock, name="h")
    with pytest.raises(Boom, match="primary") as info:  # the primary's arrived last (at 0.3)
        run(clock, lambda: hedge.acall(backend))
    assert any("all 2 attempt(s) were unacceptable" in n for n in info.value.__notes__)


def test_an_acceptable_exception_is_final_and_cancels_the_others() -> None:
    clock = SimClock()
    backend = Backend(clock, [1.0, 0.05], ["slow", KeyError("final")])
    with pytest.raises(KeyError):
        run(clock, lambda: rs.Hedge(delay=0.1, on=Boom, clock=clock).acall(backend))
    assert backend.cancelled == [0]


def test_budget_refusal_sends_no_hedge_and_the_primary_continues() -> None:
    clock = SimClock()
    budget = rs.RetryBudget(ratio=0.0, min_per_second=0, clock=clock)
    backend = Backend(clock, [1.0])
    hedge = rs.Hedge(delay=0.1, budget=budget, clock=clock)
    assert run(clock, lambda: hedge.acall(backend)) == "attempt-1"
    assert backend.started == [0.0]


def test_budget_pays_for_hedges() -> None:
    clock = SimClock()
    budget = rs.RetryBudget(ratio=0.5, min_per_second=0, clock=clock)
    hedge = rs.Hedge(delay=0.1, budget=budget, clock=clock)
    hedged = 0
    for _ in range(4):
        backend = Backend(clock, [1.0, 0.05])
        run(clock, lambda b=backend: hedge.acall(b))  # type: ignore[misc]
        hedged += len(backend.started) - 1
    assert hedged == 2  # ratio 0.5 of 4 calls
    assert budget.snapshot()["retries"] == 2


def test_server_pushback_stops_further_hedges() -> None:
    clock = SimClock()
    err = Boom("overloaded")
    rs.attach_retry_after(err, -1)
    backend = Backend(clock, [0.01, 0.5], [err, "never"])
    hedge = rs.Hedge(delay=0.1, on=Boom, attempts=3, clock=clock)
    with pytest.raises(Boom, match="overloaded"):
        run(clock, lambda: hedge.acall(backend))
    assert backend.started == [0.0]


def test_server_delay_postpones_the_next_hedge() -> None:
    clock = SimClock()
    err = Boom("busy")
    rs.attach_retry_after(err, 0.5)
    backend = Backend(clock, [0.01, 0.01], [err, "ok"])
    assert run(clock, lambda: rs.Hedge(delay=0.1, on=Boom, clock=clock).acall(backend)) == "ok"
    assert backend.started == [0.0, pytest.approx(0.51)]


def test_the_enclosing_deadline_applies_to_every_attempt_and_cancels_them() -> None:
    clock = SimClock()
    backend = Backend(clock, [5.0, 5.0])
    seen: list[float | None] = []

    async def attempt() -> object:
        seen.append(rs.remaining())
        return await backend()

    pipeline = rs.Pipeline(rs.Timeout(1.0, clock=clock), rs.Hedge(delay=0.1, clock=clock))
    with pytest.raises(rs.TimeoutExceededError):
        run(clock, lambda: pipeline.acall(attempt))
    assert seen == [pytest.approx(1.0), pytest.approx(0.9)]
    assert sorted(backend.cancelled) == [0, 1]
    assert sorted(backend.cleaned) == [0, 1]


def test_caller_state_can_forbid_a_hedge() -> None:
    class State:
        def __resilience_may_hedge__(self) -> bool:
            return False

    clock = SimClock()
    starts: list[float] = []

    async def attempt(state: State) -> str:
        starts.append(clock.monotonic())
        await clock.asleep(1.0)
        return "primary"

    hedge = rs.Hedge(delay=0.1, clock=clock)
    assert run(clock, lambda: hedge.acall(attempt, State())) == "primary"
    assert starts == [0.0]


def test_percentile_delay_learns_from_observed_latencies() -> None:
    clock = SimClock()
    p90 = rs.Hedge.percentile(90, window=20, min_samples=10, fallback=5.0)
    hedge = rs.Hedge(delay=p90, clock=clock)
    assert p90.delay(1) == 5.0
    for i in range(20):
        run(clock, lambda i=i: hedge.acall(Backend(clock, [0.01 * (i % 10 + 1)])))  # type: ignore[misc]
    assert p90.delay(1) == pytest.approx(0.09)
    backend = Backend(clock, [1.0, 0.01])
    start = clock.monotonic()
    run(clock, lambda: hedge.acall(backend))
    assert backend.started[1] - start == pytest.approx(0.09)


def test_sync_functions_are_refused_at_decoration() -> None:
    hedge = rs.Hedge(delay=0.1)
    with pytest.raises(rs.ConfigurationError, match="coroutine functions only"):
        hedge(lambda: 1)
    with pytest.raises(rs.ConfigurationError):
        hedge.call(lambda: 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delay": -1},
        {"delay": "soon"},
        {"delay": 0.1, "attempts": 0},
        {"delay": 0.1, "budget": object()},
        {"delay": 0.1, "retry_after": 3},
    ],
)
def test_options_are_validated(kwargs: dict[str, Any]) -> None:
    with pytest.raises(rs.ConfigurationError):
        rs.Hedge(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"percentile": 0}, {"percentile": 100}, {"window": 0}, {"min_samples": 5, "window": 2}],
)
def test_percentile_options_are_validated(kwargs: dict[str, Any]) -> None:
    args = {"percentile": 95, **kwargs}
    with pytest.raises(rs.ConfigurationError):
        rs.Hedge.percentile(args.pop("percentile"), **args)


def test_a_schedule_returning_garbage_is_a_configuration_error() -> None:
    clock = SimClock()
    hedge = rs.Hedge(delay=lambda n: -1.0, clock=clock)
    with pytest.raises(rs.ConfigurationError):
        run(clock, lambda: hedge.acall(Backend(clock, [0.1])))


def test_outer_cancellation_cancels_every_attempt() -> None:
    clock = SimClock()
    backend = Backend(clock, [5.0, 5.0])

    async def main() -> None:
        task = asyncio.ensure_future(rs.Hedge(delay=0.1, clock=clock).acall(backend))
        await clock.asleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sorted(backend.cancelled) == [0, 1]

    run(clock, main)


def test_a_drained_retry_throttle_sends_no_hedge() -> None:
    clock = SimClock()
    throttle = rs.RetryThrottle(max_tokens=4, token_ratio=0.1)
    for _ in range(2):
        throttle.record(False)  # 2 tokens left: not above 4 / 2
    backend = Backend(clock, [1.0])
    hedge = rs.Hedge(delay=0.1, budget=throttle, clock=clock)
    assert run(clock, lambda: hedge.acall(backend)) == "attempt-1"
    assert backend.started == [0.0]


def test_a_failed_hedge_costs_a_throttle_token_and_a_success_earns() -> None:
    clock = SimClock()
    throttle = rs.RetryThrottle(max_tokens=10, token_ratio=0.5)
    backend = Backend(clock, [1.0, 0.05], ["slow", Boom("hedge failed")])
    hedge = rs.Hedge(delay=0.1, on=Boom, budget=throttle, clock=clock)
    assert run(clock, lambda: hedge.acall(backend)) == "slow"  # the primary still answered
    assert throttle.tokens == 9.5  # 10 - 1 (the hedge's failure), capped + 0.5 (the success)


def test_a_cancelled_slow_loser_counts_with_the_time_it_ran() -> None:
    class Seen:
        def __init__(self) -> None:
            self.samples: list[float] = []

        def delay(self, started: int) -> float:
            return 0.1

        def observe(self, seconds: float) -> None:
            self.samples.append(round(seconds, 3))

    clock, seen = SimClock(), Seen()
    hedge = rs.Hedge(delay=seen, attempts=3, clock=clock)
    backend = Backend(clock, [1.0, 0.05, 1.0])
    assert run(clock, lambda: hedge.acall(backend)) == "attempt-2"
    # the winner's own latency; the primary ran 0.15 s (> the 0.1 s delay): a lower bound of a
    # slow latency; the third attempt never started (the hedge won at 0.15 < 0.2)
    assert seen.samples == [0.05, 0.15]
