"""Four spawned processes whose dependency always fails share one retry budget (and one retry
throttle) through a real Redis: the retry storm is capped for the fleet, not per process."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from typing import Any

import pytest

import resilience as rs
from resilience.stores.redis import RedisStore

from ..redis_servers import RedisServer

pytestmark = pytest.mark.redis

PROCESSES = 4
CALLS = 100  # per process
# ratio x calls + the reserve (min_per_second x ttl): the window outlasts the test
FLEET_BOUND = 0.05 * PROCESSES * CALLS + 60  # 80 retries
PROCESS_BOUND = 0.05 * CALLS + 60  # 65 retries per process without a store


def _worker(url: str, prefix: str, shared: bool, run_async: bool, barrier: Any, out: Any) -> None:
    """One process: CALLS failing calls under a budget, then under a throttle; the retries
    each let through."""
    store = RedisStore.from_url(url, prefix=prefix, socket_timeout=2.0) if shared else None
    name = "fleet" if shared else None
    budget = rs.RetryBudget(ratio=0.05, min_per_second=1.0, ttl=60.0, name=name, store=store)
    throttle = rs.RetryThrottle(max_tokens=10, token_ratio=0.1, name=name, store=store)
    attempts = 0

    def down() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("dependency down")

    async def adown() -> None:
        down()

    def storm(policy: Any) -> int:
        nonlocal attempts
        attempts = 0
        retry = rs.Retry(
            on=ConnectionError, attempts=4, backoff=rs.backoff.constant(0), budget=policy
        )

        async def acalls() -> None:
            for _ in range(CALLS):
                with pytest.raises(ConnectionError):
                    await retry.acall(adown)
            if store is not None:
                await store.aclose()

        if run_async:
            asyncio.run(acalls())
        else:
            for _ in range(CALLS):
                with pytest.raises(ConnectionError):
                    retry.call(down)
        return attempts - CALLS

    barrier.wait(timeout=60)
    retries = storm(budget)
    barrier.wait(timeout=60)
    out.put((retries, storm(throttle)))
    if store is not None:
        store.close()


def _fleet(url: str, shared: bool) -> list[tuple[int, int]]:
    """The retries of each of the PROCESSES processes (half sync, half async)."""
    ctx = multiprocessing.get_context("spawn")
    prefix = f"mprb{uuid.uuid4().hex[:10]}"
    barrier = ctx.Barrier(PROCESSES)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(url, prefix, shared, i % 2 == 1, barrier, out))
        for i in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in range(PROCESSES)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return results


@pytest.mark.slow  # ~10 s here: eight spawned interpreters
def test_four_processes_share_one_retry_budget(redis_server: RedisServer) -> None:
    shared = _fleet(redis_server.url, shared=True)
    apart = _fleet(redis_server.url, shared=False)
    budget_shared = sum(b for b, _ in shared)
    budget_apart = sum(b for b, _ in apart)
    # the fleet's retries stay within ratio x calls + reserve, and fill it: every call's
    # deposit is sent with its own decision, so the last decisions see all 400 calls
    assert FLEET_BOUND - 2 <= budget_shared <= FLEET_BOUND, shared
    # without the store each process has its own reserve: the test can fail
    assert budget_apart == PROCESSES * PROCESS_BOUND, apart
    # the gRPC throttle: 10 tokens, retries only while above 5. A decision carries the
    # failures before it: 4 retries for the fleet (at 9, 8, 7 and 6 tokens), one more at most
    # when an async background send of a failure is still on its way. Without the store: 3
    # per process (its first call's: the fourth attempt's failure, at 6 tokens, ends the call)
    assert sum(t for _, t in shared) <= 5, shared
    assert [t for _, t in apart] == [3] * PROCESSES
