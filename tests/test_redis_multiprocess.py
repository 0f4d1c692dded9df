"""Several processes (spawned) sharing state through one real Redis."""

from __future__ import annotations

import multiprocessing
import uuid
from typing import Any

import pytest
import redis

import resilience as rs
from resilience.stores.redis import RedisStore

from .redis_servers import RedisServer

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
        real_time.sleep(0.2)  # long enough for the others to find it in progress
        return {"order": order, "execution": n}

    barrier.wait(timeout=30)
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
