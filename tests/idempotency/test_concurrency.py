"""Idempotency under real concurrency (threads and tasks execute once), and conflicts as the
composition's own refusals.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import resilience as rs
from resilience.testing import FakeClock


# -- concurrency (real threads and tasks, real clock, short) -----------------------------------
def test_100_concurrent_threads_execute_once() -> None:
    release = threading.Event()
    started = threading.Event()
    runs: list[int] = []

    @rs.Idempotent(key=lambda k: k, wait=10)
    def work(k: str) -> dict[str, int]:
        runs.append(1)
        started.set()
        release.wait(5)
        return {"value": 42}

    with ThreadPoolExecutor(max_workers=100) as pool:
        futures = [pool.submit(work, "same") for _ in range(100)]
        started.wait(5)
        release.set()
        results = [f.result(timeout=10) for f in futures]
    assert len(runs) == 1
    assert results == [{"value": 42}] * 100


def test_100_concurrent_threads_conflict_without_wait() -> None:
    release = threading.Event()
    runs: list[int] = []
    barrier = threading.Barrier(100)

    @rs.Idempotent(key=lambda k: k)
    def work(k: str) -> str:
        runs.append(1)
        release.wait(5)
        return "ok"

    def call() -> str:
        barrier.wait(5)
        try:
            return work("same")
        except rs.IdempotencyInProgressError:
            return "conflict"

    with ThreadPoolExecutor(max_workers=100) as pool:
        futures = [pool.submit(call) for _ in range(100)]
        # every caller but the owner gets its answer while the owner is blocked
        while sum(f.done() for f in futures) < 99:
            threading.Event().wait(0.01)
        release.set()
        outcomes = [f.result(timeout=10) for f in futures]
    assert len(runs) == 1
    assert sorted(outcomes).count("conflict") == 99
    assert "ok" in outcomes


async def test_100_concurrent_tasks_execute_once() -> None:
    release = asyncio.Event()
    runs: list[int] = []
    keyed = 0
    all_keyed = asyncio.Event()

    def key(k: str) -> str:
        # the memory store claims without suspending: once the 100th call has its key, every
        # call has claimed or is waiting on the first one's claim
        nonlocal keyed
        keyed += 1
        if keyed == 100:
            all_keyed.set()
        return k

    @rs.Idempotent(key=key, wait=10)
    async def work(k: str) -> list[int]:
        runs.append(1)
        await release.wait()
        return [1, 2, 3]

    tasks = [asyncio.create_task(work("same")) for _ in range(100)]
    await asyncio.wait_for(all_keyed.wait(), 5)
    release.set()
    results = await asyncio.gather(*tasks)
    assert len(runs) == 1
    assert results == [[1, 2, 3]] * 100

    conflicts = 0
    release2 = asyncio.Event()
    all_refused = asyncio.Event()

    @rs.Idempotent(key=lambda k: k)
    async def work2(k: str) -> str:
        runs.append(2)
        await release2.wait()
        return "ok"

    async def call() -> str:
        nonlocal conflicts
        try:
            return await work2("other")
        except rs.IdempotencyInProgressError:
            conflicts += 1
            if conflicts == 99:
                all_refused.set()
            return "conflict"

    tasks2 = [asyncio.create_task(call()) for _ in range(100)]
    await asyncio.wait_for(all_refused.wait(), 5)  # every duplicate refused while the first runs
    release2.set()
    out = await asyncio.gather(*tasks2)
    assert runs.count(2) == 1
    assert conflicts == 99
    assert out.count("ok") == 1


# -- conflicts are the composition's own refusals (issue 11 item 1) ----------------------------
def _conflict_pipeline(clock: FakeClock) -> tuple[rs.Pipeline, rs.RateLimiter, rs.CircuitBreaker]:
    outer_limit = rs.RateLimiter("outer", rate=50, per=60, clock=clock)
    breaker = rs.CircuitBreaker("dep", failure_count=1, clock=clock)
    idem = rs.Idempotent(key=lambda order, amount: order, clock=clock)
    return rs.Pipeline(outer_limit, breaker, idem), outer_limit, breaker


def _duplicates() -> list[tuple[str, int, type[BaseException]]]:
    return (
        [("o1", 1, rs.IdempotencyInProgressError)] * 20  # while the first call runs
        + [("o2", 2, rs.IdempotencyKeyReusedError)] * 5  # other arguments, same key
        + [("o3", 1, rs.IdempotencyConflictError)] * 5  # the first outcome was not retained
    )


def _check_refusals_spent_nothing(
    refusals: list[BaseException], outer_limit: rs.RateLimiter, breaker: rs.CircuitBreaker
) -> None:
    expected = [t for _, _, t in _duplicates()]
    assert [type(e) for e in refusals] == expected  # never CircuitOpenError
    assert breaker.state is rs.CircuitState.CLOSED
    m = breaker.metrics
    assert (m.calls, m.failures) == (3, 0)  # only the three first calls count
    assert outer_limit.try_acquire(cost=0).remaining == 47  # the refused calls were refunded


def test_idempotency_conflicts_leave_the_breaker_closed_and_are_refunded(clock: FakeClock) -> None:
    pipeline, outer_limit, breaker = _conflict_pipeline(clock)
    started, release = threading.Event(), threading.Event()

    def charge(order: str, amount: int) -> Any:
        if order == "o1":
            started.set()
            assert release.wait(10)
        return {amount} if order == "o3" else {"amount": amount}  # a set: not retained

    first = threading.Thread(target=pipeline.call, args=(charge, "o1", 1))
    first.start()
    assert started.wait(10)
    assert pipeline.call(charge, "o2", 1) == {"amount": 1}
    assert pipeline.call(charge, "o3", 1) == {1}
    refusals: list[BaseException] = []
    for order, amount, _ in _duplicates():
        try:
            pipeline.call(charge, order, amount)
        except rs.RejectedError as exc:
            refusals.append(exc)
    release.set()
    first.join(10)
    _check_refusals_spent_nothing(refusals, outer_limit, breaker)


async def test_idempotency_conflicts_leave_the_breaker_closed_and_are_refunded_async(
    clock: FakeClock,
) -> None:
    pipeline, outer_limit, breaker = _conflict_pipeline(clock)
    started, release = asyncio.Event(), asyncio.Event()

    async def charge(order: str, amount: int) -> Any:
        if order == "o1":
            started.set()
            await release.wait()
        return {amount} if order == "o3" else {"amount": amount}

    first = asyncio.create_task(pipeline.acall(charge, "o1", 1))
    await started.wait()
    assert await pipeline.acall(charge, "o2", 1) == {"amount": 1}
    assert await pipeline.acall(charge, "o3", 1) == {1}
    refusals: list[BaseException] = []
    for order, amount, _ in _duplicates():
        try:
            await pipeline.acall(charge, order, amount)
        except rs.RejectedError as exc:
            refusals.append(exc)
    release.set()
    await first
    _check_refusals_spent_nothing(refusals, outer_limit, breaker)
