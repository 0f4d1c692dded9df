"""Shared fixtures: a fake clock and a runner that plays every scenario sync and async."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import settings

import resilience as rs
from resilience.testing import FakeClock

# CI runs are deterministic: a fixed Hypothesis seed (a failure reproduces on every run, and a
# landing never depends on luck) and no per-example deadline on a loaded 2-core machine.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Step:
    """One scripted attempt: take ``duration`` seconds (on the clock), then return or raise."""

    def __init__(self, outcome: Any = None, duration: float = 0.0) -> None:
        self.outcome = outcome
        self.duration = duration


class Runner:
    """Builds sync or async functions from scripts and runs policies on them."""

    def __init__(self, mode: str, clock: FakeClock) -> None:
        self.mode = mode
        self.clock = clock
        self.calls: list[float] = []

    @property
    def is_async(self) -> bool:
        return self.mode == "async"

    def scripted(self, steps: Sequence[Any]) -> Callable[..., Any]:
        """A function whose n-th call plays ``steps[n]`` (the last step repeats)."""
        plan = [s if isinstance(s, Step) else Step(s) for s in steps]
        clock = self.clock
        calls = self.calls

        def pick() -> Step:
            calls.append(clock.monotonic())
            return plan[min(len(calls), len(plan)) - 1]

        def finish(step: Step) -> Any:
            if isinstance(step.outcome, BaseException):
                raise step.outcome
            if isinstance(step.outcome, type) and issubclass(step.outcome, BaseException):
                raise step.outcome()
            return step.outcome

        if self.is_async:

            async def afn(*args: Any, **kwargs: Any) -> Any:
                step = pick()
                if step.duration:
                    await clock.asleep(step.duration)
                return finish(step)

            return afn

        def fn(*args: Any, **kwargs: Any) -> Any:
            step = pick()
            if step.duration:
                clock.sleep(step.duration)
            return finish(step)

        return fn

    def wrap(self, body: Callable[[], Any]) -> Callable[..., Any]:
        """Turn a plain sync body into a sync or async function (per mode)."""
        if self.is_async:

            async def afn(*args: Any, **kwargs: Any) -> Any:
                return body()

            return afn

        def fn(*args: Any, **kwargs: Any) -> Any:
            return body()

        return fn

    def run(self, policy: rs.Policy, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` through ``policy`` in this runner's mode."""
        if self.is_async:
            return asyncio.run(policy.acall(fn, *args, **kwargs))
        return policy.call(fn, *args, **kwargs)

    def run_decorated(self, policy: rs.Policy, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` decorated by ``policy``."""
        wrapped = policy(fn)
        if self.is_async:
            return asyncio.run(wrapped(*args))
        return wrapped(*args)


@pytest.fixture(params=["sync", "async"])
def runner(request: pytest.FixtureRequest, clock: FakeClock) -> Runner:
    return Runner(request.param, clock)


from .redis_servers import (  # noqa: E402
    own_redis_server,
    redis_cluster,
    redis_cluster_with_replicas,
    redis_sentinel,
    redis_server,
)

__all__ = [
    "Runner",
    "Step",
    "own_redis_server",
    "redis_cluster",
    "redis_cluster_with_replicas",
    "redis_sentinel",
    "redis_server",
]
