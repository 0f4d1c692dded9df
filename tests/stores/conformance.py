"""The conformance harness: op sequences (with an injected FakeClock) played on any store, results
normalized for comparison across MemoryStore, a standalone Redis and a Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from resilience.stores.memory import MemoryStore
from resilience.testing import FakeClock

pytestmark = pytest.mark.redis

#: A step: an op to apply, or a number of seconds to advance the clock by.
Step = Any
StoreFactory = Callable[[FakeClock], Any]


def normalize(value: Any) -> Any:
    """Results compared across stores: floats to the microsecond (Lua works in integer µs)."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, tuple | list):
        return tuple(normalize(v) for v in value)
    return value


def run(store: Any, clock: FakeClock, steps: Sequence[Step]) -> list[Any]:
    out: list[Any] = []
    for step in steps:
        if isinstance(step, int | float):
            clock.advance(step)
        else:
            out.append(normalize(store.apply(step)))
    return out


async def arun(store: Any, clock: FakeClock, steps: Sequence[Step]) -> list[Any]:
    out: list[Any] = []
    for step in steps:
        if isinstance(step, int | float):
            clock.advance(step)
        else:
            out.append(normalize(await store.aapply(step)))
    return out


def expected(steps: Sequence[Step]) -> list[Any]:
    clock = FakeClock(start=1000.0)
    return run(MemoryStore(clock=clock), clock, steps)
