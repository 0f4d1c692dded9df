"""Conformance of the adaptive throttle's operation: identical decisions on MemoryStore, Redis
and Redis Cluster for the same clock readings and random draws (scripted and random
sequences), its TTL, and a corrupted window."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resilience as rs
from resilience.events import StoreFailed
from resilience.stores.memory import MemoryStore
from resilience.stores.redis import RedisStore
from resilience.testing import FakeClock, RecordingListener
from resilience.throttle import _core as core
from resilience.throttle._store import _ThrottleOp

from ..redis_servers import RedisServer
from .conformance import Step, StoreFactory, normalize

pytestmark = pytest.mark.redis

# A step: ("d", done, accepted, draw) one decision reporting `done` finished calls, `accepted`
# of them accepted; ("s", done, accepted) a snapshot; or seconds to advance the clock by.
CONFIGS = {
    "book": core.config(window_us=120_000_000, buckets=20, k=2.0, cap=1.0),
    "coarse-capped": core.config(window_us=10_000_000, buckets=3, k=1.1, cap=0.9),
    "odd-width": core.config(window_us=10_000_001, buckets=7, k=1.5, cap=0.5),
}


def run_throttle(store: Any, clock: FakeClock, kind: str, steps: Sequence[Step]) -> list[Any]:
    cfg = CONFIGS[kind]
    out: list[Any] = []
    for step in steps:
        if isinstance(step, int | float):
            clock.advance(step)
            continue
        op = _ThrottleOp(f"thr:{kind}", cfg, step[1], step[2], step[3] if step[0] == "d" else None)
        out.append(normalize(store.apply(op)))
    return out


async def arun_throttle(
    store: Any, clock: FakeClock, kind: str, steps: Sequence[Step]
) -> list[Any]:
    cfg = CONFIGS[kind]
    out: list[Any] = []
    for step in steps:
        if isinstance(step, int | float):
            clock.advance(step)
            continue
        op = _ThrottleOp(f"thr:{kind}", cfg, step[1], step[2], step[3] if step[0] == "d" else None)
        out.append(normalize(await store.aapply(op)))
    return out


def throttle_expected(kind: str, steps: Sequence[Step]) -> list[Any]:
    clock = FakeClock(start=1000.0)
    return run_throttle(MemoryStore(clock=clock), clock, kind, steps)


def d(draw: float, done: int = 0, accepted: int = 0) -> tuple[str, int, int, float]:
    return ("d", done, min(accepted, done), draw)


SNAP = ("s", 0, 0)

SCENARIOS: dict[str, tuple[str, list[Step]]] = {
    "overload-then-recovery": (
        "coarse-capped",
        [
            *[d(0.5, done=1)] * 6,  # each reports one refused call: p grows to the 0.9 cap
            SNAP,
            d(0.95),  # above the cap: admitted
            3.4,
            d(0.2, done=5, accepted=5),
            SNAP,
            10,  # the whole window passed
            SNAP,
            d(0.0),
        ],
    ),
    "accepts-keep-it-open": (
        "book",
        [
            *[d(0.0, done=1, accepted=1)] * 10,
            SNAP,
            ("s", 3, 2),  # a snapshot reporting outcomes writes them
            *[d(0.0, done=1)] * 15,
            6,
            d(0.3),
            SNAP,
        ],
    ),
    "odd-bucket-boundaries": (
        "odd-width",
        [
            d(0.1, done=1),
            1.428571,
            d(0.1, done=1),
            0.000001,
            d(0.1, done=2),
            1.428572,
            d(0.4, done=1, accepted=1),
            5.0,
            SNAP,
            d(0.4, done=1),
            1e-6,
            d(0.0),
        ],
    ),
    "empty-reads-write-nothing": ("book", [SNAP, 1, SNAP, d(0.9), SNAP]),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_throttle_ops_conform(make_store: StoreFactory, name: str) -> None:
    kind, steps = SCENARIOS[name]
    clock = FakeClock(start=1000.0)
    assert run_throttle(make_store(clock), clock, kind, steps) == throttle_expected(kind, steps)


async def test_throttle_ops_conform_async(make_store: StoreFactory) -> None:
    for kind, steps in SCENARIOS.values():
        clock = FakeClock(start=1000.0)
        store = make_store(clock)
        assert await arun_throttle(store, clock, kind, steps) == throttle_expected(kind, steps)
        if isinstance(store, RedisStore):
            await store.aclose()


def test_reference_is_meaningful() -> None:
    res = throttle_expected(*SCENARIOS["overload-then-recovery"])
    assert [r[0] for r in res[:6]] == [False, True, True, True, True, True]
    assert res[0] == (False, 0, 1, 0)  # p = 1/2, not above the draw 0.5
    assert res[1] == (True, 3_333_233, 3, 0)  # retry at the next bucket boundary (3.33 s wide)
    assert res[6] == (False, 0, 11, 0)  # a rejected request counts: 6 reported + 5 rejected
    assert res[7] == (False, 0, 11, 0)  # p capped at 0.9 < 0.95; admitted, counted when done
    assert res[8] == (True, 3_266_566, 17, 5)  # (16 - 1.1 * 5) / 17 = 0.62 > 0.2
    assert res[10] == (False, 0, 0, 0)  # the window slid past everything


def test_windows_are_one_string_with_a_ttl(redis_server: RedisServer) -> None:
    import redis

    prefix = f"thrttl{uuid.uuid4().hex[:8]}"
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    rec = RecordingListener()
    t = rs.AdaptiveThrottle("ttl", window=30, store=store, listeners=[rec])
    assert t.call(lambda: "ok") == "ok"
    client = redis.Redis.from_url(redis_server.url)
    assert list(client.scan_iter(f"{prefix}:*")) == []  # nothing counted yet: nothing written
    assert t.call(lambda: "ok") == "ok"  # reports the first call
    (key,) = client.scan_iter(f"{prefix}:*")
    assert client.type(key) == b"string"
    assert 0 < client.pttl(key) <= 30_000
    assert t.counts() == (2, 2)
    client.set(key, b"garbage")  # corrupt: the window starts over
    assert t.call(lambda: "ok") == "ok"
    assert [e.decision for e in rec.of(StoreFailed)] == ["reset"]
    assert t.counts() == (1, 1)
    client.close()
    store.close()


throttle_step = st.one_of(
    st.sampled_from([0, 0.25, 1, 1.5, 3.3333, 7, 40]),
    st.builds(
        d,
        st.floats(0, 1, exclude_max=True),
        st.sampled_from([0, 1, 1, 1, 2, 5]),
        st.sampled_from([0, 0, 1, 2]),
    ),
    st.builds(d, st.sampled_from([0.0, 0.5, 0.9, 0.999999]), st.sampled_from([0, 1])),
    st.builds(lambda n, a: ("s", n, min(a, n)), st.sampled_from([0, 0, 1, 3]), st.just(1)),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(kind=st.sampled_from(sorted(CONFIGS)), steps=st.lists(throttle_step, max_size=50))
def test_random_throttle_sequences_conform(
    redis_server: RedisServer, kind: str, steps: list[Step]
) -> None:
    clock = FakeClock(start=1000.0)
    store = RedisStore.from_url(
        redis_server.url, prefix=f"prop{uuid.uuid4().hex[:12]}", clock=clock
    )
    try:
        assert run_throttle(store, clock, kind, steps) == throttle_expected(kind, steps)
    finally:
        store.close()


def test_policies_on_memory_and_redis_decide_alike(redis_server: RedisServer) -> None:
    import random

    def play(store_of: Any) -> list[str]:
        clock = FakeClock(start=1000.0)
        t = rs.AdaptiveThrottle(
            "fleet", on=ConnectionError, store=store_of(clock), clock=clock, random=random.Random(3)
        )
        seen = []

        def backend(i: int) -> int:  # accepts one call in three: p settles near 1/3
            if i % 3:
                raise ConnectionError("overloaded")
            return i

        for i in range(300):
            try:
                t.call(backend, i)
                seen.append("ok")
            except ConnectionError:
                seen.append("refused")
            except rs.ThrottledError:
                seen.append("throttled")
            clock.advance(0.5)
        return seen

    prefix = f"pol{uuid.uuid4().hex[:12]}"
    made: list[RedisStore] = []

    def on_redis(clock: FakeClock) -> RedisStore:
        made.append(RedisStore.from_url(redis_server.url, prefix=prefix, clock=clock))
        return made[-1]

    on_memory = play(lambda clock: MemoryStore(clock=clock))
    assert on_memory == play(on_redis)
    assert "throttled" in on_memory
    made[0].close()
