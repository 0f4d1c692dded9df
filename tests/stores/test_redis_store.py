"""RedisStore mechanics against real servers: scripts, keys, TTLs, faults, cluster."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import redis

import resilience as rs
from resilience.stores.redis import RedisStore
from resilience.testing import FakeClock

from ..redis_servers import RedisCluster, RedisServer

pytestmark = pytest.mark.redis


@dataclass
class Incr:
    """A counter with a TTL; its Lua twin returns [value, now_us]."""

    key: str
    ttl: float = 30.0
    LUA: ClassVar[str] = """
local v = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[2]) * 1000))
return {v, now_us()}
"""

    def apply(self, state: Any | None, now: float) -> tuple[Any | None, int, float | None]:
        value = (state or 0) + 1
        return value, value, self.ttl

    def lua_args(self) -> list[float]:
        return [self.ttl]

    def parse(self, reply: Any) -> int:
        return int(reply[0])


@dataclass
class Now:
    key: str
    LUA: ClassVar[str] = "return now_us()"

    def apply(self, state: Any | None, now: float) -> tuple[Any | None, int, float | None]:
        return state, round(now * 1e6), None

    def lua_args(self) -> list[str]:
        return []

    def parse(self, reply: Any) -> int:
        return int(reply)


def test_one_round_trip_counter_with_ttl_and_prefix(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url, prefix="t1")
    assert [store.apply(Incr("rl:api:user 1")) for _ in range(3)] == [1, 2, 3]
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    (key,) = [str(k) for k in client.keys("t1:*")]
    assert key.startswith("t1:{")
    assert key.endswith("}:s")
    assert 0 < client.pttl(key) <= 30_000
    store.close()


def test_keys_are_fixed_length_and_injection_proof() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0", prefix="p")
    evil = store.redis_key("user}{other}:x\r\nDEL *")
    plain = store.redis_key("u")
    assert len(evil) == len(plain)
    assert evil.count("{") == 1
    assert evil.count("}") == 1
    assert "\r" not in evil
    assert " " not in evil


def test_scripts_survive_script_flush(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url, prefix="t2")
    assert store.apply(Incr("k")) == 1
    redis_server.cli("script", "flush")
    assert store.apply(Incr("k")) == 2  # NOSCRIPT → reloaded transparently


def test_injected_clock_replaces_server_time(redis_server: RedisServer) -> None:
    clock = FakeClock(start=12.5)
    assert RedisStore.from_url(redis_server.url, clock=clock).apply(Now("x")) == 12_500_000
    server_now = RedisStore.from_url(redis_server.url).apply(Now("x"))
    assert abs(server_now / 1e6 - time.time()) < 5  # production: the server's TIME


async def test_async_client(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url, prefix="t3")
    assert [await store.aapply(Incr("k")) for _ in range(2)] == [1, 2]
    assert store.apply(Incr("k")) == 3  # the same store serves sync code too
    await store.aclose()
    store.close()


async def test_given_async_client(redis_server: RedisServer) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_server.url)
    store = RedisStore(client, prefix="t4")
    assert await store.aapply(Incr("k")) == 1
    with pytest.raises(rs.StoreError, match="async client"):
        store.apply(Incr("k"))
    await client.aclose()


async def test_given_sync_client_serves_async_in_a_thread(redis_server: RedisServer) -> None:
    store = RedisStore(redis.Redis.from_url(redis_server.url), prefix="t5")
    assert await store.aapply(Incr("k")) == 1


def test_dead_server_is_a_store_error_then_fails_fast(own_redis_server: RedisServer) -> None:
    store = RedisStore.from_url(own_redis_server.url, failure_threshold=2, probe_interval=60)
    assert store.apply(Incr("k")) == 1
    own_redis_server.kill()
    for _ in range(2):
        with pytest.raises(rs.StoreError) as info:
            store.apply(Incr("k"))
        assert isinstance(info.value.__cause__, redis.RedisError | OSError)
    with pytest.raises(rs.StoreError, match="failing fast"):
        store.apply(Incr("k"))  # the internal breaker: no network wait


def test_hung_server_costs_one_bounded_timeout(own_redis_server: RedisServer) -> None:
    store = RedisStore.from_url(
        own_redis_server.url, socket_timeout=0.1, failure_threshold=1, probe_interval=60
    )
    assert store.apply(Incr("k")) == 1
    own_redis_server.pause()
    t0 = time.monotonic()
    with pytest.raises(rs.StoreError):
        store.apply(Incr("k"))
    first = time.monotonic() - t0
    t1 = time.monotonic()
    for _ in range(100):
        with pytest.raises(rs.StoreError, match="failing fast"):
            store.apply(Incr("k"))
    rest = time.monotonic() - t1
    own_redis_server.resume()
    assert first < 1.0  # bounded by the socket timeout (plus one reconnect attempt)
    assert rest < 0.5  # 100 decisions without touching the network


def test_restart_without_data_recovers(own_redis_server: RedisServer) -> None:
    clock = FakeClock()
    store = RedisStore.from_url(own_redis_server.url, failure_threshold=1, probe_interval=1)
    store._breaker.clock = clock  # drive the internal breaker's probe interval by hand
    assert store.apply(Incr("k")) == 1
    own_redis_server.restart()
    try:
        store.apply(Incr("k"))  # stale pooled connection: may fail once
    except rs.StoreError:
        clock.advance(1.1)
    assert store.apply(Incr("k")) in (1, 2)  # data is gone; scripts reload after NOSCRIPT


def test_cluster_runs_scripts_on_the_right_node(redis_cluster: RedisCluster) -> None:
    store = RedisStore.from_url(redis_cluster.url, prefix="c", cluster=True, socket_timeout=2.0)
    for i in range(30):  # keys spread over all slots/nodes
        assert store.apply(Incr(f"user-{i}")) == 1
        assert store.apply(Incr(f"user-{i}")) == 2
    store.close()


async def test_cluster_async(redis_cluster: RedisCluster) -> None:
    store = RedisStore.from_url(redis_cluster.url, prefix="ca", cluster=True, socket_timeout=2.0)
    results = await asyncio.gather(*[store.aapply(Incr(f"k{i}")) for i in range(10)])
    assert results == [1] * 10
    await store.aclose()


def test_bad_configuration() -> None:
    with pytest.raises(rs.ConfigurationError, match="redis:// URL"):
        RedisStore.from_url("http://localhost")
    with pytest.raises(rs.ConfigurationError, match="prefix"):
        RedisStore.from_url("redis://127.0.0.1:6379", prefix="a{b}")
    with pytest.raises(rs.ConfigurationError, match="redis-py client"):
        RedisStore(object())


# -- the direct path (plain redis.Redis clients) ----------------------------------------------
def test_direct_path_is_thread_safe(redis_server: RedisServer) -> None:
    import threading

    store = RedisStore.from_url(redis_server.url, prefix="thr", socket_timeout=2.0)
    limiter = rs.RateLimiter("threads", rate=500, per=3600, burst=500, store=store)
    admitted: list[int] = []

    def worker() -> None:
        admitted.append(sum(limiter.try_acquire("k").allowed for _ in range(200)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 500  # 1600 attempts from 8 threads on one store: exactly the burst
    assert store.apply(Incr("after-threads")) == 1
    store.close()


def test_user_clients_with_decode_responses_work(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    store = RedisStore(client, prefix="dec")
    limiter = rs.RateLimiter("decoded", rate=2, per=60, burst=2, store=store)
    assert [limiter.try_acquire("k").allowed for _ in range(3)] == [True, True, False]
    breaker = rs.CircuitBreaker("decoded", failure_count=1, store=store)
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    assert breaker.metrics.state is rs.CircuitState.OPEN
    store.close()
    client.close()


def test_direct_path_survives_a_dropped_connection(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url, prefix="drop", socket_timeout=2.0)
    assert store.apply(Incr("d")) == 1
    redis_server.cli("client", "kill", "type", "normal")  # the kept connection is gone
    try:
        second = store.apply(Incr("d"))
    except rs.StoreError:  # this call may fail (no command retries), the next one reconnects
        second = store.apply(Incr("d"))
    assert second == 2
    store.close()
