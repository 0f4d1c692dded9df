"""Highly available Redis setups: Sentinel URLs and options, durable writes that wait for a replica
(an acknowledged record survives a promotion), Sentinel async clients per event loop.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import redis

import resilience as rs
from resilience.stores.redis import parse_sentinel_url

from ..redis_servers import (
    ClusterWithReplicas,
    SentinelDeployment,
    start_server,
)

pytestmark = pytest.mark.redis


# -- Sentinel URLs and options -----------------------------------------------------------------
def test_sentinel_url_forms() -> None:
    assert parse_sentinel_url("redis+sentinel://10.0.0.1/shop") == (
        [("10.0.0.1", 26379)],
        "shop",
        {},
    )
    sentinels, service, options = parse_sentinel_url(
        "rediss+sentinel://app:s%40cret@[::1]:26380,h2:26381/shop/3"
        "?sentinel_username=sen&sentinel_password=pw"
    )
    assert sentinels == [("::1", 26380), ("h2", 26381)]
    assert service == "shop"
    assert options == {
        "username": "app",
        "password": "s@cret",
        "db": 3,
        "sentinel_username": "sen",
        "sentinel_password": "pw",
        "ssl": True,
    }


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h1:26379",  # no service
        "redis+sentinel://h1:26379/",
        "redis+sentinel://h1:26379/shop/x",  # db not a number
        "redis+sentinel://h1:26379/shop/0/extra",
        "redis+sentinel://h1:port/shop",
        "redis+sentinel://h1:99999/shop",
        "redis+sentinel://,h2/shop",
        "redis+sentinel://h1/shop?socket_timeout=1",  # client options are keyword arguments
        "sentinel://h1/shop",
    ],
)
def test_bad_sentinel_urls_fail_at_construction(url: str) -> None:
    with pytest.raises(rs.ConfigurationError):
        rs.RedisStore.from_url(url)


def test_durable_write_options_are_validated() -> None:
    with pytest.raises(rs.ConfigurationError):
        rs.RedisStore.from_url("redis+sentinel://h1/shop", cluster=True)
    with pytest.raises(rs.ConfigurationError):  # the reply includes the wait
        rs.RedisStore.from_url("redis://127.0.0.1:1/0", wait_replicas=1, wait_timeout=0.25)
    with pytest.raises(rs.ConfigurationError):
        rs.RedisStore.from_url("redis://127.0.0.1:1/0", wait_replicas=-1)
    with pytest.raises(rs.ConfigurationError):
        rs.RedisStore.from_url("redis://127.0.0.1:1/0", wait_replicas=1, wait_timeout=0)
    store = rs.RedisStore.from_url("redis://127.0.0.1:1/0", wait_replicas=1, wait_timeout=0.05)
    assert (store.wait_replicas, store.wait_timeout) == (1, 0.05)


# -- durable writes: an acknowledged record survives a promotion ----------------------------------
def test_idempotency_records_wait_for_a_replica() -> None:
    master = start_server()
    replica = start_server(["--replicaof", "127.0.0.1", str(master.port)])
    runs: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while "master_link_status:up" not in replica.cli("info", "replication"):
            assert time.monotonic() < deadline, "replica did not sync"
            time.sleep(0.05)
        prefix = f"dur{uuid.uuid4().hex[:8]}"
        store = rs.RedisStore.from_url(
            master.url, prefix=prefix, socket_timeout=0.5, wait_replicas=1, wait_timeout=0.2
        )
        charge = rs.Idempotent(key=lambda order: order, store=store)(
            lambda order: runs.append(order)
        )
        charge("a")
        # acknowledged: the record is on the replica as soon as the call returns
        on_replica = redis.Redis(port=replica.port)
        assert len(list(on_replica.scan_iter(f"{prefix}:*"))) == 1
        replica.pause()  # the replica stops acknowledging
        with pytest.raises(rs.StoreError, match="not acknowledged"):
            charge("b")  # "closed": refused rather than run with a claim a failover could lose
        assert runs == ["a"]
        replica.resume()
        master.kill()  # failover: the replica is promoted
        replica.cli("replicaof", "no", "one")
        promoted = rs.RedisStore.from_url(replica.url, prefix=prefix, socket_timeout=0.5)
        again = rs.Idempotent(key=lambda order: order, store=promoted)(
            lambda order: runs.append(order)
        )
        again("a")  # replayed from the promoted replica, not run again
        assert runs == ["a"]
        on_replica.close()
        store.close()
        promoted.close()
    finally:
        replica.resume()
        for s in (master, replica):
            s.kill()


@dataclass
class DurableIncr:
    """A durable counter (``DURABLE``: the store waits for replicas when asked to)."""

    key: str
    DURABLE: ClassVar[bool] = True
    LUA: ClassVar[str] = """
