"""Retry behaviour, every scenario against a sync and an async function."""

from __future__ import annotations

import asyncio
import inspect
import random
from datetime import timedelta
from typing import Any

import pytest

import resilience as rs
from resilience.events import RetriesExhausted, RetryScheduled
from resilience.testing import FakeClock, RecordingListener

from ..conftest import Runner, Step
from ..helpers import Boom


def retry(clock: FakeClock, **kw: Any) -> rs.Retry:
    kw.setdefault("on", Boom)
    kw.setdefault("backoff", rs.backoff.constant(1.0))
    return rs.Retry(clock=clock, **kw)


def test_success_first_try_does_not_sleep(runner: Runner, clock: FakeClock) -> None:
    fn = runner.scripted(["ok"])
    assert runner.run(retry(clock), fn) == "ok"
    assert runner.calls == [0.0]
    assert clock.sleeps == []


def test_retries_until_success_with_backoff_sleeps(runner: Runner, clock: FakeClock) -> None:
    fn = runner.scripted([Boom, Boom, "ok"])
    assert runner.run(retry(clock, attempts=5), fn) == "ok"
    assert runner.calls == [0.0, 1.0, 2.0]
    assert clock.sleeps == [1.0, 1.0]


def test_exhausted_reraises_last_user_exception_with_note(runner: Runner, clock: FakeClock) -> None:
    errors = [Boom("first"), Boom("second"), Boom("third")]
    fn = runner.scripted(errors)
    with pytest.raises(Boom) as info:
        runner.run(retry(clock, attempts=3), fn)
    assert info.value is errors[2]
    assert len(runner.calls) == 3
    notes = getattr(info.value, "__notes__", [])
    assert notes == ["resilience: retry policy 'retry' gave up after 3 attempt(s) (attempts)"]
    # the user's own traceback is kept: its innermost frame is the scripted function
    tb = info.value.__traceback__
    assert tb is not None
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert tb.tb_frame.f_code.co_name == "finish"


def test_non_matching_exception_is_not_retried_and_not_annotated(
    runner: Runner, clock: FakeClock
) -> None:
    fn = runner.scripted([KeyError("k"), "ok"])
    with pytest.raises(KeyError) as info:
        runner.run(retry(clock), fn)
    assert len(runner.calls) == 1
    assert not getattr(info.value, "__notes__", [])


@pytest.mark.parametrize(
    "on",
    [Boom, (KeyError, Boom), lambda e: isinstance(e, Boom) and str(e) == "retry me"],
    ids=["type", "tuple", "predicate"],
)
def test_on_accepts_type_tuple_or_predicate(runner: Runner, clock: FakeClock, on: Any) -> None:
    fn = runner.scripted([Boom("retry me"), "ok"])
    assert runner.run(retry(clock, on=on), fn) == "ok"
    assert len(runner.calls) == 2


def test_on_result_retries_then_returns_last_result(runner: Runner, clock: FakeClock) -> None:
    fn = runner.scripted([503, 503, 503, 200])
    policy = retry(clock, attempts=3, on_result=lambda status: status == 503)
    assert runner.run(policy, fn) == 503  # exhausted on a result: the result, not an exception
    assert len(runner.calls) == 3


def test_on_result_success_after_bad_result(runner: Runner, clock: FakeClock) -> None:
    fn = runner.scripted([503, 200])
    policy = retry(clock, attempts=3, on_result=lambda status: status == 503)
    assert runner.run(policy, fn) == 200


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit, asyncio.CancelledError])
def test_base_exceptions_are_never_retried(
    runner: Runner, clock: FakeClock, exc_type: type[BaseException]
) -> None:
    fn = runner.scripted([exc_type(), "ok"])
    policy = retry(clock, on=lambda e: True, attempts=5)
    with pytest.raises(exc_type):
        runner.run(policy, fn)
    assert len(runner.calls) == 1


