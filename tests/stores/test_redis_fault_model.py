"""The Redis store's fault model on real servers: a bug is not an outage, slow is not down, the
event loop never blocks on Redis, any event loop works."""

from __future__ import annotations

import asyncio
import gc
import struct
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import redis

import resilience as rs
from resilience._degraded import degraded_count
from resilience.events import Event, StoreFailed
from resilience.stores.redis import RedisStore
from resilience.stores.redis._faults import Breaker as _Breaker
from resilience.testing import FakeClock

from ..redis_servers import RedisServer

_OPEN: list[RedisStore] = []


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def _store(server: RedisServer, **kw: Any) -> RedisStore:
    store = RedisStore.from_url(server.url, prefix=f"fm{uuid.uuid4().hex[:10]}", **kw)
    _OPEN.append(store)
    return store


def _client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url)


class _Op:
    key: str

    def apply(self, state: Any | None, now: float) -> tuple[Any | None, int, float | None]:
        return state, 1, None  # (the in-process twin; these tests only run on Redis)


@dataclass
class Boom(_Op):
    """An operation whose script always raises (a bug, a value it cannot handle)."""

    key: str
    LUA: ClassVar[str] = "return redis.error_reply('poisoned value')"

    def lua_args(self) -> list[str]:
        return []

    def parse(self, reply: Any) -> Any:
        return reply


@dataclass
class Garbled(_Op):
    """An operation whose reply cannot be parsed."""

    key: str
    LUA: ClassVar[str] = "return 'not a number'"

    def lua_args(self) -> list[str]:
        return []

    def parse(self, reply: Any) -> int:
        return int(reply)


@dataclass
class Ping(_Op):
    key: str
    LUA: ClassVar[str] = "return 1"

    def lua_args(self) -> list[str]:
        return []

    def parse(self, reply: Any) -> int:
        return int(reply)


# -- 1. a bug is not an outage -----------------------------------------------------------------
@pytest.mark.redis
async def test_script_errors_stay_with_their_key(redis_server: RedisServer) -> None:
    store = _store(redis_server, failure_threshold=2, probe_interval=60)
    for _ in range(10):
        with pytest.raises(rs.StoreError, match="'poisoned-key'") as info:
            store.apply(Boom("poisoned-key"))
        assert isinstance(info.value.__cause__, redis.ResponseError)
        with pytest.raises(rs.StoreError, match="'garbled-key'"):
            store.apply(Garbled("garbled-key"))
        with pytest.raises(rs.StoreError, match="'poisoned-key'"):
            await store.aapply(Boom("poisoned-key"))
    # ten times the threshold of deterministic errors: every other key is still served
    assert store.apply(Ping("other")) == 1
    assert await store.aapply(Ping("other")) == 1
    await store.aclose()


@dataclass
class Write(_Op):
    key: str
    LUA: ClassVar[str] = "return redis.call('SET', KEYS[1], '1')"

    def lua_args(self) -> list[str]:
        return []

    def parse(self, reply: Any) -> Any:
        return reply


@pytest.mark.redis
def test_errors_about_the_server_still_count_as_failures(own_redis_server: RedisServer) -> None:
    store = _store(own_redis_server, failure_threshold=3, probe_interval=60)
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
    store = _store(redis_server, failure_threshold=2, probe_interval=60)
    client = _client(redis_server)
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
    store = _store(redis_server, clock=clock)
    client = _client(redis_server)
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


# -- 2. slow is not down -----------------------------------------------------------------------
def test_fail_fast_counts_an_outage_not_one_slow_moment() -> None:
    clock = FakeClock()
    b = _Breaker(threshold=3, interval=0.05, clock=clock)
    # 50 calls in flight when one slow moment makes them all time out: one piece of evidence
    began = [(b.epoch, b.check()) for _ in range(50)]
    for epoch, probe in began:
        b.failure(epoch, probe)
    assert b.failures == 1
    assert not b.check()  # not failing fast
    # a success clears it; three sequential failures (each call began after the previous
    # failure) are an outage
    b.success()
    for _ in range(3):
        epoch = b.epoch
        b.failure(epoch, b.check())
    with pytest.raises(rs.StoreError, match="failing fast"):
        b.check()