local v = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 60000)
return v
"""

    def apply(self, state: Any | None, now: float) -> tuple[Any | None, int, float | None]:
        value = (state or 0) + 1
        return value, value, 60.0

    def lua_args(self) -> list[str]:
        return []

    def parse(self, reply: Any) -> int:
        return int(reply)


def test_cluster_durable_writes_wait_for_their_shards_replica(
    redis_cluster_with_replicas: ClusterWithReplicas,
) -> None:
    cluster = redis_cluster_with_replicas
    store = rs.RedisStore.from_url(
        cluster.url,
        cluster=True,
        prefix=f"dc{uuid.uuid4().hex[:8]}",
        socket_timeout=3.0,
        wait_replicas=1,
        # real time on a real server: long enough for a loaded machine's replica to answer, the
        # paused replica's writes each wait this long before they are refused
        wait_timeout=1.0,
    )
    owner = cluster.owner(store.redis_key("k"))
    replica = cluster.replica_of(owner)
    elsewhere = cluster.replica_of(next(m for m in cluster.masters() if m is not owner))
    assert store.apply(DurableIncr("k")) == 1
    elsewhere.pause()  # another shard's replica: no effect on "k"
    try:
        assert [store.apply(DurableIncr("k")) for _ in range(3)] == [2, 3, 4]
    finally:
        elsewhere.resume()
    replica.pause()
    try:
        with pytest.raises(rs.StoreError, match="not acknowledged"):
            store.apply(DurableIncr("k"))
    finally:
        replica.resume()

    async def run_async() -> None:
        assert await store.aapply(DurableIncr("k")) == 6
        replica.pause()
        try:
            with pytest.raises(rs.StoreError, match="not acknowledged"):
                await store.aapply(DurableIncr("k"))
        finally:
            replica.resume()
        assert await store.aapply(DurableIncr("k")) == 8  # unacknowledged writes still applied
        await store.aclose()

    asyncio.run(run_async())
    store.close()


# -- Sentinel async clients: one per event loop ---------------------------------------------------
def test_sentinel_async_client_per_loop_closed_with_its_sentinels(
    redis_sentinel: SentinelDeployment,
) -> None:
    """Each event loop gets its own Sentinel-backed async client with its own sentinel
    connections; a burst past the pool size queues instead of failing; both close when the loop
    shuts down (a store serves consecutive ``asyncio.run`` calls)."""
    store = rs.RedisStore.from_url(
        redis_sentinel.url, prefix=f"ha{uuid.uuid4().hex[:8]}", socket_timeout=2.0
    )
    entries: list[Any] = []

    async def burst() -> None:
        limiter = rs.RateLimiter(
            "per-loop", rate=1000, burst=200, store=store, on_store_error="closed"
        )
        decisions = await asyncio.gather(*(limiter.atry_acquire("u") for _ in range(64)))
        assert all(d.allowed for d in decisions)  # 64 > 16 connections: they queued
        entry = store._loops[asyncio.get_running_loop()]
        assert entry.sentinels, "the loop's client asks its own sentinels"
        pool = entry.client.connection_pool
        assert pool.max_connections == 16
        assert len(pool._in_use_connections) + len(pool._available_connections) <= 16
        entries.append(entry)

    asyncio.run(burst())
    asyncio.run(burst())  # a new loop: a new client (the first one's connections are closed)
    first, second = entries
    assert first.client is not second.client
    assert first.sentinels[0] is not second.sentinels[0]
    assert not list(store._loops), "closed loops forgot their clients"
    for entry in entries:
        conns = [
            c
            for client in (entry.client, *entry.sentinels)
            for c in (
                *client.connection_pool._available_connections,
                *client.connection_pool._in_use_connections,
            )
        ]
        assert conns
        assert not any(c.is_connected for c in conns)
    store.close()
