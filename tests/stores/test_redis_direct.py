"""The direct paths (pre-packed ``EVALSHA`` on a kept connection; a plain ``redis.Redis``, and a
loop's own plain ``redis.asyncio`` client; binary replies read from the socket): every fault the
client's own path survives, they survive."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import redis

import resilience as rs
from resilience.stores.redis import RedisStore
from resilience.stores.redis._adirect import AsyncDirect
from resilience.stores.redis._direct import _read_binary

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


# -- the binary reply read from the socket (sync) ---------------------------------------------
class _Chunks:
    """A socket that hands out ``data`` a few bytes per ``recv``."""

    def __init__(self, data: bytes, step: int = 3) -> None:
        self.data, self.step = data, step

    def recv(self, n: int) -> bytes:
        out, self.data = self.data[: self.step], self.data[self.step :]
        return out


def test_the_binary_reader_reads_replies_in_pieces_and_skips_pushes() -> None:
    assert _read_binary(_Chunks(b"$5\r\nab\r\nc\r\n")) == b"ab\r\nc"  # CRLF inside the bulk
    push = b">3\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n:7\r\n"
    assert _read_binary(_Chunks(push + b"$2\r\nok\r\n", step=5)) == b"ok"
    assert _read_binary(_Chunks(push + push + b"$0\r\n\r\n", step=100)) == b""


def test_the_binary_reader_raises_what_redis_py_raises() -> None:
    with pytest.raises(redis.exceptions.NoScriptError):
        _read_binary(_Chunks(b"-NOSCRIPT No matching script.\r\n"))
    with pytest.raises(redis.exceptions.ResponseError, match="boom"):
        _read_binary(_Chunks(b"!4\r\nboom\r\n"))
    with pytest.raises(redis.exceptions.InvalidResponse):
        _read_binary(_Chunks(b":1\r\n"))  # not a binary script's reply
    with pytest.raises(redis.exceptions.InvalidResponse):
        _read_binary(_Chunks(b"$1\r\na\r\n$1\r\nb\r\n", step=100))  # two replies
    with pytest.raises(redis.exceptions.ConnectionError, match="closed"):
        _read_binary(_Chunks(b"$4\r\nab"))  # the server closed mid-reply


@dataclass
class Boom:
    """A binary-reply op whose script fails for its key only."""

    key: str
    BINARY_REPLY: ClassVar[bool] = True
    LUA_STANDALONE: ClassVar[bool] = True
    LUA: ClassVar[str] = "if ARGV[2] == 'boom' then error('poisoned') end return ARGV[2]"
    arg: str = "boom"

    def apply(self, state: Any | None, now: float) -> tuple[Any | None, bytes, float | None]:
        return state, self.arg.encode(), None

    def lua_args(self) -> list[str]:
        return [self.arg]

    def parse(self, reply: Any) -> bytes:
        assert isinstance(reply, bytes)
        return reply


@pytest.mark.parametrize("protocol", [2, 3])
def test_sync_binary_path_script_flush_kill_and_key_errors(
    redis_server: RedisServer, protocol: int
) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=f"sd{protocol}", protocol=protocol)
    limiter = rs.RateLimiter("flush", rate=3, per=3600, burst=3, store=store)
    assert limiter.try_acquire("k").remaining == 2
    redis_server.cli("script", "flush")
    assert limiter.try_acquire("k").remaining == 1  # NOSCRIPT -> EVAL
    redis_server.cli("client", "kill", "type", "normal")  # the kept connection is gone
    d = limiter.try_acquire("k")
    if d.remaining == 3:  # this call found the connection dead: admitted (on_store_error="open")
        d = limiter.try_acquire("k")  # the next one reconnects
    assert (d.allowed, d.remaining) == (True, 0)
    assert not limiter.try_acquire("k").allowed  # Redis kept the count
    with pytest.raises(rs.StoreError, match="poisoned"):
        store.apply(Boom("x"))  # the script's own error: the connection stays usable
    assert store.apply(Boom("x", arg="fine")) == b"fine"
    assert store._breaker.failures == 0
    store.close()


async def test_async_binary_path_on_resp2(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url, prefix="ad7", protocol=2)
    limiter = rs.RateLimiter("r2", rate=2, per=60, burst=2, store=store)
    assert [(await limiter.atry_acquire("k")).allowed for _ in range(3)] == [True, True, False]
    with pytest.raises(rs.StoreError, match="poisoned"):
        await store.aapply(Boom("x"))
    assert await store.aapply(Boom("x", arg="ok")) == b"ok"
    await store.aclose()


async def test_async_binary_read_is_bounded_by_the_socket_timeout(
    own_redis_server: RedisServer,
) -> None:
    store = RedisStore.from_url(own_redis_server.url, socket_timeout=0.2, failure_threshold=5)
    limiter = rs.RateLimiter("hung", rate=5, per=60, store=store, on_store_error="closed")
    assert (await limiter.atry_acquire("k")).allowed
    own_redis_server.pause()
    try:
        d = await asyncio.wait_for(limiter.atry_acquire("k"), 5.0)  # not the 5 s: 0.2 s
    finally:
        own_redis_server.resume()
    assert not d.allowed  # the store failed: on_store_error="closed"
    assert store._breaker.failures == 1
    d = await limiter.atry_acquire("k")  # the next call reconnects; the stale reply is gone
    # the timed-out take ran when the server resumed (as on redis-py's own path): 5 - 3
    assert (d.allowed, d.remaining) == (True, 2)
    assert (await limiter.atry_acquire("k")).remaining == 1
    await store.aclose()
