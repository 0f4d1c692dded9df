"""Bulkhead and AdaptiveConcurrency: limits, waits, cancellation, convergence."""

from __future__ import annotations

import asyncio
import heapq
import threading
from typing import Any

import pytest

import resilience as rs
from resilience import gradient2
from resilience.events import BulkheadRejected, CallRejected, RateLimitWaited
from resilience.testing import FakeClock, RecordingListener

from ..conftest import Runner
from ..helpers import ManualClock


# -- Bulkhead -----------------------------------------------------------------------------------
def test_under_the_limit_runs_and_releases(runner: Runner, clock: FakeClock) -> None:
    bh = rs.Bulkhead("db", max_concurrent=2, clock=clock)
    assert runner.run(bh, runner.scripted(["ok"])) == "ok"
    with pytest.raises(KeyError):
        runner.run(bh, runner.scripted([KeyError("x")]))
    assert bh.in_use == 0


def test_async_full_bulkhead_rejects_at_once() -> None:
    rec = RecordingListener()
    bh = rs.Bulkhead("db", max_concurrent=2, listeners=[rec])
    gate = asyncio.Event

    async def main() -> None:
        release = gate()

        async def work() -> str:
            await release.wait()
            return "ok"

        wrapped = bh(work)
        tasks = [asyncio.create_task(wrapped()) for _ in range(2)]
        await asyncio.sleep(0)
        assert bh.in_use == 2
        with pytest.raises(rs.BulkheadFullError):
            await wrapped()
        release.set()
        assert await asyncio.gather(*tasks) == ["ok", "ok"]

    asyncio.run(main())
    assert bh.in_use == 0
    (event,) = rec.of(BulkheadRejected)
    assert isinstance(event, CallRejected)
    assert event.reason == "bulkhead_full"


def test_async_waiter_gets_slot_fifo_and_waiter_times_out_on_clock() -> None:
    clock = ManualClock()
    rec = RecordingListener()
    bh = rs.Bulkhead("db", max_concurrent=1, max_wait=1.0, clock=clock, listeners=[rec])
    order: list[str] = []

    async def main() -> None:
        release = asyncio.Event()

        async def hold() -> None:
            await release.wait()

        async def quick(tag: str) -> None:
            order.append(tag)

        holder = asyncio.create_task(bh.acall(hold))
        await asyncio.sleep(0)
        w1 = asyncio.create_task(bh.acall(quick, "w1"))
        w2 = asyncio.create_task(bh.acall(quick, "w2"))
        await asyncio.sleep(0)
        assert bh.queued == 2
        clock.advance(0.5)
        release.set()  # the slot is handed to w1, then w2
        await asyncio.gather(holder, w1, w2)
        assert order == ["w1", "w2"]
        # a waiter that gets nothing within max_wait is rejected at exactly max_wait
        release2 = asyncio.Event()

        async def hold2() -> None:
            await release2.wait()

        holder = asyncio.create_task(bh.acall(hold2))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(bh.acall(quick, "late"))
        await asyncio.sleep(0)
        start = clock.monotonic()
        clock.advance(1.0)
        with pytest.raises(rs.BulkheadFullError):
            await waiter
        assert clock.monotonic() - start == 1.0
        release2.set()
        await holder

    asyncio.run(main())
    assert bh.in_use == 0
    assert bh.queued == 0
    assert [round(e.wait, 6) for e in rec.of(RateLimitWaited)] == [0.5, 0.5]


def test_cancelled_waiter_never_leaks_a_slot() -> None:
    clock = ManualClock()
    bh = rs.Bulkhead("db", max_concurrent=1, max_wait=10.0, clock=clock)

    async def main() -> None:
        release = asyncio.Event()
        holder = asyncio.create_task(bh.acall(release.wait))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(bh.acall(asyncio.sleep, 0))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert bh.queued == 0
        # granted, then cancelled before it could run: the slot passes on, not lost
        waiter2 = asyncio.create_task(bh.acall(asyncio.sleep, 0))
        await asyncio.sleep(0)
        release.set()
        await holder  # hands the slot to waiter2 ...
        waiter2.cancel()  # ... which is cancelled before it resumes
        await asyncio.gather(waiter2, return_exceptions=True)
        assert bh.in_use == 0
        assert await bh.acall(asyncio.sleep, 0, "free") == "free"

    asyncio.run(main())
    assert bh.in_use == 0


def test_waiting_honours_the_deadline() -> None:
    clock = ManualClock()
    bh = rs.Bulkhead("db", max_concurrent=1, max_wait=10.0, clock=clock)

    async def main() -> None:
        release = asyncio.Event()
        holder = asyncio.create_task(bh.acall(release.wait))
        await asyncio.sleep(0)
        with rs.deadline_scope(0, clock=clock), pytest.raises(rs.BulkheadFullError):
            await bh.acall(asyncio.sleep, 0)
        release.set()
        await holder

    asyncio.run(main())


def test_sync_threads_share_the_limit_and_hand_over_slots() -> None:
    bh = rs.Bulkhead("db", max_concurrent=1, max_wait=5.0)
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(5)

    t = threading.Thread(target=bh.call, args=(hold,))
    t.start()
    entered.wait(5)
    assert bh.in_use == 1
    threading.Timer(0.05, release.set).start()
    assert bh.call(lambda: "mine") == "mine"  # waited for the hand-over, in real time
    t.join()
    assert bh.in_use == 0


def test_sync_full_rejects_without_wait() -> None:
    bh = rs.Bulkhead("db", max_concurrent=1)
    inner: list[Any] = []

    def outer() -> None:
        try:
            bh.call(lambda: None)
        except rs.BulkheadFullError as exc:
            inner.append(exc)

    bh.call(outer)
    assert len(inner) == 1
    assert bh.in_use == 0