def test_fail_fast_probes_one_caller_at_a_time_and_recovers_at_once() -> None:
    clock = FakeClock()
    b = _Breaker(threshold=2, interval=0.05, clock=clock)
    for _ in range(2):
        b.failure(b.epoch, b.check())
    with pytest.raises(rs.StoreError):
        b.check()
    clock.advance(0.05)
    epoch = b.epoch
    assert b.check() is True  # the probe
    for _ in range(5):
        with pytest.raises(rs.StoreError):
            b.check()  # only one probe in flight
    b.failure(epoch, True)  # the probe failed: wait another interval
    with pytest.raises(rs.StoreError):
        b.check()
    clock.advance(0.05)
    assert b.check() is True
    b.abandon()  # a cancelled probe frees the slot
    assert b.check() is True
    b.success()  # the backend answered: used again by everybody
    assert b.failures == 0
    assert not b.check()


async def test_a_sync_call_on_an_async_only_store_leaves_the_probe_to_others() -> None:
    """``apply`` takes its client before the breaker admits a probe, like ``aapply``: a sync
    call on a store given only an async client is refused without taking the probe, so the
    store does not fail fast for good after the outage."""
    clock = FakeClock()
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.25)
    store = RedisStore(client, failure_threshold=1, probe_interval=0.05, clock=clock)
    with pytest.raises(rs.StoreError, match="redis store failed"):
        await store.aapply(Ping("k"))  # nothing listens: an outage, failing fast from here
    with pytest.raises(rs.StoreError, match="failing fast"):
        await store.aapply(Ping("k"))
    clock.advance(0.05)  # the next call is the probe
    with pytest.raises(rs.StoreError, match="was given an async client"):
        store.apply(Ping("k"))
    with pytest.raises(rs.StoreError, match="redis store failed"):  # the probe reached Redis
        await store.aapply(Ping("k"))
    await client.aclose()


def test_store_defaults_are_forgiving_and_recover_quickly() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0")
    assert store._client_kwargs["socket_timeout"] == 0.25
    assert store._client_kwargs["socket_connect_timeout"] == 0.25
    assert store._breaker.threshold == 3
    assert store._breaker.interval <= 0.1


@pytest.mark.redis
def test_concurrent_timeouts_in_one_stall_do_not_trip_fail_fast(
    own_redis_server: RedisServer,
) -> None:
    store = _store(own_redis_server, socket_timeout=0.2, failure_threshold=3, probe_interval=60)
    assert store.apply(Ping("warm")) == 1
    n = 12
    barrier = threading.Barrier(n + 1)
    outcomes: list[str] = []

    def call() -> None:
        barrier.wait()
        try:
            store.apply(Ping("k"))
            outcomes.append("ok")
        except rs.StoreError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    own_redis_server.pause()  # one slow moment: every call in flight times out
    try:
        barrier.wait()
        for t in threads:
            t.join()
    finally:
        own_redis_server.resume()
    assert len(outcomes) == n
    assert all("Timeout" in o for o in outcomes)
    assert store.apply(Ping("k")) == 1  # used at once: not failing fast for 60 s


@pytest.mark.redis
def test_after_an_outage_the_store_is_used_again_within_100_ms(
    own_redis_server: RedisServer,
) -> None:
    store = _store(own_redis_server)  # the defaults
    assert store.apply(Ping("k")) == 1
    own_redis_server.kill()
    for _ in range(5):
        with pytest.raises(rs.StoreError):
            store.apply(Ping("k"))
    with pytest.raises(rs.StoreError, match="failing fast"):
        store.apply(Ping("k"))
    port = own_redis_server.port
    own_redis_server.start()
    assert own_redis_server.port == port
    back = time.monotonic()  # from now on every call could reach it
    while True:
        try:
            store.apply(Ping("k"))
            break
        except rs.StoreError:
            time.sleep(0.002)
    assert time.monotonic() - back < 0.1


@pytest.mark.redis
async def test_a_burst_of_concurrent_async_decisions_is_not_an_outage(
    redis_server: RedisServer,
) -> None:
    # The point is queueing past max_connections instead of "Too many connections"; generous
    # socket timeouts keep a CPU-starved test machine (a busy loop delays the connects) from
    # turning this into a test of the timeouts.
    store = _store(redis_server, socket_timeout=1.0, socket_connect_timeout=1.0)
    seen: list[Event] = []
    limiter = rs.RateLimiter("fm-burst", rate=10_000, store=store, listeners=[seen.append])
    decisions = await asyncio.gather(*[limiter.atry_acquire() for _ in range(300)])
    assert all(d.allowed for d in decisions)
    assert not [e for e in seen if isinstance(e, StoreFailed)]  # they queued for a connection
    await store.aclose()