def test_max_elapsed_stops_before_sleeping_past_it(runner: Runner, clock: FakeClock) -> None:
    fn = runner.scripted([Step(Boom("x"), duration=0.5)])
    policy = retry(clock, attempts=100, max_elapsed=3.0)
    with pytest.raises(Boom) as info:
        runner.run(policy, fn)
    # attempts at 0, 1.5 (ends 2.0, +1 = 3.0 ok) -> at 3.0 ends 3.5, +1 = 4.5 > 3 -> stop
    assert runner.calls == [0.0, 1.5, 3.0]
    assert "(max_elapsed)" in info.value.__notes__[0]


def test_deadline_from_enclosing_timeout_stops_retries(runner: Runner, clock: FakeClock) -> None:
    fn = runner.scripted([Boom("down")])
    policy = rs.Pipeline(
        rs.Timeout(2.5, clock=clock),
        retry(clock, attempts=10, backoff=rs.backoff.constant(1.0)),
    )
    with pytest.raises(Boom) as info:
        runner.run(policy, fn)
    assert runner.calls == [0.0, 1.0, 2.0]  # a third sleep would reach 3.0 > 2.5
    assert "(deadline)" in info.value.__notes__[0]


class Throttled(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after}")
        self.retry_after = retry_after


def test_server_directed_delay_wins_over_backoff(runner: Runner, clock: FakeClock) -> None:
    fn = runner.scripted([Throttled(2.5), "ok"])
    policy = retry(clock, on=Throttled, backoff=rs.backoff.constant(0.1))
    assert runner.run(policy, fn) == "ok"
    assert clock.sleeps == [2.5]


def test_negative_server_delay_means_do_not_retry(runner: Runner, clock: FakeClock) -> None:
    fn = runner.scripted([Throttled(-1), "ok"])
    with pytest.raises(Throttled) as info:
        runner.run(retry(clock, on=Throttled), fn)
    assert len(runner.calls) == 1
    assert "(pushback)" in info.value.__notes__[0]


def test_server_delay_past_deadline_gives_up_at_once(runner: Runner, clock: FakeClock) -> None:
    fn = runner.scripted([Throttled(30), "ok"])
    policy = rs.Pipeline(rs.Timeout(5, clock=clock), retry(clock, on=Throttled))
    with pytest.raises(Throttled):
        runner.run(policy, fn)
    assert clock.sleeps == []


def test_custom_retry_after_hook_on_results(runner: Runner, clock: FakeClock) -> None:
    fn = runner.scripted([{"status": 429, "retry_after": 4}, {"status": 200}])
    policy = retry(
        clock,
        on_result=lambda r: r["status"] == 429,
        retry_after=lambda r: None if isinstance(r, BaseException) else r.get("retry_after"),
    )
    assert runner.run(policy, fn) == {"status": 200}
    assert clock.sleeps == [4]


def test_ratio_budget_caps_retries_across_calls(runner: Runner, clock: FakeClock) -> None:
    budget = rs.RetryBudget(ratio=0.1, min_per_second=0, clock=clock)
    policy = retry(clock, attempts=3, backoff=rs.backoff.constant(0), budget=budget)
    fn = runner.scripted([Boom("always")])
    for _ in range(20):
        with pytest.raises(Boom):
            runner.run(policy, fn)
    # 20 calls deposit 20 tokens: 10 % → 2 retries in total, then first attempts only
    assert len(runner.calls) == 20 + 2
    assert budget.snapshot()["retries"] == 2


def test_retry_throttle_blocks_when_tokens_low(runner: Runner, clock: FakeClock) -> None:
    throttle = rs.RetryThrottle(max_tokens=4, token_ratio=0.5)
    policy = retry(clock, attempts=5, backoff=rs.backoff.constant(0), budget=throttle)
    fn = runner.scripted([Boom("x")])
    with pytest.raises(Boom) as info:
        runner.run(policy, fn)
    # tokens 4 → 3 (retry ok, 3 > 2) → 2 (2 > 2 false: stop)
    assert len(runner.calls) == 2
    assert "(budget)" in info.value.__notes__[0]
    assert throttle.tokens == 2


