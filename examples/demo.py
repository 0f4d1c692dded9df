"""The main demo: decorators and a pipeline against a flaky dependency, in memory.

Run it with ``make demo``. It uses the real clock with short delays, so it takes about a second.
"""

from __future__ import annotations

import asyncio
import random

import resilience as rs
from resilience.events import Event


class FlakyService:
    """A dependency that fails ``failure_rate`` of the time and is sometimes slow."""

    def __init__(self, failure_rate: float, seed: int) -> None:
        self.failure_rate = failure_rate
        self.rng = random.Random(seed)
        self.calls = 0

    def fetch(self, item: str) -> str:
        self.calls += 1
        if self.rng.random() < self.failure_rate:
            raise ConnectionError(f"connection reset while fetching {item}")
        return f"{item}: in stock"

    async def afetch(self, item: str) -> str:
        await asyncio.sleep(0.001)
        return self.fetch(item)


def printer(prefix: str) -> rs.events.Listener:
    def listen(event: Event) -> None:
        fields = {
            k: getattr(event, k)
            for k in ("attempt", "delay", "reason", "error_type", "timeout")
            if getattr(event, k, None) is not None
        }
        shown = ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()
        )
        print(f"  {prefix} event {event.kind:<18} policy={event.policy:<8} {shown}")

    return listen


def main() -> None:
    print("1. A retry decorator on a sync function (60 % failures, 5 attempts, jittered backoff)")
    service = FlakyService(failure_rate=0.6, seed=7)

    @rs.Retry(
        on=ConnectionError,
        attempts=5,
        backoff=rs.backoff.exponential(initial=0.01, maximum=0.1, jitter="full"),
        random=random.Random(1),
        listeners=[printer("sync")],
    )
    def fetch(item: str) -> str:
        return service.fetch(item)

    for item in ("apples", "pears", "plums"):
        try:
            print(f"  -> {fetch(item)}")
        except ConnectionError as exc:
            print(f"  -> gave up: {exc} ({'; '.join(getattr(exc, '__notes__', []))})")
    print(f"  the dependency saw {service.calls} calls for 3 requests\n")

    print(
        "2. A pipeline on an async function: fallback → total timeout → retry → per-attempt timeout"
    )
    aservice = FlakyService(failure_rate=0.8, seed=3)
    pipeline = rs.Pipeline(
        rs.Fallback(on=(ConnectionError, rs.TimeoutExceededError), value="(cached) unknown"),
        rs.Timeout(0.5, name="total"),
        rs.Retry(
            on=(ConnectionError, rs.TimeoutExceededError),
            attempts=4,
            backoff=rs.backoff.constant(0.02),
            budget=rs.RetryBudget(ratio=0.5, min_per_second=1),
        ),
        rs.Timeout(0.2, name="attempt"),
        name="inventory",
        listeners=[printer("async")],
    )

    @pipeline
    async def afetch(item: str) -> str:
        return await aservice.afetch(item)

    async def run() -> list[str]:
        return [await afetch(item) for item in ("figs", "kiwis", "limes", "dates")]

    for line in asyncio.run(run()):
        print(f"  -> {line}")
    print(f"  the dependency saw {aservice.calls} calls for 4 requests")
    print("  pipeline:", [p["kind"] + ":" + p["name"] for p in pipeline.describe()["policies"]])


if __name__ == "__main__":
    main()
