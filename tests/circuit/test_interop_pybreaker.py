"""resilience.interop.pybreaker: an existing pybreaker breaker inside a pipeline."""

from __future__ import annotations

import asyncio
from typing import Any

import pybreaker
import pytest

import resilience as rs
from resilience.events import CallRejected, CircuitStateChanged
from resilience.interop.pybreaker import PyBreaker
from resilience.testing import FakeClock, RecordingListener

from ..conftest import Runner
from ..helpers import Boom


def test_rejects_with_circuit_open_error_and_events(runner: Runner, clock: FakeClock) -> None:
    legacy = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60, name="legacy")
    rec = RecordingListener()
    policy = rs.Pipeline(PyBreaker(legacy), name="p", listeners=[rec])
    fn = runner.scripted([Boom("1"), Boom("2"), "ok"])
    for expected in ("1", "2"):
        with pytest.raises(Boom) as info:  # the user's error, even on the tripping call
            runner.run(policy, fn)
        assert str(info.value) == expected
    with pytest.raises(rs.CircuitOpenError) as rejected:
        runner.run(policy, fn)
    assert isinstance(rejected.value.__cause__, pybreaker.CircuitBreakerError)
    assert rejected.value.retry_after is not None
    assert 0 < rejected.value.retry_after <= 60
    assert len(runner.calls) == 2
    changes = rec.of(CircuitStateChanged)
    assert [(e.from_state, e.to_state, e.reason, e.policy) for e in changes] == [
        ("closed", "open", "consecutive_failures", "legacy")
    ]
    (rej,) = rec.of(CallRejected)
    assert isinstance(rej, CallRejected)
    assert (rej.reason, rej.pipeline) == ("circuit_open", "p")


def test_half_open_probe_and_state(runner: Runner) -> None:
    legacy = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=0.0)
    rec = RecordingListener()
    policy = PyBreaker(legacy, name="pb", listeners=[rec])
    with pytest.raises(Boom):
        runner.run(policy, runner.scripted([Boom]))
    assert runner.run(policy, runner.scripted(["ok"])) == "ok"
    assert policy.state is rs.CircuitState.CLOSED
    reasons = [getattr(e, "reason", None) for e in rec.of(CircuitStateChanged)]
    assert reasons == ["consecutive_failures", "open_for_elapsed", "probes_succeeded"]
    assert policy.describe()["fail_max"] == 1


def test_does_not_serialise_calls() -> None:
    legacy = pybreaker.CircuitBreaker(fail_max=5)
    policy = PyBreaker(legacy)

    async def main() -> int:
        running = 0
        peak = 0

        async def work() -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0)
            running -= 1

        await asyncio.gather(*(policy.acall(work) for _ in range(10)))
        return peak

    assert asyncio.run(main()) == 10


def test_rejects_other_objects() -> None:
    obj: Any = object()
    with pytest.raises(rs.ConfigurationError):
        PyBreaker(obj)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_one_event_per_transition_across_decorated_functions(mode: str) -> None:
    legacy = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60, name="legacy")
    rec = RecordingListener()
    pipeline = rs.Pipeline(PyBreaker(legacy), name="p", listeners=[rec])

    def charge() -> None:
        raise Boom("down")

    def refund() -> str:
        return "ok"

    async def acharge() -> None:
        raise Boom("down")

    async def arefund() -> str:
        return "ok"

    if mode == "sync":
        guarded_charge, guarded_refund = pipeline(charge), pipeline(refund)
        assert guarded_refund() == "ok"
        for _ in range(2):
            with pytest.raises(Boom):
                guarded_charge()
    else:
        guarded_acharge, guarded_arefund = pipeline(acharge), pipeline(arefund)

        async def main() -> None:
            assert await guarded_arefund() == "ok"
            for _ in range(2):
                with pytest.raises(Boom):
                    await guarded_acharge()

        asyncio.run(main())
    changes = rec.of(CircuitStateChanged)
    assert [(e.from_state, e.to_state, e.pipeline) for e in changes] == [("closed", "open", "p")]
    assert "charge" in changes[0].operation  # named by the call that tripped the breaker


def test_one_event_per_listener_across_policies_sharing_a_breaker() -> None:
    legacy = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60, name="shared")
    rec = RecordingListener()
    first = PyBreaker(legacy, listeners=[rec])
    second = PyBreaker(legacy, name="other", listeners=[rec])
    pipeline = rs.Pipeline(second, name="p", listeners=[rec])

    @pipeline
    def charge() -> None:
        raise Boom("down")

    @first
    def refund() -> str:
        return "ok"

    assert refund() == "ok"
    with pytest.raises(Boom):
        charge()
    legacy.close()  # a manual transition, outside any call
    changes = rec.of(CircuitStateChanged)
    assert [(e.to_state, e.policy, e.pipeline, e.reason) for e in changes] == [
        ("open", "other", "p", "consecutive_failures"),  # named by the call that tripped it
        ("closed", "shared", None, "manual"),
    ]
    assert "charge" in changes[0].operation
    assert len(legacy.listeners) == 1  # one bridge, however many policies


def test_an_open_pybreaker_is_our_own_refusal(runner: Runner, clock: FakeClock) -> None:
    # issue 11 item 1: the policies around a PyBreaker ignore its CircuitOpenError (the call
    # never reached the function): the outer breaker stays closed, the outer limiter refunds
    legacy = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=600)
    legacy.open()
    outer_limit = rs.RateLimiter("outer", rate=5, per=60, clock=clock)
    outer_breaker = rs.CircuitBreaker("outer", failure_count=1, clock=clock)
    policy = rs.Pipeline(outer_limit, outer_breaker, PyBreaker(legacy))
    fn = runner.scripted(["ok"])
    for _ in range(10):
        with pytest.raises(rs.CircuitOpenError) as info:
            runner.run(policy, fn)
        assert info.value.policy == "pybreaker"
    assert runner.calls == []
    assert outer_breaker.state is rs.CircuitState.CLOSED
    assert outer_breaker.metrics.calls == 0
    assert outer_limit.try_acquire(cost=0).remaining == 5
