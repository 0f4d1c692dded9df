"""Conformance of the shared retry budgets' operations: identical decisions on MemoryStore, Redis
and Redis Cluster for the same clock readings (scripted and Hypothesis sequences of calls,
refunds, retry decisions and clock steps), their TTLs, and corrupted states."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resilience as rs
from resilience._budget._store import TOKENS_TTL, _RatioOp, _TokensOp, ratio_config
from resilience.events import StoreFailed
from resilience.stores.memory import MemoryStore
from resilience.stores.redis import RedisStore
from resilience.testing import FakeClock, RecordingListener

from ..redis_servers import RedisServer, free_port
from .conformance import Step, StoreFactory, normalize

pytestmark = pytest.mark.redis

CONFIGS = {
    "tower": ratio_config(ttl=10.0, buckets=10, ratio=0.2, reserve=0.0),
    "reserve-coarse": ratio_config(ttl=1.0, buckets=3, ratio=0.5, reserve=2.0),
    # float products: 0.1 * 30 is 3.0000000000000004, 0.7 * 3 is 2.0999999999999996
    "float-edges": ratio_config(ttl=3.0, buckets=7, ratio=0.1, reserve=0.7 * 3.0),
}
#: (max milli-tokens, milli-tokens per success)
TOKENS = {"grpc": (10_000, 100), "odd": (3_500, 7)}

# A step: ("r", calls, uncalls, unretries, withdraw) one ratio operation; ("t", successes,
# failures) one token operation; or seconds to advance the clock by.


def _op(kind: str, step: Step) -> Any:
    if step[0] == "r":
        _, calls, uncalls, unretries, withdraw = step
        return _RatioOp(
            f"rb:{kind}",
            CONFIGS[kind],
            calls=calls,
            uncalls=uncalls,
            unretries=unretries,
            withdraw=withdraw,
        )
    mx, ratio = TOKENS["grpc" if kind == "tower" else "odd"]
    return _TokensOp(f"rt:{kind}", mx, ratio, step[1], step[2])


def run_budget(store: Any, clock: FakeClock, kind: str, steps: Sequence[Step]) -> list[Any]:
    out: list[Any] = []
    for step in steps:
        if isinstance(step, int | float):
            clock.advance(step)
        else:
            out.append(normalize(store.apply(_op(kind, step))))
    return out


async def arun_budget(store: Any, clock: FakeClock, kind: str, steps: Sequence[Step]) -> list[Any]:
    out: list[Any] = []
    for step in steps:
        if isinstance(step, int | float):
            clock.advance(step)
        else:
            out.append(normalize(await store.aapply(_op(kind, step))))
    return out


def budget_expected(kind: str, steps: Sequence[Step]) -> list[Any]:
    clock = FakeClock(start=1000.0)
    return run_budget(MemoryStore(clock=clock), clock, kind, steps)


def r(calls: int = 0, withdraw: bool = True, uncalls: int = 0, unretries: int = 0) -> Step:
    return ("r", calls, uncalls, unretries, withdraw)


SCENARIOS: dict[str, tuple[str, list[Step]]] = {
    "ratio-caps-retries": ("tower", [r(10), r(), r(5), r(), r(), 4.0, r(20), r(), r(), r()]),
    "window-slides": (
        "tower",
        [r(50, withdraw=False), 9.5, *[r()] * 11, 0.6, r(), r(), 10.0, r()],
    ),
    "reserve-and-refunds": (
        "reserve-coarse",
        [
            r(),
            r(),
            r(),  # the reserve (2 retries) is spent
            r(uncalls=5, unretries=1),  # nothing deposited to take back; one retry given back
            r(4),
            0.34,
            r(2, uncalls=1),
            r(),
            r(),
            0.7,
            r(withdraw=False),
            1.0,
            r(),
        ],
    ),
    "float-edges": (
        "float-edges",
        [r(30, withdraw=False), *[r()] * 7, 0.428571, r(1), 0.000001, r(), 3.0, r()],
    ),
    "tokens": (
        "tower",
        [("t", 0, 0), ("t", 0, 4), ("t", 0, 1), ("t", 10, 0), ("t", 0, 0), ("t", 200, 0)],
    ),
    "tokens-clamp": ("float-edges", [("t", 0, 9), ("t", 3, 0), ("t", 1000, 1), ("t", 0, 2)]),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_budget_ops_conform(make_store: StoreFactory, name: str) -> None:
    kind, steps = SCENARIOS[name]
    clock = FakeClock(start=1000.0)
    assert run_budget(make_store(clock), clock, kind, steps) == budget_expected(kind, steps)


async def test_budget_ops_conform_async(make_store: StoreFactory) -> None:
    for kind, steps in SCENARIOS.values():
        clock = FakeClock(start=1000.0)
        store = make_store(clock)
        assert await arun_budget(store, clock, kind, steps) == budget_expected(kind, steps)
        if isinstance(store, RedisStore):
            await store.aclose()


def test_reference_is_meaningful() -> None:
    res = budget_expected(*SCENARIOS["ratio-caps-retries"])
    # 10 calls: 2 retries (0.2 x 10); 15 calls: 3; 35 calls: 7
    assert [a for a, _, _ in res] == [True, True, True, False, False, True, True, True, True]
    assert res[-1] == (True, 35, 7)
    slid = budget_expected(*SCENARIOS["window-slides"])
    assert [a for a, _, _ in slid[1:12]] == [True] * 10 + [False]
    assert slid[12] == (False, 0, 10)  # the 50 calls' bucket left the window, the retries not
    assert slid[-1] == (False, 0, 0)
    reserve = budget_expected(*SCENARIOS["reserve-and-refunds"])
    assert [a for a, _, _ in reserve[:3]] == [True, True, False]
    assert reserve[3] == (True, 0, 2)  # the refunded retry made room for this one
    edges = budget_expected(*SCENARIOS["float-edges"])
    # 2.0999999999999996 + 0.1 * 30 = 5.1 (not 5.1000000000000005): 5 retries
    assert [a for a, _, _ in edges[1:8]] == [True] * 5 + [False] * 2
    tokens = budget_expected(*SCENARIOS["tokens"])
    assert tokens == [
        (True, 10_000),
        (True, 6_000),
        (False, 5_000),  # not above half
        (True, 6_000),
        (True, 6_000),
        (True, 10_000),  # clamped at the maximum
    ]
    assert budget_expected(*SCENARIOS["tokens-clamp"]) == [
        (False, 0),
        (False, 21),
        (True, 2_500),  # successes first (clamped at 3 500), then the failure
        (False, 500),
    ]


def test_states_are_strings_with_a_ttl_and_survive_corruption(redis_server: RedisServer) -> None:
    import redis

    prefix = f"rbttl{uuid.uuid4().hex[:8]}"
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    rec = RecordingListener()
    budget = rs.RetryBudget(ratio=1, min_per_second=0, ttl=5, name="ttl", store=store)
    budget2 = rs.RetryBudget(ratio=1, min_per_second=0, ttl=5, name="ttl", store=store)
    throttle = rs.RetryThrottle(name="ttl", store=store, listeners=[rec])
    client = redis.Redis.from_url(redis_server.url)
    assert not budget.try_withdraw()  # no calls, no reserve: refused, nothing written
    assert list(client.scan_iter(f"{prefix}:*")) == []
    budget2.deposit()  # its first count is sent at once
    assert budget.snapshot()["calls"] == 1  # another instance (process) sees it
    (key,) = client.scan_iter(f"{prefix}:*")
    assert client.type(key) == b"string"
    assert 0 < client.pttl(key) <= 5_000
    throttle.record(False)  # its first count is sent at once
    assert throttle.try_withdraw()
    keys = set(client.scan_iter(f"{prefix}:*")) - {key}
    (tkey,) = keys
    value = client.get(tkey)
    assert isinstance(value, bytes)
    assert value.split(b":")[0] == b"9000"  # and its expiry, on the script clock
    assert TOKENS_TTL * 1000 - 5_000 < client.pttl(tkey) <= TOKENS_TTL * 1000
    client.set(tkey, b"garbage")
    assert throttle.snapshot()["tokens"] == 10.0  # treated as absent: a full bucket
    assert [e.decision for e in rec.of(StoreFailed)] == ["reset"]
    client.close()
    store.close()


def test_a_corrupted_ratio_window_starts_over(redis_server: RedisServer) -> None:
    import redis

    prefix = f"rbbad{uuid.uuid4().hex[:8]}"
    clock = FakeClock(start=50.0)
    store = RedisStore.from_url(redis_server.url, prefix=prefix, clock=clock)
    client = redis.Redis.from_url(redis_server.url)
    cfg = CONFIGS["tower"]
    assert store.apply(_RatioOp("rb:x", cfg, calls=10)) == (False, 10, 0)
    (key,) = client.scan_iter(f"{prefix}:*")
    raw = client.get(key)
    assert isinstance(raw, bytes)
    for bad in (raw[:-8], b"x" * len(raw), raw[:8] + raw[8:16][::-1] + raw[16:]):
        client.set(key, bad)
        op = _RatioOp("rb:x", cfg, calls=1)
        assert store.apply(op) == (False, 1, 0)
        assert op.reset
        client.set(key, raw)
    client.delete(key)
    client.hset(key, "x", 1)  # another type
    op = _RatioOp("rb:x", cfg, withdraw=True)
    assert store.apply(op) == (False, 0, 0)
    assert op.reset
    client.close()
    store.close()


ratio_step = st.one_of(
    st.sampled_from([0, 0.1, 0.333333, 0.5, 1, 1.5, 4, 11]),
    st.builds(
        r,
        st.sampled_from([0, 0, 0, 1, 1, 3, 10, 40]),
        st.booleans(),
        st.sampled_from([0, 0, 0, 1, 3]),
        st.sampled_from([0, 0, 0, 1, 2]),
    ),
)
token_step = st.one_of(
    st.sampled_from([0, 1, 700]),
    st.builds(
        lambda s, f: ("t", s, f), st.sampled_from([0, 0, 1, 5, 60]), st.sampled_from([0, 1, 3])
    ),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    kind=st.sampled_from(sorted(CONFIGS)),
    steps=st.lists(st.one_of(ratio_step, ratio_step, token_step), max_size=40),
)
def test_random_budget_sequences_conform(
    make_store: StoreFactory, kind: str, steps: list[Step]
) -> None:
    clock = FakeClock(start=1000.0)
    assert run_budget(make_store(clock), clock, kind, steps) == budget_expected(kind, steps)


def test_policies_on_memory_and_redis_decide_alike(redis_server: RedisServer) -> None:
    def play(store_of: Any) -> list[str]:
        clock = FakeClock(start=1000.0)
        store = store_of(clock)
        budget = rs.RetryBudget(
            ratio=0.3, min_per_second=0.5, ttl=4, name="alike", store=store, clock=clock
        )
        throttle = rs.RetryThrottle(max_tokens=6, name="alike", store=store, clock=clock)
        seen = []
        for i in range(120):
            for policy in (budget, throttle):
                retry = rs.Retry(
                    on=ConnectionError, attempts=3, backoff=rs.backoff.constant(0), budget=policy
                )

                def backend(i: int = i) -> str:
                    if i % 4:  # 3 calls in 4 fail
                        raise ConnectionError("down")
                    return "ok"

                try:
                    seen.append(retry.call(backend))
                except ConnectionError as exc:
                    seen.append(str(exc.__notes__))
            clock.advance(0.05)
        return seen

    prefix = f"rbpol{uuid.uuid4().hex[:12]}"
    made: list[RedisStore] = []

    def on_redis(clock: FakeClock) -> RedisStore:
        made.append(RedisStore.from_url(redis_server.url, prefix=prefix, clock=clock))
        return made[-1]

    on_memory = play(lambda clock: MemoryStore(clock=clock))
    assert on_memory == play(on_redis)
    assert any("(budget)" in s for s in on_memory)
    assert any("(attempts)" in s for s in on_memory)
    made[0].close()


@pytest.mark.parametrize("mode", ["local", "open", "closed"])
def test_an_unreachable_redis_decides_per_on_store_error(mode: Any) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.5)
    rec = RecordingListener()
    budget = rs.RetryBudget(
        ratio=1, min_per_second=0, name="down", store=store, on_store_error=mode, listeners=[rec]
    )
    budget.deposit()  # this process's own window counts it
    assert budget.try_withdraw() is (mode != "closed")
    assert [e.decision for e in rec.of(StoreFailed)] == ["unrecorded", mode]
    store.close()
