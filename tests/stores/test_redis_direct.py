"""The async direct path (a loop's own plain ``redis.asyncio`` client, pre-packed ``EVALSHA`` on
a kept connection): every fault the client's own path survives, it survives."""

from __future__ import annotations

import asyncio

import pytest

import resilience as rs
from resilience.stores.redis import RedisStore
from resilience.stores.redis._adirect import AsyncDirect

from ..redis_servers import RedisServer
from .test_redis_store import Incr

pytestmark = pytest.mark.redis


def _direct(store: RedisStore) -> AsyncDirect:
    entry = store._aclients.entry()
    assert entry is not None
    assert isinstance(entry.direct, AsyncDirect)  # the loop's own plain client takes it
    return entry.direct


async def test_async_direct_path_reloads_scripts_after_script_flush(
    redis_server: RedisServer,
) -> None:
    store = RedisStore.from_url(redis_server.url, prefix="ad1")
    assert await store.aapply(Incr("k")) == 1
    _direct(store)
    redis_server.cli("script", "flush")
    assert await store.aapply(Incr("k")) == 2  # NOSCRIPT -> EVAL, transparently
    assert await store.aapply(Incr("k")) == 3
    await store.aclose()


async def test_async_direct_path_survives_a_killed_connection(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url, prefix="ad2", failure_threshold=5)
    assert await store.aapply(Incr("k")) == 1
    redis_server.cli("client", "kill", "type", "normal")  # the kept connection is gone
    try:
        second = await store.aapply(Incr("k"))
    except rs.StoreError:  # this call may fail (no command retries), the next one reconnects
        second = await store.aapply(Incr("k"))
    assert second == 2
    await store.aclose()


async def test_a_cancelled_call_leaves_no_stale_reply(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url, prefix="ad3")
    assert await store.aapply(Incr("a")) == 1
    direct = _direct(store)
    task = asyncio.ensure_future(store.aapply(Incr("a")))
    await asyncio.sleep(0)  # the task sent its EVALSHA and waits for the reply
    busy_during = direct.busy
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (busy_during, direct.busy) == (True, False)
    # the next call on the kept connection reads its own reply, not "a"'s pending one
    assert await store.aapply(Incr("b")) == 1
    await store.aclose()


async def test_concurrent_decisions_share_the_pool_exactly(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url, prefix="ad4", socket_timeout=2.0)
    limiter = rs.RateLimiter("conc", rate=20, per=3600, burst=20, store=store)
    results = await asyncio.gather(*[limiter.atry_acquire("k") for _ in range(60)])
    assert sum(d.allowed for d in results) == 20  # the busy kept connection: others borrow
    assert _direct(store).conn is not None
    await store.aclose()


async def test_async_direct_path_restart_and_hung_server(own_redis_server: RedisServer) -> None:
    store = RedisStore.from_url(
        own_redis_server.url, socket_timeout=0.2, failure_threshold=1, probe_interval=0.01
    )
    assert await store.aapply(Incr("k")) == 1
    own_redis_server.pause()
    with pytest.raises(rs.StoreError, match="redis store failed"):  # bounded by socket_timeout
        await asyncio.wait_for(store.aapply(Incr("k")), 5.0)
    own_redis_server.resume()
    own_redis_server.restart()  # the data and the scripts are gone
    for _ in range(100):  # failing fast until a probe (every 10 ms) reaches the new server
        try:
            value = await store.aapply(Incr("k"))
            break
        except rs.StoreError:
            await asyncio.sleep(0.01)
    assert value == 1
    assert await store.aapply(Incr("k")) == 2
    await store.aclose()


async def test_the_direct_path_decodes_like_the_client(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url, prefix="ad5", decode_responses=True)
    limiter = rs.RateLimiter("dec", rate=2, per=60, burst=2, store=store)  # a binary reply
    assert [(await limiter.atry_acquire("k")).allowed for _ in range(3)] == [True, True, False]
    assert await store.aapply(Incr("n")) == 1  # a decoded reply
    await store.aclose()


async def test_a_given_client_keeps_its_own_path(redis_server: RedisServer) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_server.url)
    store = RedisStore(client, prefix="ad6")
    assert await store.aapply(Incr("k")) == 1
    entry = store._aclients.entry()
    assert entry is not None
    assert entry.direct is None  # a given client may be shared
    await client.aclose()