def test_events_and_failsafe_listeners(runner: Runner, clock: FakeClock) -> None:
    rec = RecordingListener()

    def broken(event: rs.events.Event) -> None:
        raise RuntimeError("listener bug")

    policy = retry(clock, attempts=2, listeners=[broken, rec], name="fetch")
    fn = runner.scripted([Boom("a")])
    with pytest.raises(Boom):
        runner.run(policy, fn)
    scheduled, exhausted = rec.events
    assert isinstance(scheduled, RetryScheduled)
    assert (scheduled.policy, scheduled.attempt, scheduled.delay) == ("fetch", 1, 1.0)
    assert scheduled.error_type == "tests.helpers.Boom"
    assert isinstance(exhausted, RetriesExhausted)
    assert (exhausted.attempts, exhausted.reason) == (2, "attempts")


def test_decorator_keeps_signature_and_kind(runner: Runner, clock: FakeClock) -> None:
    def body() -> str:
        return "v"

    fn = runner.wrap(body)
    fn.__name__ = "named_fn"
    wrapped = retry(clock)(fn)
    assert wrapped.__name__ == "named_fn"
    assert inspect.iscoroutinefunction(wrapped) == runner.is_async
    assert runner.run_decorated(retry(clock), fn) == "v"


def test_arguments_are_passed_on_every_attempt(runner: Runner, clock: FakeClock) -> None:
    seen: list[tuple[Any, ...]] = []

    def body(*args: Any, **kwargs: Any) -> Any:
        seen.append((args, kwargs))
        if len(seen) < 2:
            raise Boom
        return sum(args) + kwargs["k"]

    if runner.is_async:

        async def fn(*args: Any, **kwargs: Any) -> Any:
            return body(*args, **kwargs)

        result = asyncio.run(retry(clock).acall(fn, 1, 2, k=3))
    else:
        result = retry(clock).call(body, 1, 2, k=3)
    assert result == 6
    assert seen == [((1, 2), {"k": 3})] * 2


def test_default_backoff_is_full_jitter_exponential(clock: FakeClock) -> None:
    policy = rs.Retry(on=Boom, attempts=4, clock=clock, random=random.Random(3))
    calls = []

    def fn() -> None:
        calls.append(1)
        raise Boom

    with pytest.raises(Boom):
        policy.call(fn)
    assert len(clock.sleeps) == 3
    for n, delay in enumerate(clock.sleeps, start=1):
        assert 0 <= delay <= 0.1 * 2 ** (n - 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts must be an integer >= 1"),
        ({"attempts": 2.5}, "attempts must be an integer >= 1"),
        ({"on": "ValueError"}, "on must be an exception type"),
        ({"on": (ValueError, "x")}, "on tuple must hold only exception types"),
        ({"backoff": 1.0}, "backoff must be a resilience.backoff schedule"),
        ({"max_elapsed": -1}, "max_elapsed must be >= 0 seconds"),
        ({"max_elapsed": float("nan")}, "max_elapsed must be finite"),
        ({"budget": object()}, "budget must be a RetryBudget or RetryThrottle"),
        ({"on_result": 503}, "on_result must be a predicate"),
        ({"name": ""}, "name must be a non-empty string"),
        ({"listeners": [42]}, "listeners must be callables"),
        ({"random": 7}, "random must be a random.Random instance"),
    ],
)
def test_invalid_configuration(kwargs: dict[str, Any], message: str) -> None:
    kwargs.setdefault("on", Boom)
    with pytest.raises(rs.ConfigurationError, match=message) as info:
        rs.Retry(**kwargs)
    assert isinstance(info.value, ValueError)


def test_max_elapsed_accepts_timedelta(clock: FakeClock) -> None:
    assert rs.Retry(on=Boom, max_elapsed=timedelta(seconds=3), clock=clock).max_elapsed == 3.0


def test_generator_functions_are_refused() -> None:
    def gen() -> Any:
        yield 1

    with pytest.raises(rs.ConfigurationError, match="generator"):
        rs.Retry(on=Boom)(gen)
