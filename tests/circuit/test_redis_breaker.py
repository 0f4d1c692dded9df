"""The shared breaker's cost on a real redis-server: one round trip per successful CLOSED call."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis

import resilience as rs

from ..redis_servers import RedisServer

pytestmark = pytest.mark.redis

CALLS = 100


def _scripts_run(client: redis.Redis) -> int:
    """EVALSHA + EVAL commands the server has executed (scripts never call these)."""
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


def _breaker(url: str, prefix: str, **kwargs: object) -> tuple[rs.RedisStore, rs.CircuitBreaker]:
    store = rs.RedisStore.from_url(url, prefix=prefix, socket_timeout=2.0)
    breaker = rs.CircuitBreaker("dep", store=store, **kwargs)  # type: ignore[arg-type]
    return store, breaker


def test_closed_successes_cost_one_round_trip_each(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    store, breaker = _breaker(redis_server.url, f"rt{uuid.uuid4().hex[:8]}", failure_ratio=0.5)
    breaker.call(lambda: None)  # scripts loaded, connection open
    before = _scripts_run(client)
    for _ in range(CALLS):
        assert breaker.call(lambda: "ok") == "ok"
    assert _scripts_run(client) - before == CALLS  # one permit request each, no separate record
    # every success is counted: the metrics read reports the last one
    assert breaker.metrics.calls == CALLS + 1
    assert _scripts_run(client) - before == CALLS + 1
    client.close()
    store.close()


async def test_closed_successes_cost_one_round_trip_each_async(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    store, breaker = _breaker(redis_server.url, f"rta{uuid.uuid4().hex[:8]}", failure_ratio=0.5)

    async def ok() -> str:
        return "ok"

    await breaker.acall(ok)
    before = _scripts_run(client)
    for _ in range(CALLS):
        assert await breaker.acall(ok) == "ok"
    assert _scripts_run(client) - before == CALLS
    assert breaker.metrics.calls == CALLS + 1
    client.close()
    await store.aclose()
    store.close()


def test_failures_are_shared_at_once_and_late_successes_count(redis_server: RedisServer) -> None:
    prefix = f"rtf{uuid.uuid4().hex[:8]}"
    store_a, a = _breaker(redis_server.url, prefix, failure_ratio=0.5, min_calls=4)
    store_b, b = _breaker(redis_server.url, prefix, failure_ratio=0.5, min_calls=4)
    a.call(lambda: None)
    a.call(lambda: None)  # two successes, the second one not reported yet
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            b.call(lambda: 1 / 0)
    assert b.metrics.calls == 3  # b's failures at once; a's last success still pending
    with pytest.raises(rs.CircuitOpenError):
        # a's permit request reports its pending success: the 4th call reaches min_calls with
        # 2/4 failed, the breaker opens and refuses this call, as if reported at once
        a.call(lambda: 1 / 0)
    assert b.state is rs.CircuitState.OPEN
    m = b.metrics
    assert (m.calls, m.failures) == (4, 2)
    store_a.close()
    store_b.close()


def test_half_open_outcomes_are_not_deferred(redis_server: RedisServer) -> None:
    prefix = f"rth{uuid.uuid4().hex[:8]}"
    clock = rs.testing.FakeClock()
    store = rs.RedisStore.from_url(redis_server.url, prefix=prefix, clock=clock)
    a = rs.CircuitBreaker("dep", failure_count=1, open_for=5, store=store, clock=clock)
    b = rs.CircuitBreaker("dep", failure_count=1, open_for=5, store=store, clock=clock)
    with pytest.raises(ZeroDivisionError):
        a.call(lambda: 1 / 0)
    clock.advance(5)
    a.call(lambda: None)  # the probe's success closes the breaker for everybody at once
    assert b.state is rs.CircuitState.CLOSED
    store.close()


def test_pending_successes_with_a_corrupted_state_and_a_forced_open(
    redis_server: RedisServer,
) -> None:
    """The three features of the breaker script on one key: the pending successes ride on the
    operation that finds the stored state undecodable (reset reported once, the successes
    counted on the fresh state), and on open(), whose forced state is saved without a TTL."""
    client = redis.Redis.from_url(redis_server.url)
    prefix = f"rtc{uuid.uuid4().hex[:8]}"
    seen = rs.testing.RecordingListener()
    store, breaker = _breaker(redis_server.url, prefix, failure_ratio=0.5, listeners=[seen])
    breaker.call(lambda: None)
    breaker.call(lambda: None)  # its success is pending
    assert breaker.metrics.calls == 2  # the read reported it
    breaker.call(lambda: None)
    breaker.call(lambda: None)  # two more successes of this generation, the last pending
    key = store.redis_key(breaker._key)
    client.set(key, b"\xff" * 8, px=60_000)  # undecodable: another length
    assert breaker.metrics.calls == 1  # a fresh state, plus the pending success
    assert [e.decision for e in seen.events if isinstance(e, rs.events.StoreFailed)] == ["reset"]
    breaker.call(lambda: None)  # pending again
    breaker.open()  # M_OPEN keeps it: recorded, then held open
    m = breaker.metrics
    assert (m.state, m.forced, m.calls) == (rs.CircuitState.OPEN, True, 2)
    assert client.pttl(key) == -1  # forced open: saved without PX
    assert [e.decision for e in seen.events if isinstance(e, rs.events.StoreFailed)] == [
        "reset"
    ]  # said once
    client.close()
    store.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_released_probe_reports_a_rewritten_state(redis_server: RedisServer, mode: str) -> None:
    """A half-open probe whose exception is ignored gives its permit back; when that operation
    finds the stored state undecodable, the rewrite is reported (a StoreFailed "reset") from
    async code too, where the permit is given back without awaiting the reply."""
    client = redis.Redis.from_url(redis_server.url)
    clock = rs.testing.FakeClock()
    store = rs.RedisStore.from_url(
        redis_server.url, prefix=f"rtr{uuid.uuid4().hex[:8]}", clock=clock
    )
    seen = rs.testing.RecordingListener()
    breaker = rs.CircuitBreaker(
        "dep",
        failure_count=1,
        open_for=5,
        on=ZeroDivisionError,
        store=store,
        clock=clock,
        listeners=[seen],
    )
    key = store.redis_key(breaker._key)
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    clock.advance(5)  # the next call is the half-open probe

    def corrupt_and_fail() -> None:
        client.set(key, b"\xff" * 8, px=60_000)  # undecodable while the probe runs
        raise KeyError("not a failure: the permit is released")

    if mode == "sync":
        with pytest.raises(KeyError):
            breaker.call(corrupt_and_fail)
    else:

        async def probe() -> None:
            corrupt_and_fail()

        async def main() -> None:
            with pytest.raises(KeyError):
                await breaker.acall(probe)
            for task in list(store._background):  # the release, sent without waiting
                await task
            await store.aclose()

        asyncio.run(main())
    assert [e.decision for e in seen.events if isinstance(e, rs.events.StoreFailed)] == ["reset"]
    client.close()
    store.close()