def test_sync_waiter_times_out_on_fake_clock() -> None:
    clock = FakeClock()
    bh = rs.Bulkhead("db", max_concurrent=1, max_wait=2.0, clock=clock)

    def outer() -> None:
        with pytest.raises(rs.BulkheadFullError):
            bh.call(lambda: None)

    # the fake clock never moves by itself: once the waiter blocks, let 2 fake seconds pass
    mover = threading.Thread(target=clock.advance_when_waiting, args=(2,))
    mover.start()
    bh.call(outer)
    mover.join()
    assert clock.monotonic() == 2.0
    assert bh.in_use == 0
    assert bh.queued == 0


@pytest.mark.parametrize(
    ("kw", "match"), [({"max_concurrent": 0}, "max_concurrent"), ({"max_wait": -1}, "max_wait")]
)
def test_bulkhead_configuration_errors(kw: dict[str, Any], match: str) -> None:
    kw.setdefault("max_concurrent", 1)
    with pytest.raises(rs.ConfigurationError, match=match):
        rs.Bulkhead("x", **kw)


# -- AdaptiveConcurrency ------------------------------------------------------------------------
def test_gradient2_step() -> None:
    kw: dict[str, Any] = {
        "tolerance": 1.5,
        "smoothing": 0.2,
        "queue_size": 4,
        "min_limit": 1,
        "max_limit": 100,
    }
    assert gradient2(20, 0.01, 0.01, 20, **kw) == pytest.approx(20.8)
    assert gradient2(20, 0.04, 0.01, 20, **kw) == pytest.approx(18.8)
    assert gradient2(20, 0.04, 0.01, 5, **kw) == 20  # app-limited: unchanged
    assert gradient2(1, 1.0, 0.01, 5, **{**kw, "queue_size": 0}) == 1  # min_limit


def test_adaptive_rejects_over_the_limit(runner: Runner, clock: FakeClock) -> None:
    rec = RecordingListener()
    ac = rs.AdaptiveConcurrency("api", initial_limit=1, min_limit=1, clock=clock, listeners=[rec])
    start = ac.try_acquire()
    assert start is not None
    with pytest.raises(rs.BulkheadFullError):
        runner.run(ac, runner.scripted(["ok"]))
    ac.release(start)
    assert runner.run(ac, runner.scripted(["ok"])) == "ok"
    (event,) = rec.of(CallRejected)
    assert isinstance(event, CallRejected)
    assert event.reason == "concurrency_limit"


def test_adaptive_releases_on_exception_and_cancellation(runner: Runner, clock: FakeClock) -> None:
    ac = rs.AdaptiveConcurrency("api", clock=clock)
    with pytest.raises(KeyError):
        runner.run(ac, runner.scripted([KeyError("k")]))
    with pytest.raises(KeyboardInterrupt):
        runner.run(ac, runner.scripted([KeyboardInterrupt()]))
    assert ac.in_flight == 0


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"initial_limit": 0}, "initial_limit"),
        ({"initial_limit": 5000}, "initial_limit"),
        ({"tolerance": 0.5}, "tolerance"),
        ({"smoothing": 0}, "smoothing"),
        ({"min_limit": 10, "max_limit": 5}, "max_limit"),
    ],
)
def test_adaptive_configuration_errors(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(rs.ConfigurationError, match=match):
        rs.AdaptiveConcurrency("x", **kw)


def simulate(ac: rs.AdaptiveConcurrency | None, clock: FakeClock, seconds: float) -> dict[str, Any]:
    """Discrete-event simulation: 1000 req/s offered to a downstream that serves 10 at once.

    Service time is 20 ms while at most 10 requests are in flight; beyond that requests queue
    (processor sharing), so latency grows as ``20 ms * in_flight / 10``. Capacity: 500 req/s.
    """
    base, capacity, interarrival = 0.020, 10, 0.001
    done: list[tuple[float, int, float | None]] = []
    seq = 0
    in_flight = 0
    latencies: list[tuple[float, float]] = []
    rejected = 0
    t = 0.0
    while t < seconds:
        while done and done[0][0] <= t:
            at, _, start = heapq.heappop(done)
            clock.set(at)
            in_flight -= 1
            if ac is not None and start is not None:
                ac.release(start)
        clock.set(t)
        start = None
        if ac is not None:
            start = ac.try_acquire()
            if start is None:
                rejected += 1
                t += interarrival
                continue
        in_flight += 1
        latency = base * max(1.0, in_flight / capacity)
        latencies.append((t, latency))
        seq += 1
        heapq.heappush(done, (t + latency, seq, start))
        t += interarrival
    tail = sorted(lat for at, lat in latencies if at > seconds * 0.75)
    return {"p50": tail[len(tail) // 2], "rejected": rejected, "in_flight": in_flight}


def test_adaptive_converges_when_the_downstream_saturates() -> None:
    unprotected = simulate(None, FakeClock(), 20.0)
    assert unprotected["p50"] > 1.0  # without a limit the queue (and latency) grows unbounded
    clock = FakeClock()
    ac = rs.AdaptiveConcurrency("api", initial_limit=100, clock=clock)
    result = simulate(ac, clock, 30.0)
    assert result["rejected"] > 10_000  # the excess load (~half of it) was shed
    # The limit settles in a band near the downstream's concurrency (10): Gradient2 tolerates
    # latency up to 1.5x its long-term average, so it sits somewhat above it, never runs away.
    assert 5 <= ac.limit <= 60
    assert result["p50"] <= 5 * 0.020  # latency stays bounded (vs > 1 s unprotected)
