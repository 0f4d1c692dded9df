"""Several processes (spawned) sharing state through one real Redis."""

from __future__ import annotations

import multiprocessing
import uuid
from typing import Any

import pytest
import redis

import resilience as rs
from resilience.stores.redis import RedisStore
from resilience.testing import FakeClock

from ..redis_servers import RedisServer

pytestmark = pytest.mark.redis

PROCESSES = 4


def _idempotent_worker(url: str, prefix: str, barrier: Any, results: Any) -> None:
    """One process: call the same idempotent operation (same key) 5 times."""
    import time as real_time

    store = RedisStore.from_url(url, prefix=prefix, socket_timeout=2.0)
    counter = redis.Redis.from_url(url)

    @rs.Idempotent(key=lambda order: order, store=store, wait=10, lease=5)
    def charge(order: str) -> dict[str, Any]:
        n = int(counter.incr(f"{prefix}:executions"))
        # the one execution lasts until every process has made its call (no timed sleep)
        deadline = real_time.monotonic() + 30
        while int(counter.get(f"{prefix}:calling") or 0) < PROCESSES:
            assert real_time.monotonic() < deadline, "the other processes never called"
            real_time.sleep(0.01)  # polling interval only
        return {"order": order, "execution": n}

    barrier.wait(timeout=30)
    counter.incr(f"{prefix}:calling")
    for _ in range(5):
        results.put(charge("order-1"))
    counter.close()
    store.close()


def test_four_processes_share_one_idempotency_key(redis_server: RedisServer) -> None:
    ctx = multiprocessing.get_context("spawn")
    prefix = f"mp{uuid.uuid4().hex[:10]}"
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_idempotent_worker, args=(redis_server.url, prefix, barrier, results))
        for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in range(PROCESSES * 5)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    client = redis.Redis.from_url(redis_server.url)
    assert client.get(f"{prefix}:executions") == b"1"  # exactly one execution fleet-wide
    client.close()
    assert outcomes == [{"order": "order-1", "execution": 1}] * (PROCESSES * 5)


def _limiter_worker(url: str, prefix: str, barrier: Any, results: Any) -> None:
    """One process: 50 attempts on a limiter shared through Redis (20 permits per hour)."""
    store = RedisStore.from_url(url, prefix=prefix, socket_timeout=2.0)
    limiter = rs.RateLimiter("shared", rate=20, per=3600, burst=20, store=store)
    barrier.wait(timeout=30)
    results.put(sum(limiter.try_acquire("tenant-1").allowed for _ in range(50)))
    store.close()


