"""The chaos policies (rs.chaos): rates, switches, events, deadlines, validation; sync and async,
on a FakeClock with a scripted random source."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Iterable
from typing import Any

import pytest

import resilience as rs
from resilience.testing import FakeClock, RecordingListener

from ..helpers import Boom


class Draws:
    """A random source returning the given draws in turn (then repeating them)."""

    def __init__(self, draws: Iterable[float]) -> None:
        self._draws = itertools.cycle(list(draws))
        self.count = 0

    def random(self) -> float:
        self.count += 1
        return next(self._draws)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- fault --------------------------------------------------------------------------------------
def test_fault_rate_decides_per_call_with_the_injected_random() -> None:
    seen = RecordingListener()
    fault = rs.chaos.Fault(
        rate=0.5, error=Boom, random=Draws([0.1, 0.9, 0.49, 0.5]), listeners=[seen]
    )
    call = fault(lambda: "ran")
    outcomes = []
    for _ in range(4):
        try:
            outcomes.append(call())
        except Boom as exc:
            outcomes.append(str(exc))
    assert outcomes == [
        "chaos: fault injected by 'fault'",
        "ran",
        "chaos: fault injected by 'fault'",
        "ran",
    ]
    events = seen.of(rs.events.ChaosInjected)
    assert [(e.policy, e.injection, e.kind) for e in events] == [("fault", "fault", "chaos")] * 2
    assert events[0].operation.endswith("<lambda>")


def test_fault_error_instance_class_and_factory() -> None:
    instance = Boom("same")
    with pytest.raises(Boom, match="same") as first:
        rs.chaos.Fault(rate=1, error=instance).call(lambda: None)
    assert first.value is instance
    errors = iter([KeyError("a"), KeyError("b")])
    fault = rs.chaos.Fault(rate=1, error=lambda: next(errors), name="keys")
    with pytest.raises(KeyError, match="a"):
        fault.call(lambda: None)
    with pytest.raises(KeyError, match="b"):
        fault.call(lambda: None)
    bad = rs.chaos.Fault(rate=1, error=lambda: "not an exception")  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="returned 'not an exception'"):
        bad.call(lambda: None)


def test_fault_async_does_not_run_the_call() -> None:
    ran = []

    async def work() -> str:
        ran.append(1)
        return "ran"

    fault = rs.chaos.Fault(rate=1, error=ConnectionError("down"))
    with pytest.raises(ConnectionError, match="down"):
        run(fault.acall(work))
    assert ran == []
    assert run(rs.chaos.Fault(rate=0, error=Boom).acall(work)) == "ran"


def test_fault_inside_a_retry_is_a_real_failure() -> None:
    clock = FakeClock()
    seen = RecordingListener()
    fault = rs.chaos.Fault(rate=0.5, error=ConnectionError, random=Draws([0.0, 0.0, 0.9]))
    retry = rs.Retry(on=ConnectionError, attempts=3, backoff=rs.backoff.constant(1), clock=clock)
    calls: list[int] = []

    def work() -> str:
        calls.append(1)
        return "ok"

    assert rs.Pipeline(retry, fault, listeners=[seen]).call(work) == "ok"
    assert calls == [1]
    assert seen.kinds() == ["chaos", "retry", "chaos", "retry"]
    assert clock.monotonic() == 2.0


# -- switch -------------------------------------------------------------------------------------
def test_disabled_policy_builds_no_wrapper() -> None:
    def fn() -> int:
        return 1

    async def afn() -> int:
        return 2

    em = rs.Emitter((), None, "fn")
    policies: list[rs.chaos.ChaosPolicy] = [
        rs.chaos.Fault(rate=1, error=Boom, enabled=False),
        rs.chaos.Latency(rate=1, seconds=1, enabled=False),
        rs.chaos.Outcome(rate=1, value=0, enabled=False),
        rs.chaos.Behavior(rate=1, action=lambda: None, enabled=False),
    ]
    for policy in policies:
        assert policy.wrap_sync(fn, em) is fn
        assert policy.wrap_async(afn, em) is afn
        assert policy(fn) is fn  # the decorator returns the function itself
        assert policy(afn) is afn
        assert policy.wrap(fn, operation="GET /x") is fn
        assert policy.call(fn) == 1
    assert rs.Pipeline(*policies).call(fn) == 1
    with pytest.raises(rs.ConfigurationError, match="operation"):
        policies[0].wrap(fn, operation="")


def test_disabled_policy_still_refuses_a_generator_function() -> None:
    def gen() -> Any:
        yield 1

    with pytest.raises(rs.ConfigurationError, match="generator"):
        rs.chaos.Fault(rate=1, error=Boom, enabled=False)(gen)


def test_callable_switch_is_asked_per_call_and_before_the_draw() -> None:
    flag = {"on": False}
    draws = Draws([0.0])
    asked = []

    def switch() -> bool:
        asked.append(1)
        return flag["on"]

    canned = rs.chaos.Outcome(rate=1, value="canned", enabled=switch, random=draws)
    call = canned(lambda: "live")
    assert call() == "live"
    assert draws.count == 0  # off: no random draw
    flag["on"] = True
    assert call() == "canned"
    flag["on"] = False
    assert call() == "live"
    assert len(asked) == 3
    assert draws.count == 1


# -- latency ------------------------------------------------------------------------------------
def test_latency_sleeps_on_the_injected_clock() -> None:
    clock = FakeClock()
    seen = RecordingListener()
    slow = rs.chaos.Latency(
        rate=0.3, seconds=2, clock=clock, random=Draws([0.2, 0.4]), listeners=[seen]
    )
    call = slow(lambda: clock.monotonic())
    assert call() == 2.0
    assert call() == 2.0  # not injected
    assert [e.delay for e in seen.of(rs.events.ChaosInjected)] == [2.0]

    async def now() -> float:
        return clock.monotonic()

    assert run(slow.acall(now)) == 4.0


def test_latency_factory_draws_a_delay_per_injection() -> None:
    clock = FakeClock()
    delays = iter([0.5, 1.5])
    slow = rs.chaos.Latency(rate=1, seconds=lambda: next(delays), clock=clock)
    slow.call(lambda: None)
    slow.call(lambda: None)
    assert clock.monotonic() == 2.0
    assert slow.describe()["seconds"] == "dynamic"


def test_latency_ends_at_the_deadline_and_the_call_does_not_run_sync() -> None:
    clock = FakeClock()
    seen = RecordingListener()
    slow = rs.chaos.Latency(rate=1, seconds=10, clock=clock, listeners=[seen])
    ran = []
    with rs.deadline_scope(3.0, clock=clock):
        clock.advance(1.0)
        with pytest.raises(rs.TimeoutExceededError, match="during an injected latency") as info:
            slow.call(lambda: ran.append(1))
    assert clock.monotonic() == 3.0  # waited 2 s, not 10
    assert ran == []
    assert info.value.policy == ""  # the caller's deadline, not a policy's own timeout
    assert seen.of(rs.events.ChaosInjected)[0].delay == 2.0


def test_latency_shorter_than_the_deadline_runs_the_call() -> None:
    clock = FakeClock()
    slow = rs.chaos.Latency(rate=1, seconds=1, clock=clock)
    with rs.deadline_scope(3.0, clock=clock):
        assert slow.call(lambda: rs.remaining()) == 2.0


def test_latency_ends_at_the_deadline_async() -> None:
    clock = FakeClock()
    slow = rs.chaos.Latency(rate=1, seconds=10, clock=clock)
    ran = []

    async def work() -> None:
        ran.append(clock.monotonic())

    async def main() -> None:
        with rs.deadline_scope(1.5, clock=clock):
            await slow.acall(work)

    with pytest.raises(rs.TimeoutExceededError, match="during an injected latency"):
        run(main())
    assert clock.monotonic() == 1.5
    assert ran == []


def test_latency_under_a_timeout_policy_async() -> None:
    clock = FakeClock()
    slow = rs.chaos.Latency(rate=1, seconds=10, clock=clock)

    async def work() -> None:
        return None

    with pytest.raises(rs.TimeoutExceededError):
        run(rs.Pipeline(rs.Timeout(1.5, clock=clock), slow).acall(work))
    assert clock.monotonic() == 1.5


def test_latency_past_a_spent_deadline_does_not_wait() -> None:
    clock = FakeClock()
    slow = rs.chaos.Latency(rate=1, seconds=10, clock=clock)
    with rs.deadline_scope(1.0, clock=clock):
        clock.advance(2.0)
        with pytest.raises(rs.TimeoutExceededError):
            slow.call(lambda: None)
    assert clock.monotonic() == 2.0


# -- outcome ------------------------------------------------------------------------------------
def test_outcome_value_and_factory() -> None:
    ran = []
    canned = rs.chaos.Outcome(rate=1, value={"x": 1})
    assert canned.call(lambda: ran.append(1)) == {"x": 1}
    counter = itertools.count()
    fresh = rs.chaos.Outcome(rate=1, factory=lambda: next(counter))
    assert [fresh.call(lambda: -1) for _ in range(3)] == [0, 1, 2]

    async def live() -> str:
        ran.append(1)
        return "live"

    assert run(canned.acall(live)) == {"x": 1}
    assert ran == []


def test_outcome_seen_by_a_fallback_predicate() -> None:
    canned = rs.chaos.Outcome(rate=1, value=None, name="empty")
    fallback = rs.Fallback(on=Boom, value="default", on_result=lambda r: r is None)
    assert rs.Pipeline(fallback, canned).call(lambda: "live") == "default"


# -- behavior -----------------------------------------------------------------------------------
def test_behavior_runs_the_action_then_the_call() -> None:
    order: list[str] = []
    seen = RecordingListener()
    chaos = rs.chaos.Behavior(
        rate=0.5, action=lambda: order.append("action"), random=Draws([0.1, 0.7]), listeners=[seen]
    )
    call = chaos(lambda: order.append("call"))
    call()
    call()
    assert order == ["action", "call", "call"]
    assert seen.kinds() == ["chaos"]


def test_behavior_async_awaits_a_coroutine_action() -> None:
    order: list[str] = []

    async def action() -> None:
        order.append("action")

    async def work() -> str:
        order.append("call")
        return "done"

    assert run(rs.chaos.Behavior(rate=1, action=action).acall(work)) == "done"
    assert run(rs.chaos.Behavior(rate=1, action=lambda: order.append("plain")).acall(work))
    assert order == ["action", "call", "plain", "call"]
    with pytest.raises(rs.ConfigurationError, match="needs an async caller"):
        rs.chaos.Behavior(rate=1, action=action).call(lambda: None)


def test_behavior_action_error_propagates_and_the_call_does_not_run() -> None:
    def action() -> None:
        raise Boom("action failed")

    ran = []
    with pytest.raises(Boom, match="action failed"):
        rs.chaos.Behavior(rate=1, action=action).call(lambda: ran.append(1))
    assert ran == []


# -- validation, describe -----------------------------------------------------------------------
@pytest.mark.parametrize("rate", [-0.1, 1.01, float("nan"), True, "0.5", None])
def test_rate_is_validated(rate: Any) -> None:
    with pytest.raises(rs.ConfigurationError, match="rate must be"):
        rs.chaos.Outcome(rate=rate, value=1)


_C = rs.chaos


@pytest.mark.parametrize(
    ("cls", "options", "match"),
    [
        (_C.Fault, {"error": 42}, "error must be"),
        (_C.Fault, {"error": int}, "exception class"),
        (_C.Latency, {"seconds": -1}, "seconds"),
        (_C.Latency, {"seconds": "1"}, "seconds"),
        (_C.Outcome, {}, "exactly one"),
        (_C.Outcome, {"value": 1, "factory": lambda: 2}, "exactly one"),
        (_C.Outcome, {"factory": 3}, "factory must be"),
        (_C.Behavior, {"action": None}, "action must be"),
        (_C.Fault, {"error": Boom, "enabled": "yes"}, "enabled must be"),
        (_C.Fault, {"error": Boom, "name": ""}, "name"),
        (_C.Fault, {"error": Boom, "random": object()}, "random"),
        (_C.Latency, {"seconds": 1, "clock": object()}, "Clock"),
    ],
)
def test_options_are_validated(cls: Any, options: dict[str, Any], match: str) -> None:
    with pytest.raises(rs.ConfigurationError, match=match):
        cls(rate=1, **options)


def test_describe() -> None:
    assert rs.chaos.Latency(rate=0.25, seconds=1.5, name="slow").describe() == {
        "kind": "chaos",
        "name": "slow",
        "injection": "latency",
        "rate": 0.25,
        "enabled": True,
        "seconds": 1.5,
    }
    assert rs.chaos.Fault(rate=1, error=Boom, enabled=lambda: True).describe()["enabled"] == (
        "dynamic"
    )
    assert "Outcome(name='outcome'" in repr(rs.chaos.Outcome(rate=1, value=1))


def test_seeded_runs_repeat() -> None:
    def trace(seed: int) -> list[bool]:
        fault = rs.chaos.Fault(rate=0.3, error=Boom, random=random.Random(seed))
        call = fault(lambda: None)
        out = []
        for _ in range(50):
            try:
                call()
                out.append(False)
            except Boom:
                out.append(True)
        return out

    assert trace(3) == trace(3)
    assert 5 < sum(trace(3)) < 25
