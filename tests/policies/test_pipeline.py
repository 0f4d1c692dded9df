"""Pipeline composition and Fallback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import resilience as rs
from resilience._policy import Emitter
from resilience.events import FallbackUsed, RetriesExhausted, RetryScheduled
from resilience.testing import FakeClock, RecordingListener

from ..conftest import Runner, Step


class Tracer(rs.Policy):
    """A test policy recording when it is entered and left."""

    kind = "tracer"

    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__(name=name)
        self.log = log

    def wrap_sync(self, fn: Callable[..., Any], em: Emitter) -> Callable[..., Any]:
        def w(*a: Any, **k: Any) -> Any:
            self.log.append(f"enter {self.name}")
            try:
                return fn(*a, **k)
            finally:
                self.log.append(f"exit {self.name}")

        return w

    def wrap_async(
        self, fn: Callable[..., Awaitable[Any]], em: Emitter
    ) -> Callable[..., Awaitable[Any]]:
        async def w(*a: Any, **k: Any) -> Any:
            self.log.append(f"enter {self.name}")
            try:
                return await fn(*a, **k)
            finally:
                self.log.append(f"exit {self.name}")

        return w


def test_outermost_first(runner: Runner) -> None:
    log: list[str] = []
    pipeline = rs.Pipeline(Tracer("a", log), Tracer("b", log), Tracer("c", log))

    def body() -> int:
        log.append("call")
        return 1

    assert runner.run(pipeline, runner.wrap(body)) == 1
    assert log == ["enter a", "enter b", "enter c", "call", "exit c", "exit b", "exit a"]


def test_nested_pipelines_and_decorator(runner: Runner) -> None:
    log: list[str] = []
    inner = rs.Pipeline(Tracer("b", log), Tracer("c", log))
    outer = rs.Pipeline(Tracer("a", log), inner)
    assert runner.run_decorated(outer, runner.wrap(lambda: 7)) == 7
    assert log == ["enter a", "enter b", "enter c", "exit c", "exit b", "exit a"]


def test_pipeline_listeners_see_inner_events_with_pipeline_name(
    runner: Runner, clock: FakeClock
) -> None:
    own, outer = RecordingListener(), RecordingListener()
    pipeline = rs.Pipeline(
        rs.Fallback(on=ValueError, value="fallback"),
        rs.Retry(
            on=ValueError,
            attempts=2,
            backoff=rs.backoff.constant(0),
            clock=clock,
            listeners=[own],
        ),
        name="checkout",
        listeners=[outer],
    )
    fn = runner.scripted([ValueError("x")])
    assert runner.run(pipeline, fn) == "fallback"
    assert [type(e) for e in own.events] == [RetryScheduled, RetriesExhausted]
    assert [type(e) for e in outer.events] == [RetryScheduled, RetriesExhausted, FallbackUsed]
    assert {e.pipeline for e in outer.events} == {"checkout"}
    assert {e.operation for e in outer.events} == {fn.__qualname__}


def test_describe_is_plain_data() -> None:
    pipeline = rs.Pipeline(rs.Timeout(3), rs.Retry(on=OSError, attempts=4), name="p")
    described = pipeline.describe()
    assert described["name"] == "p"
    assert [(p["kind"], p.get("seconds"), p.get("attempts")) for p in described["policies"]] == [
        ("timeout", 3.0, None),
        ("retry", None, 4),
    ]
    assert "Pipeline(" in repr(pipeline)


def test_pipeline_rejects_non_policies() -> None:
    with pytest.raises(rs.ConfigurationError, match="unpack it"):
        rs.Pipeline([rs.Timeout(1)])  # type: ignore[arg-type]


def test_empty_pipeline_does_not_mutate_the_function(runner: Runner) -> None:
    fn = runner.wrap(lambda: 3)
    original_name = fn.__name__
    wrapped = rs.Pipeline(name="empty")(fn)
    assert wrapped is not fn
    assert fn.__name__ == original_name
    assert runner.run(rs.Pipeline(), fn) == 3


class TestFallback:
    def test_value_on_matching_error(self, runner: Runner) -> None:
        fn = runner.scripted([ConnectionError("x")])
        assert runner.run(rs.Fallback(on=ConnectionError, value="v"), fn) == "v"

    def test_handler_gets_exception(self, runner: Runner) -> None:
        fn = runner.scripted([ConnectionError("down")])
        policy = rs.Fallback(on=ConnectionError, handler=lambda e: f"handled {e}")
        assert runner.run(policy, fn) == "handled down"

    def test_async_handler(self, clock: FakeClock) -> None:
        import asyncio

        async def handler(exc: BaseException) -> str:
            return "async handled"

        async def fail() -> str:
            raise ConnectionError

        policy = rs.Fallback(on=ConnectionError, handler=handler)
        assert asyncio.run(policy.acall(fail)) == "async handled"

    def test_non_matching_error_propagates(self, runner: Runner) -> None:
        fn = runner.scripted([KeyError("k")])
        with pytest.raises(KeyError):
            runner.run(rs.Fallback(on=ConnectionError, value="v"), fn)

    def test_on_result(self, runner: Runner) -> None:
        fn = runner.scripted([None])
        policy = rs.Fallback(on=(), value="default", on_result=lambda r: r is None)
        assert runner.run(policy, fn) == "default"

    def test_cancellation_is_never_replaced(self, runner: Runner) -> None:
        import asyncio

        fn = runner.scripted([asyncio.CancelledError()])
        with pytest.raises(asyncio.CancelledError):
            runner.run(rs.Fallback(on=lambda e: True, value="v"), fn)

    def test_exactly_one_of_value_or_handler(self) -> None:
        with pytest.raises(rs.ConfigurationError, match="exactly one"):
            rs.Fallback(on=OSError)
        with pytest.raises(rs.ConfigurationError, match="exactly one"):
            rs.Fallback(on=OSError, value=1, handler=lambda e: 2)


def test_events_of_every_policy_carry_the_pipelines_identity(
    runner: Runner, clock: FakeClock
) -> None:
    """Timeout, AdaptiveConcurrency and Fallback build their events from the emitter's origin:
    the policy's own name, the pipeline's name and the operation, in both modes."""
    seen = RecordingListener()
    adaptive = rs.AdaptiveConcurrency("adaptive", initial_limit=1, clock=clock)
    pipeline = rs.Pipeline(
        rs.Fallback(on=(rs.TimeoutExceededError, rs.BulkheadFullError), value="shed", name="fb"),
        adaptive,
        rs.Timeout(1, clock=clock, name="t"),
        name="edge",
        listeners=[seen],
    )
    slow = runner.scripted([Step("late", duration=2)])
    assert runner.run(pipeline, slow) == "shed"  # timed out, replaced
    held = adaptive.try_acquire()  # the only slot taken: the next call is shed at once
    assert held is not None
    assert runner.run(pipeline, slow) == "shed"
    adaptive.release(held, sample=False)
    assert [(e.kind, e.policy, e.pipeline, e.operation) for e in seen.events] == [
        ("timeout", "t", "edge", slow.__qualname__),
        ("fallback", "fb", "edge", slow.__qualname__),
        ("rejected", "adaptive", "edge", slow.__qualname__),
        ("fallback", "fb", "edge", slow.__qualname__),
    ]