@pytest.mark.slow  # ~6 s here: four spawned interpreters
def test_four_processes_share_one_limiter(redis_server: RedisServer) -> None:
    ctx = multiprocessing.get_context("spawn")
    prefix = f"mpl{uuid.uuid4().hex[:10]}"
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_limiter_worker, args=(redis_server.url, prefix, barrier, results))
        for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    admitted = [results.get(timeout=60) for _ in range(PROCESSES)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert sum(admitted) == 20  # exactly the burst, fleet-wide (200 attempts)


class SharedClock(FakeClock):
    """A fake clock every process reads from one shared value (the parent advances it)."""

    def __init__(self, value: Any) -> None:
        super().__init__(start=float(value.value))
        self.value = value

    def monotonic(self) -> float:
        return float(self.value.value)


def _fleet_breaker(url: str, prefix: str, now: Any) -> tuple[RedisStore, rs.CircuitBreaker]:
    clock = SharedClock(now)
    store = RedisStore.from_url(url, prefix=prefix, socket_timeout=2.0, clock=clock)
    breaker = rs.CircuitBreaker(
        "fleet",
        failure_count=8,
        window=60,
        open_for=30,
        half_open_calls=2,
        half_open_timeout=10,
        store=store,
        clock=clock,
    )
    return store, breaker


def _breaker_worker(
    url: str, prefix: str, now: Any, barrier: Any, release: Any, results: Any
) -> None:
    """One process of the fleet: 2 failures, then one probe attempt, reporting what it saw."""
    store, breaker = _fleet_breaker(url, prefix, now)
    counter = redis.Redis.from_url(url)

    def fail() -> None:
        raise ConnectionError("downstream refused")

    def probe() -> str:
        counter.incr(f"{prefix}:probes")
        assert release.wait(timeout=30)
        return "ok"

    barrier.wait(timeout=30)
    for _ in range(2):  # 4 processes x 2 = 8 failures: the fleet's breaker opens
        try:
            breaker.call(fail)
        except ConnectionError:
            pass
    barrier.wait(timeout=30)
    opened = breaker.state is rs.CircuitState.OPEN
    try:
        breaker.call(lambda: None)
        refused = False
    except rs.CircuitOpenError:
        refused = True
    results.put(("open", opened and refused))
    barrier.wait(timeout=30)
    barrier.wait(timeout=30)  # meanwhile the parent advanced the clock past open_for
    try:
        results.put(("probe", breaker.call(probe)))
    except rs.CircuitOpenError:
        counter.incr(f"{prefix}:refused")
        results.put(("probe", "refused"))
    barrier.wait(timeout=30)
    results.put(("closed", breaker.state is rs.CircuitState.CLOSED))
    counter.close()
    store.close()


@pytest.mark.slow  # ~6 s here: four spawned interpreters
def test_four_processes_share_one_breaker(redis_server: RedisServer) -> None:
    import time as real_time

    ctx = multiprocessing.get_context("spawn")
    prefix = f"mpb{uuid.uuid4().hex[:10]}"
    now = ctx.Value("d", 1000.0)
    barrier = ctx.Barrier(PROCESSES + 1)
    release = ctx.Event()
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_breaker_worker,
            args=(redis_server.url, prefix, now, barrier, release, results),
        )
        for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    client = redis.Redis.from_url(redis_server.url)
    try:
        barrier.wait(timeout=60)  # start
        barrier.wait(timeout=60)  # 8 failures recorded fleet-wide
        opened = [results.get(timeout=60) for _ in range(PROCESSES)]
        barrier.wait(timeout=60)
        now.value += 30.0  # open_for elapsed: the next callers race for the 2 probe permits
        barrier.wait(timeout=60)
        deadline = real_time.monotonic() + 30
        while real_time.monotonic() < deadline:  # until every process has been admitted/refused
            probes = int(client.get(f"{prefix}:probes") or 0)
            refused = int(client.get(f"{prefix}:refused") or 0)
            if probes + refused == PROCESSES:
                break
            real_time.sleep(0.01)
        release.set()
        probed = [results.get(timeout=60) for _ in range(PROCESSES)]
        barrier.wait(timeout=60)
        closed = [results.get(timeout=60) for _ in range(PROCESSES)]
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    assert opened == [("open", True)] * PROCESSES  # each saw only 2 failures, all are open
    assert (probes, refused) == (2, 2)  # exactly half_open_calls probes fleet-wide
    assert sorted(r for _, r in probed) == ["ok", "ok", "refused", "refused"]
    assert closed == [("closed", True)] * PROCESSES  # both probes succeeded: closed for all
    client.close()


def state_of(breaker: rs.CircuitBreaker) -> rs.CircuitState:
    return breaker.state


def _dead_prober(url: str, prefix: str, now: Any) -> None:
    """Take a half-open probe permit and die without reporting."""
    import os

    _, breaker = _fleet_breaker(url, prefix, now)
    breaker.call(lambda: os._exit(0))


def test_a_dead_probers_permit_expires(redis_server: RedisServer) -> None:
    ctx = multiprocessing.get_context("spawn")
    prefix = f"mpd{uuid.uuid4().hex[:10]}"
    now = ctx.Value("d", 1000.0)
    store, breaker = _fleet_breaker(redis_server.url, prefix, now)
    for _ in range(8):
        with pytest.raises(ConnectionError):
            breaker.call(lambda: (_ for _ in ()).throw(ConnectionError("refused")))
    now.value += 30.0
    p = ctx.Process(target=_dead_prober, args=(redis_server.url, prefix, now))
    p.start()
    p.join(timeout=60)
    assert p.exitcode == 0
    assert state_of(breaker) is rs.CircuitState.HALF_OPEN
    breaker.call(lambda: None)  # the second permit (half_open_calls=2)
    with pytest.raises(rs.CircuitOpenError) as info:
        breaker.call(lambda: None)  # the dead prober still holds its permit
    assert info.value.retry_after == 10.0  # ... until half_open_timeout
    now.value += 10.0
    assert state_of(breaker) is rs.CircuitState.OPEN  # its lease expired: reopened
    now.value += 60.0  # the second opening lasts open_for too (a fixed open_for)
    breaker.call(lambda: None)
    breaker.call(lambda: None)
    assert state_of(breaker) is rs.CircuitState.CLOSED
    store.close()
