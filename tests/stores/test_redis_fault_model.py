"""The Redis store's fault model, part 1: a bug is not an outage (script errors stay with their
key, poisoned limiter and breaker keys heal).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import redis

import resilience as rs
from resilience._degraded import degraded_count
from resilience.events import Event, StoreFailed
from resilience.testing import FakeClock

from ..redis_servers import RedisServer
from .fault_support import Ping, ScriptOp, open_store, raw_client


@dataclass
class PoisonedScript(ScriptOp):
    """An operation whose script always raises (a bug, a value it cannot handle)."""

    key: str
    LUA: ClassVar[str] = "return redis.error_reply('poisoned value')"

    def lua_args(self) -> list[str]:
        return []

    def parse(self, reply: Any) -> Any:
        return reply


@dataclass
class Garbled(ScriptOp):
    """An operation whose reply cannot be parsed."""

    key: str
    LUA: ClassVar[str] = "return 'not a number'"

    def lua_args(self) -> list[str]:
        return []

    def parse(self, reply: Any) -> int:
        return int(reply)


# -- 1. a bug is not an outage -----------------------------------------------------------------
@pytest.mark.redis
async def test_script_errors_stay_with_their_key(redis_server: RedisServer) -> None:
    store = open_store(redis_server, failure_threshold=2, probe_interval=60)
    for _ in range(10):
        with pytest.raises(rs.StoreError, match="'poisoned-key'") as info:
            store.apply(PoisonedScript("poisoned-key"))
        assert isinstance(info.value.__cause__, redis.ResponseError)
        with pytest.raises(rs.StoreError, match="'garbled-key'"):
            store.apply(Garbled("garbled-key"))
        with pytest.raises(rs.StoreError, match="'poisoned-key'"):
            await store.aapply(PoisonedScript("poisoned-key"))
    # ten times the threshold of deterministic errors: every other key is still served
    assert store.apply(Ping("other")) == 1
    assert await store.aapply(Ping("other")) == 1
    await store.aclose()


@dataclass
class Write(ScriptOp):
    key: str
    LUA: ClassVar[str] = "return redis.call('SET', KEYS[1], '1')"

    def lua_args(self) -> list[str]:
        return []

    def parse(self, reply: Any) -> Any:
        return reply


@pytest.mark.redis
def test_errors_about_the_server_still_count_as_failures(own_redis_server: RedisServer) -> None:
    store = open_store(own_redis_server, failure_threshold=3, probe_interval=60)
    assert store.apply(Ping("k")) == 1
    own_redis_server.cli("config", "set", "maxmemory-policy", "noeviction")
    own_redis_server.cli("config", "set", "maxmemory", "1")  # every write: OOM, from a script
    for _ in range(3):
        with pytest.raises(rs.StoreError, match="OutOfMemoryError"):
            store.apply(Write("k"))
    with pytest.raises(rs.StoreError, match="failing fast"):
        store.apply(Ping("k"))  # OOM is about the server, not one key


@pytest.mark.redis
def test_a_poisoned_limiter_key_heals_and_spares_other_policies(
    redis_server: RedisServer,
) -> None:
    store = open_store(redis_server, failure_threshold=2, probe_interval=60)
    client = raw_client(redis_server)
    seen: list[Event] = []
    poisoned = rs.RateLimiter("fm-poisoned", rate=10, per=1, store=store, listeners=[seen.append])
    hourly = rs.RateLimiter("fm-hourly", rate=1, per=3600, store=store)
    # a value the script cannot represent (its TTL would not fit PX), as a bug could write
    key = store.redis_key("rl:fm-poisoned")
    client.set(key, struct.pack("<ddd", 1e300, 0.0, 1e300), px=600_000)
    before = degraded_count("fm-poisoned", "reset")
    decisions = [poisoned.try_acquire() for _ in range(3)]
    assert [d.remaining for d in decisions] == [9, 8, 7]  # healed: a fresh, shared bucket
    assert [e.decision for e in seen if isinstance(e, StoreFailed)] == ["reset"]  # said once
    assert len(seen) == 1
    assert degraded_count("fm-poisoned", "reset") == before + 1
    assert len(client.get(key) or b"") == 24  # rewritten
    # and the store never failed fast for anybody: 1 of 10, not 10 of 10
    assert [hourly.try_acquire().allowed for _ in range(10)] == [True] + [False] * 9
    client.close()


def _breaker_state(client: redis.Redis, key: str) -> list[float]:
    raw = client.get(key)
    assert isinstance(raw, bytes)
    return list(struct.unpack(f"<{len(raw) // 8}d", raw))


def _write(client: redis.Redis, key: str, st: list[float]) -> None:
    client.set(key, struct.pack(f"<{len(st)}d", *st), px=600_000)


@pytest.mark.redis
@pytest.mark.parametrize("poison", ["token-nan", "half-open-without-permits", "wrong-type"])
def test_a_poisoned_breaker_key_heals(redis_server: RedisServer, poison: str) -> None:
    clock = FakeClock(start=1000.0)
    store = open_store(redis_server, clock=clock)
    client = raw_client(redis_server)
    seen: list[Event] = []
    name = f"fm-{poison}"
    breaker = rs.CircuitBreaker(
        name, failure_count=1, open_for=10, store=store, clock=clock, listeners=[seen.append]
    )
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)  # OPEN: a real state to corrupt
    key = store.redis_key(f"cb:{name}")
    st = _breaker_state(client, key)
    if poison == "token-nan":
        st[0] = float("nan")
        _write(client, key, st)
    elif poison == "half-open-without-permits":
        st[0] = (st[0] // 4 + 1) * 4 + 2  # HALF_OPEN, next generation
        st[1], st[3], st[4] = -1, 0, 0  # no probe timeout, no permit left, none passed
        _write(client, key, st)
    else:
        client.delete(key)
        client.hset(key, "x", "1")
        client.pexpire(key, 600_000)
    clock.advance(1)
    assert [breaker.call(lambda: "ran") for _ in range(3)] == ["ran"] * 3  # not rejected
    resets = [e for e in seen if isinstance(e, StoreFailed)]
    assert [e.decision for e in resets] == ["reset"]
    assert breaker.state is rs.CircuitState.CLOSED
    client.close()
