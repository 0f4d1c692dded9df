"""Policies on a real Redis that dies, hangs, restarts empty or loses its scripts."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import resilience as rs
from resilience._degraded import degraded_count
from resilience.events import Event, StoreFailed
from resilience.stores.redis import RedisStore

from ..redis_servers import RedisServer

pytestmark = pytest.mark.redis


_OPEN: list[RedisStore] = []


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def _store(server: RedisServer, **kw: Any) -> RedisStore:
    store = RedisStore.from_url(server.url, prefix=f"f{uuid.uuid4().hex[:10]}", **kw)
    _OPEN.append(store)
    return store


def _idempotent(store: RedisStore, calls: list[int], **kw: Any) -> Any:
    @rs.Idempotent(key=lambda k: k, store=store, **kw)
    def op(k: str) -> int:
        calls.append(1)
        return len(calls)

    return op


@pytest.mark.parametrize("mode", ["closed", "open", "local"])
def test_idempotency_on_a_killed_redis(own_redis_server: RedisServer, mode: str) -> None:
    events: list[Event] = []
    calls: list[int] = []
    name = f"idem-killed-{mode}"
    store = _store(own_redis_server, failure_threshold=2, probe_interval=60)
    op = _idempotent(store, calls, on_store_error=mode, name=name, listeners=[events.append])
    assert op("a") == 1
    assert op("a") == 1
    own_redis_server.kill()
    before = degraded_count(name, mode)
    outcomes: list[Any] = []
    t0 = time.monotonic()
    for _ in range(3):
        try:
            outcomes.append(op("b"))
        except rs.StoreError:
            outcomes.append("StoreError")
    elapsed = time.monotonic() - t0
    assert elapsed < 0.5  # refused connections, then the internal breaker: no waiting
    if mode == "closed":
        assert outcomes == ["StoreError"] * 3
        assert len(calls) == 1  # the handler never ran without protection
    elif mode == "open":
        assert outcomes == [2, 3, 4]  # ran unprotected, every time
    else:
        assert outcomes == [2, 2, 2]  # deduplicated within this process
    failed = [e for e in events if isinstance(e, StoreFailed)]
    assert [e.decision for e in failed] == [mode] * 3  # every degraded decision is counted
    assert degraded_count(name, mode) == before + 3


async def test_idempotency_async_on_a_killed_redis(own_redis_server: RedisServer) -> None:
    calls: list[int] = []
    store = _store(own_redis_server)

    @rs.Idempotent(key=lambda k: k, store=store)
    async def op(k: str) -> int:
        calls.append(1)
        return len(calls)

    assert await op("a") == 1
    own_redis_server.kill()
    with pytest.raises(rs.StoreError):
        await op("b")
    assert calls == [1]
    await store.aclose()


def test_idempotency_on_a_hung_redis_costs_one_timeout(own_redis_server: RedisServer) -> None:
    calls: list[int] = []
    store = _store(own_redis_server, socket_timeout=0.1, failure_threshold=1, probe_interval=60)
    op = _idempotent(store, calls, heartbeat=False)
    assert op("a") == 1
    own_redis_server.pause()
    try:
        t0 = time.monotonic()
        with pytest.raises(rs.StoreError):
            op("b")
        first = time.monotonic() - t0
        t1 = time.monotonic()
        for _ in range(50):
            with pytest.raises(rs.StoreError):
                op("b")
        rest = (time.monotonic() - t1) / 50
    finally:
        own_redis_server.resume()
    assert first < 1.0  # one bounded socket timeout (plus a reconnect attempt)
    assert rest < 0.005  # then local, fast decisions
    assert calls == [1]


def test_idempotency_after_restart_without_data(own_redis_server: RedisServer) -> None:
    calls: list[int] = []
    store = _store(own_redis_server, failure_threshold=100)
    op = _idempotent(store, calls)
    assert op("a") == 1
    own_redis_server.restart()
    for _ in range(3):  # a pooled connection may be stale once
        try:
            result = op("a")
            break
        except rs.StoreError:
            continue
    # the record was lost with the data: the retry re-executes (at-least-once across loss)
    assert result == 2
    assert op("a") == 2


def test_idempotency_survives_script_flush(redis_server: RedisServer) -> None:
    calls: list[int] = []
    store = _store(redis_server)
    op = _idempotent(store, calls)
    assert op("a") == 1
    redis_server.cli("script", "flush")
    assert op("a") == 1  # replayed: the claim script was reloaded transparently
    redis_server.cli("script", "flush")
    assert op("b") == 2
    assert calls == [1, 1]


def test_constructing_a_policy_never_resets_shared_state(redis_server: RedisServer) -> None:
    store = _store(redis_server)
    calls: list[int] = []
    assert _idempotent(store, calls)("a") == 1
    assert _idempotent(store, calls)("a") == 1  # a new policy instance (a restarted worker)
    assert calls == [1]


@pytest.mark.parametrize(("mode", "allowed"), [("open", True), ("closed", False)])
def test_limiter_on_a_killed_redis(own_redis_server: RedisServer, mode: Any, allowed: bool) -> None:
    events: list[Event] = []
    name = f"rl-killed-{mode}"
    store = _store(own_redis_server, failure_threshold=2, probe_interval=60)
    limiter = rs.RateLimiter(
        name, rate=1, per=60, store=store, on_store_error=mode, listeners=[events.append]
    )
    assert limiter.try_acquire("u").allowed
    assert not limiter.try_acquire("u").allowed  # shared state works
    own_redis_server.kill()
    before = degraded_count(name, mode)
    t0 = time.monotonic()
    decisions = [limiter.try_acquire("u").allowed for _ in range(5)]
    assert time.monotonic() - t0 < 0.5
    assert decisions == [allowed] * 5
    assert degraded_count(name, mode) == before + 5
    store.close()


def test_limiter_local_fallback_uses_its_share(own_redis_server: RedisServer) -> None:
    name = "rl-killed-local"
    store = _store(own_redis_server, failure_threshold=2, probe_interval=60)
    limiter = rs.RateLimiter(
        name, rate=8, per=60, burst=8, store=store, on_store_error="local", instances=4
    )
    assert [limiter.try_acquire("u").allowed for _ in range(3)] == [True] * 3  # shared: 8
    own_redis_server.kill()
    before = degraded_count(name, "local")
    decisions = [limiter.try_acquire("u").allowed for _ in range(5)]
    assert decisions == [True, True, False, False, False]  # this process's quarter: 2
    assert degraded_count(name, "local") == before + 5
    store.close()
