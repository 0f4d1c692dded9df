"""Conformance of the idempotency ops: identical results on MemoryStore, Redis and Redis Cluster
(scripted and random sequences).
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from resilience.idempotency import ClaimOp, CompleteOp, ReleaseOp, RenewOp
from resilience.stores.redis import RedisStore
from resilience.testing import FakeClock

from ..redis_servers import RedisServer
from .conformance import Step, StoreFactory, arun, expected, run

pytestmark = pytest.mark.redis


# -- idempotency ------------------------------------------------------------------------------
LEASE, TTL = 30.0, 100.0


def claim(owner: str, fp: str = "fp", key: str = "k") -> ClaimOp:
    return ClaimOp(key, fp, owner, LEASE, TTL)


def renew(owner: str, fence: int, key: str = "k") -> RenewOp:
    return RenewOp(key, owner, fence, LEASE, TTL)


def complete(owner: str, fence: int, payload: str | None = "s42", key: str = "k") -> CompleteOp:
    return CompleteOp(key, owner, fence, payload, TTL)


def release(owner: str, fence: int, key: str = "k") -> ReleaseOp:
    return ReleaseOp(key, owner, fence)


IDEMPOTENCY_SCENARIOS: dict[str, list[Step]] = {
    "claim-duplicate-complete-replay": [
        claim("a"),
        5,
        claim("b"),
        complete("a", 1, 's{"id": 7, "name": "caf\u00e9"}'),
        claim("c"),
        claim("d", fp="other"),
    ],
    "lease-expiry-takeover-and-fencing": [
        claim("a"),
        30,  # exactly at lease end: expired (lu > now is false)
        claim("b"),
        complete("a", 1),  # the zombie's late result is refused
        renew("a", 1),
        renew("b", 2),
        29,
        claim("c"),
        complete("b", 2, None),
        claim("c"),
    ],
    # float noise: 1000.1 + 0.2 + 29.9 + 0.1 is not exactly the lease end (1000.3 + 30) in
    # floats, but it is in whole µs, where both stores decide: the lease has ended
    "lease-ends-at-the-same-microsecond": [
        0.1,
        0.2,
        claim("a"),
        29.9,
        0.1,
        claim("b"),
    ],
    "release-then-rerun": [
        claim("a"),
        release("b", 1),
        release("a", 2),
        release("a", 1),
        claim("b"),
        release("b", 1),
    ],
    "record-expires-after-ttl": [
        claim("a"),
        complete("a", 1),
        99,
        claim("b"),
        1,
        claim("b"),  # the completed record expired: a fresh claim
    ],
    "renew-keeps-the-record-alive": [
        claim("a"),
        25,
        renew("a", 1),
        25,
        renew("a", 1),
        25,
        claim("b"),
        120,
        claim("b"),
    ],
    "a-retried-completion-is-idempotent-for-its-owner": [
        claim("a"),
        complete("a", 1, "s1"),
        complete("a", 1, "s1"),  # the reply of the first one was lost: stored
        complete("b", 1, "s2"),  # another owner: refused
        claim("c"),  # replays the first outcome
        complete("a", 2, "s3"),  # another fence: refused
    ],
    "keys-are-independent": [
        claim("a", key="k1"),
        claim("a", key="k2"),
        complete("a", 1, "s1", key="k1"),
        claim("b", key="k1"),
        claim("b", key="k2"),
    ],
}


@pytest.mark.parametrize("name", sorted(IDEMPOTENCY_SCENARIOS))
def test_idempotency_ops_conform(make_store: StoreFactory, name: str) -> None:
    steps = IDEMPOTENCY_SCENARIOS[name]
    clock = FakeClock(start=1000.0)
    assert run(make_store(clock), clock, steps) == expected(steps)


async def test_idempotency_ops_conform_async(make_store: StoreFactory) -> None:
    for steps in IDEMPOTENCY_SCENARIOS.values():
        clock = FakeClock(start=1000.0)
        store = make_store(clock)
        assert await arun(store, clock, steps) == expected(steps)
        if isinstance(store, RedisStore):
            await store.aclose()


def test_expected_results_are_meaningful() -> None:
    # the reference itself (so a conformance pass cannot hide a wrong state machine)
    res = expected(IDEMPOTENCY_SCENARIOS["lease-expiry-takeover-and-fencing"])
    assert res == [
        ("claimed", 1, 0),
        ("claimed", 2, 1),
        False,
        False,
        True,
        ("in_progress", 2, 1.0),
        True,
        ("replay", 2, None),
    ]
    boundary = expected(IDEMPOTENCY_SCENARIOS["lease-ends-at-the-same-microsecond"])
    assert boundary == [("claimed", 1, 0), ("claimed", 2, 1)]
    retried = expected(IDEMPOTENCY_SCENARIOS["a-retried-completion-is-idempotent-for-its-owner"])
    assert retried == [("claimed", 1, 0), True, True, False, ("replay", 1, "s1"), False]


def test_corrupt_records_fail_closed_on_redis(redis_server: RedisServer) -> None:
    import redis

    store = RedisStore.from_url(redis_server.url, prefix=f"corrupt{uuid.uuid4().hex[:8]}")
    client = redis.Redis.from_url(redis_server.url)
    client.set(store.redis_key("wrong-type"), "x", ex=60)
    client.hset(store.redis_key("bad-version"), mapping={"x": "9" * 16, "v": "2"})
    client.hset(store.redis_key("no-expiry"), mapping={"v": "1", "st": "p"})
    for key in ("wrong-type", "bad-version", "no-expiry"):
        assert store.apply(claim("a", key=key)) == ("corrupt", 0, 0)
        assert store.apply(renew("a", 1, key=key)) is False
    client.close()
    store.close()


def test_every_key_has_a_ttl_and_one_slot(redis_server: RedisServer) -> None:
    import redis

    prefix = f"ttl{uuid.uuid4().hex[:8]}"
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    store.apply(claim("a", key="t1"))
    store.apply(claim("a", key="t2"))
    store.apply(complete("a", 1, key="t2"))
    client = redis.Redis.from_url(redis_server.url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    assert len(keys) == 2
    assert all(0 < client.pttl(k) <= (TTL + LEASE) * 1000 for k in keys)
    client.close()
    store.close()


# -- property: random op sequences ------------------------------------------------------------
owners = st.sampled_from(["a", "b", "c"])
fences = st.integers(min_value=1, max_value=3)
idempotency_step = st.one_of(
    st.integers(min_value=0, max_value=60),
    st.builds(claim, owners, st.sampled_from(["fp", "fp2"])),
    st.builds(renew, owners, fences),
    st.builds(complete, owners, fences, st.sampled_from([None, "s1", "b" + "QUJD"])),
    st.builds(release, owners, fences),
)
#: fractional clock steps: a whole number of seconds ``n`` taken as ``f`` then ``n - f``, so
#: the clock lands on a lease end or an expiry by a different float path than ``now + lease``
split_advance = st.builds(
    lambda n, f, first: [f, n - f] if first else [n - f, f],
    st.sampled_from([LEASE, TTL, TTL + LEASE, 10]),
    st.sampled_from([0.3, 1.3, 0.1, 0.9, 0.7]),
    st.booleans(),
)
idempotency_item = st.one_of(
    idempotency_step.map(lambda step: [step]),
    split_advance,
    # a claim, then a duplicate probing the lease end (or the record's expiry) reached by a
    # noisy float path
    st.builds(
        lambda c, a, d: [c, *a, d],
        st.builds(claim, owners),
        split_advance,
        st.builds(claim, owners),
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(items=st.lists(idempotency_item, max_size=20))
@example(items=[[claim("a")], [29.9], [0.1], [claim("b")]])
@example(items=[[claim("a")], [9.9, 0.1], [renew("a", 1)], [29.9, 0.1], [claim("b")]])
def test_random_idempotency_sequences_conform(
    redis_server: RedisServer, items: list[list[Step]]
) -> None:
    # the clock starts at a fractional instant with float noise (1000.1 + 0.2 != 1000.3)
    steps: list[Step] = [0.1, 0.2, *(step for item in items for step in item)]
    clock = FakeClock(start=1000.0)
    store = RedisStore.from_url(
        redis_server.url, prefix=f"prop{uuid.uuid4().hex[:12]}", clock=clock
    )
    try:
        assert run(store, clock, steps) == expected(steps)
    finally:
        store.close()