# -- 3. the event loop never blocks on Redis ---------------------------------------------------
async def _max_loop_lag(during: Any) -> float:
    """Run ``during()`` while a ticker records the longest gap between its ticks."""
    lag = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal lag
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.002)
            now = time.monotonic()
            lag = max(lag, now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    try:
        await during()
    finally:
        await asyncio.sleep(0.02)
        stop.set()
        await task
    return lag


@pytest.mark.redis
@pytest.mark.parametrize("policy", ["breaker-half-open", "limiter-waiting"])
async def test_cancelling_300_calls_on_a_stalled_redis_never_blocks_the_loop(
    own_redis_server: RedisServer, policy: str
) -> None:
    clock = FakeClock(start=1000.0)
    # a long socket timeout: one blocking give-back would stall the loop for 2 s, far above the
    # bound below, while a busy test machine's own scheduling delays stay far under it
    store = _store(own_redis_server, socket_timeout=2.0, clock=clock)
    n = 300
    started = asyncio.Semaphore(0)
    hold = asyncio.Event()

    async def work() -> None:
        started.release()
        await hold.wait()

    if policy == "breaker-half-open":
        guarded: Any = rs.CircuitBreaker(
            "fm-lag", failure_count=1, open_for=5, half_open_calls=n, store=store, clock=clock
        )
        with pytest.raises(ZeroDivisionError):
            await guarded.acall(_fail)
        clock.advance(6)  # HALF_OPEN: n probes, each holding a permit on Redis
        tasks = [asyncio.create_task(guarded.acall(work)) for _ in range(n)]
        for _ in range(n):
            await started.acquire()
    else:
        waiting: list[Event] = []
        all_waiting = asyncio.Event()

        def waited(event: Event) -> None:
            waiting.append(event)
            if len(waiting) == n - 1:  # all but the first wait for their slot, reserved on Redis
                all_waiting.set()

        limiter = rs.RateLimiter(
            "fm-lag",
            rate=1,
            burst=1,
            max_wait=10_000,
            store=store,
            clock=rs.SystemClock(),
            listeners=[waited],
        )
        tasks = [asyncio.create_task(limiter.aacquire()) for _ in range(n)]
        await all_waiting.wait()

    async def cancel_all_on_a_stalled_redis() -> None:
        own_redis_server.pause()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        lag = await _max_loop_lag(cancel_all_on_a_stalled_redis)
    finally:
        own_redis_server.resume()
    # one blocking give-back alone would stall the loop for the 2 s socket timeout
    assert lag < 1.0, f"the event loop was blocked for {lag:.3f} s"
    await asyncio.gather(*store._background, return_exceptions=True)  # the give-backs finish
    await store.aclose()


async def _fail() -> None:
    raise ZeroDivisionError


# -- 4. any event loop -------------------------------------------------------------------------
@pytest.mark.redis
def test_one_store_serves_consecutive_event_loops(redis_server: RedisServer) -> None:
    store = _store(redis_server)
    seen: list[Event] = []
    limiter = rs.RateLimiter("fm-loops", rate=3, per=3600, store=store, listeners=[seen.append])

    async def take() -> bool:
        return (await limiter.atry_acquire()).allowed

    # a second asyncio.run (a test suite, a CLI) with the same store: its own connections
    assert [asyncio.run(take()) for _ in range(4)] == [True, True, True, False]  # shared state
    assert not [e for e in seen if isinstance(e, StoreFailed)]  # never degraded
    assert not store._loops  # each loop's client was closed and forgotten when it shut down


@pytest.mark.redis
def test_a_given_async_client_on_another_loop_is_a_store_error(redis_server: RedisServer) -> None:
    import redis.asyncio

    seen: list[Event] = []

    def two_loops() -> list[bool]:
        client = redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=2)
        store = RedisStore(client, prefix=f"fm{uuid.uuid4().hex[:10]}")
        limiter = rs.RateLimiter("fm-given", rate=5, per=3600, store=store, listeners=[seen.append])

        async def take() -> bool:
            return (await limiter.atry_acquire()).allowed

        return [asyncio.run(take()), asyncio.run(take())]

    # the second loop cannot use the first one's connection: routed through on_store_error
    assert two_loops() == [True, True]
    assert [e.decision for e in seen if isinstance(e, StoreFailed)] == ["open"]
    # that connection cannot be closed any more (its loop is gone): the reason from_url keeps
    # one client per loop. Let it go quietly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
