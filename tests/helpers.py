"""Helpers shared by the test modules: import them from here instead of redefining them.

- :class:`Boom`: the one "the call failed" exception (a plain ``Exception`` subclass that no
  policy classifies specially).
- :class:`BrokenStore`: a store whose every operation fails (``rs.StoreError`` by default, or
  e.g. ``ConnectionError`` as a client library would raise it).
- :class:`RawBytes`: an idempotency codec that stores ``bytes`` results as they are.
- :func:`permits_left` / :func:`scripts_run`: a limiter bucket's permits without taking any,
  and how many scripts (EVALSHA + EVAL) a Redis server has run.
- :func:`wait_until`: poll a predicate for an effect in another thread (no fixed sleeps).
- :class:`ManualClock`: a FakeClock whose async sleeps really wait until the test advances it.
- :func:`saturated_per_second` / :func:`assert_cold_start_ramp`: measure and check a rate
  limiter's warm-up ramp (shared by the rate-limiter tests and the Redis conformance tests).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable
from typing import Any

import resilience as rs
from resilience.testing import FakeClock

__all__ = [
    "Boom",
    "BrokenStore",
    "ManualClock",
    "RawBytes",
    "assert_cold_start_ramp",
    "permits_left",
    "saturated_per_second",
    "scripts_run",
    "wait_until",
]


class Boom(Exception):
    """The failure the function under test raises."""


class BrokenStore:
    """A store that is down: every ``apply`` raises ``error(message)``."""

    def __init__(self, message: str = "store down", error: type[Exception] = rs.StoreError) -> None:
        self.message = message
        self.error = error

    def apply(self, op: Any, /) -> Any:
        raise self.error(self.message)


class RawBytes:
    """A codec storing serialized (``bytes``) results as they are."""

    def encode(self, value: bytes) -> bytes:
        return value

    def decode(self, data: str | bytes) -> bytes:
        return data if isinstance(data, bytes) else data.encode()


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` every 10 ms until it is true or ``timeout`` passes; its last value.

    For effects that happen in another thread (a server, a background renewer) and signal
    nothing we could wait on; the poll interval only bounds latency, it orders nothing.
    """
    event = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return True
        event.wait(0.01)
    return bool(predicate())


class ManualClock(FakeClock):
    """A FakeClock whose async sleeps wait for the test to advance time (real concurrency)."""

    async def asleep(self, seconds: float, /) -> None:
        self.sleeps.append(seconds)
        fut = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        self.call_at(self._now + max(0.0, seconds), wake)
        await fut


def saturated_per_second(rl: rs.RateLimiter, clock: FakeClock, secs: int, step: float) -> list[int]:
    """Saturating demand (every ``step`` s, take all that is admitted): admissions per second."""
    out = []
    polls = round(1 / step)
    for _ in range(secs):
        n = 0
        for _ in range(polls):
            while rl.try_acquire().allowed:
                n += 1
            clock.advance(step)
        out.append(n)
    return out


def assert_cold_start_ramp(per_second: list[int], rate: float, cold_factor: float) -> None:
    """The first second admits about ``rate / cold_factor``; then a monotonic ramp to ``rate``."""
    cold = rate / cold_factor
    assert cold - 1 <= per_second[0] <= cold * 1.1 + 1, per_second
    assert all(b >= a for a, b in itertools.pairwise(per_second)), per_second
    assert max(per_second) <= rate, per_second
    assert per_second[-1] == rate, per_second


def permits_left(limiter: rs.RateLimiter, key: str | None = None) -> int:
    """Permits left in ``key``'s bucket, without taking any (a cost-0 check)."""
    return limiter.try_acquire(key=key, cost=0).remaining


def scripts_run(client: Any) -> int:
    """EVALSHA + EVAL commands a Redis server has executed (from a redis client's INFO)."""
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))
