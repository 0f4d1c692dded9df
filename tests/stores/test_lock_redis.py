"""rs.Lock drills against a real redis-server: crash, zombie, contention, restart, conformance."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import resilience as rs
from resilience.events import LockLost
from resilience.lock._ops import AcquireOp, ReleaseOp, RenewOp
from resilience.stores.memory import MemoryStore
from resilience.stores.redis import RedisStore
from resilience.testing import FakeClock, RecordingListener

from ..helpers import wait_until
from ..redis_servers import RedisCluster, RedisServer
from .test_lock import is_lost

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def prefix() -> str:
    return f"lk{uuid.uuid4().hex[:10]}"


@pytest.fixture
def fake_store(redis_server: RedisServer, prefix: str, clock: FakeClock) -> Iterator[RedisStore]:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, clock=clock, socket_timeout=2.0)
    yield store
    store.close()


@pytest.fixture(params=["redis", "cluster"])
def any_redis(
    request: pytest.FixtureRequest, prefix: str, clock: FakeClock
) -> Iterator[RedisStore]:
    """A store on a standalone server, or on a Redis Cluster (one key per lock: any slot)."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        store = RedisStore.from_url(server.url, prefix=prefix, clock=clock, socket_timeout=2.0)
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        store = RedisStore.from_url(
            cluster.url, prefix=prefix, cluster=True, clock=clock, socket_timeout=2.0
        )
    yield store
    store.close()


def test_the_ops_agree_on_memory_and_redis(any_redis: RedisStore, clock: FakeClock) -> None:
    memory = MemoryStore(clock=clock)
    plan: list[tuple[float, Any]] = [
        (0.0, AcquireOp("k", "a", 3.0, 10.0)),
        (1.0, AcquireOp("k", "b", 3.0, 10.0)),
        (1.5, RenewOp("k", "a", 1, 3.0, 10.0)),
        (2.0, RenewOp("k", "b", 1, 3.0, 10.0)),
        (2.0, ReleaseOp("k", "b", 1, 10.0)),
        (4.0, AcquireOp("k", "b", 3.0, 10.0)),
        (4.6, AcquireOp("k", "b", 3.0, 10.0)),  # a's renewed lease ended at 4.5
        (5.0, RenewOp("k", "a", 1, 3.0, 10.0)),  # the zombie
        (5.0, ReleaseOp("k", "a", 1, 10.0)),
        (6.0, ReleaseOp("k", "b", 2, 10.0)),
        (6.0, AcquireOp("k", "c", 3.0, 10.0)),
        (7.0, ReleaseOp("k", "c", 3, 10.0)),
        (30.0, AcquireOp("k", "d", 3.0, 10.0)),  # the counter expired: seeded from the clock
        (40.0, RenewOp("k", "d", 30_000_000, 3.0, 10.0)),  # lease ended
        (40.0, ReleaseOp("k", "d", 30_000_000, 10.0)),  # still its own, but ended: reported lost
    ]
    got: dict[str, list[Any]] = {"memory": [], "redis": []}
    for at, op in plan:
        clock.set(at)
        got["memory"].append(memory.apply(op))
        got["redis"].append(any_redis.apply(op))
    assert got["memory"] == got["redis"]
    assert got["redis"][1] == (False, 1, 2.0)
    assert got["redis"][6] == (True, 2, 0.0)
    assert got["redis"][12] == (True, 30_000_000, 0.0)
    assert got["redis"][-2:] == [False, False]


def test_a_corrupt_state_is_replaced_with_a_seeded_fence(
    fake_store: RedisStore, clock: FakeClock, redis_server: RedisServer
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    key = fake_store.redis_key("lock:jobs:a")
    client.set(key, "garbage")
    clock.set(5.0)
    lock = rs.Lock("jobs", store=fake_store, clock=clock)
    with lock.hold("a") as held:
        assert held.fence == 5_000_000
    client.close()


def test_zombie_on_redis_is_fenced_out(fake_store: RedisStore, clock: FakeClock) -> None:
    lock = rs.Lock("jobs", store=fake_store, ttl=3, clock=clock)
    with lock.hold("a") as zombie:
        clock.advance(10)  # paused past its lease: the late renewal is refused
        assert zombie.lost
        with lock.hold("a") as successor:
            assert successor.fence == zombie.fence + 1
            assert not fake_store.apply(RenewOp("lock:jobs:a", zombie._owner, zombie.fence, 3, 9))
            assert not fake_store.apply(ReleaseOp("lock:jobs:a", zombie._owner, zombie.fence, 9))
            clock.advance(2)  # the successor's heartbeat renews on Redis
            with pytest.raises(rs.LockHeldError) as info, lock.hold("a"):
                pass  # pragma: no cover - refused
            assert info.value.fence == successor.fence
            assert info.value.retry_after == pytest.approx(3.0)  # renewed at t=12 (lease 3)
            assert not successor.lost


CHILD = """
import sys, resilience as rs
from resilience.stores.redis import RedisStore
store = RedisStore.from_url(sys.argv[1], prefix=sys.argv[2])
lock = rs.Lock("jobs", store=store, ttl=1)
with lock.hold("a") as held:
    print(held.fence, flush=True)
    sys.stdin.read()  # hold until killed
"""


def test_crash_a_killed_holder_is_replaced_after_ttl_with_a_higher_fence(
    redis_server: RedisServer, prefix: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, redis_server.url, prefix],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    try:
        child_fence = int(child.stdout.readline())
        store = RedisStore.from_url(redis_server.url, prefix=prefix, socket_timeout=2.0)
        lock = rs.Lock("jobs", store=store, ttl=1, wait=5)
        with pytest.raises(rs.LockHeldError) as info, rs.Lock("jobs", store=store).hold("a"):
            pass  # pragma: no cover - refused
        assert info.value.fence == child_fence
        assert info.value.retry_after is not None
        assert 0 < info.value.retry_after <= 1
        child.kill()  # kill -9: no release, no more renewals
        child.wait()
        killed = time.monotonic()
        with lock.hold("a") as held:
            assert held.fence == child_fence + 1
            # its last renewal was at most ttl / 3 before the kill: the lease ran out after it
            assert time.monotonic() - killed <= 1.5
        store.close()
    finally:
        child.kill()
        child.wait()
        child.stdin.close()  # type: ignore[union-attr]
        child.stdout.close()


def test_thread_contention_on_redis(redis_server: RedisServer, prefix: str) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, socket_timeout=2.0)
    lock = rs.Lock("jobs", store=store, ttl=5, wait=30)
    counter = 0
    inside = 0
    order: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        nonlocal counter, inside
        barrier.wait()
        try:
            for _ in range(10):
                with lock.hold("shared") as held:
                    inside += 1
                    assert inside == 1
                    order.append(held.fence)
                    value = counter
                    threading.Event().wait(0.0005)  # widen the race window
                    counter = value + 1
                    inside -= 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    assert errors == []
    assert counter == 40
    assert order == sorted(set(order))
    assert len(order) == 40


def test_task_contention_on_redis(redis_server: RedisServer, prefix: str) -> None:
    inside = 0
    order: list[int] = []

    async def main() -> None:
        store = RedisStore.from_url(redis_server.url, prefix=prefix, socket_timeout=2.0)
        lock = rs.Lock("jobs", store=store, ttl=5, wait=30)

        async def worker() -> None:
            nonlocal inside
            for _ in range(5):
                async with lock.ahold("shared") as held:
                    inside += 1
                    assert inside == 1
                    order.append(held.fence)
                    await asyncio.sleep(0)
                    inside -= 1

        await asyncio.gather(*(worker() for _ in range(6)))
        await store.aclose()

    asyncio.run(main())
    assert order == sorted(set(order))
    assert len(order) == 30


def test_restart_without_persistence_loses_the_hold_but_not_fence_order(
    own_redis_server: RedisServer, prefix: str
) -> None:
    store = RedisStore.from_url(own_redis_server.url, prefix=prefix, socket_timeout=1.0)
    clock = FakeClock()  # drives the heartbeats (the lease itself is on the server's clock)
    rec = RecordingListener()
    lock = rs.Lock("jobs", store=store, ttl=30, clock=clock, listeners=[rec])
    with lock.hold("a") as old:
        own_redis_server.restart()  # --save "" --appendonly no: every key is gone
        store2 = RedisStore.from_url(own_redis_server.url, prefix=prefix, socket_timeout=1.0)
        other = rs.Lock("jobs", store=store2, ttl=30, clock=clock)
        # the state is gone: another process acquires at once while the old holder runs
        with other.hold("a") as new:
            assert new.fence > old.fence  # seeded from the server clock (µs): above the old one
            assert not old.lost  # the old holder cannot know yet...

            def renewal_refused() -> bool:
                lock._renew(old)  # its next heartbeat (the first may hit the closed connection)
                return old._lost

            assert wait_until(renewal_refused, timeout=10)
            assert is_lost(old)  # ...until its next renewal reaches the new server
            assert [e.reason for e in rec.of(LockLost)] == ["renewal_refused"]
        assert not new.lost
    store.close()
    store2.close()


def test_real_time_heartbeats_keep_sync_and_async_holds(
    redis_server: RedisServer, prefix: str
) -> None:
    """The shared renewal thread (sync) and the loop's timers (async) on real time: a hold
    lasting several ttl keeps the key."""
    store = RedisStore.from_url(redis_server.url, prefix=prefix, socket_timeout=2.0)
    lock = rs.Lock("jobs", store=store, ttl=0.3)
    probe = rs.Lock("jobs", store=store, ttl=0.3)

    def refused() -> bool:
        try:
            with probe.hold("a"):
                return False
        except rs.LockHeldError:
            return True

    with lock.hold("a") as held:
        until = time.monotonic() + 1.0  # more than 3 ttl of real time
        while time.monotonic() < until:
            assert refused()
            threading.Event().wait(0.05)
        assert not is_lost(held)

    async def main() -> None:
        async with lock.ahold("b") as aheld:
            until = time.monotonic() + 1.0
            while time.monotonic() < until:
                with pytest.raises(rs.LockHeldError):
                    async with probe.ahold("b"):
                        pass  # pragma: no cover - refused
                await asyncio.sleep(0.05)
            assert not is_lost(aheld)
        await store.aclose()

    asyncio.run(main())
    store.close()


ZOMBIE = """
import sys, resilience as rs
from resilience.stores.redis import RedisStore
from resilience.testing import RecordingListener
store = RedisStore.from_url(sys.argv[1], prefix=sys.argv[2])
rec = RecordingListener()
lock = rs.Lock("jobs", store=store, ttl=1, listeners=[rec])
with lock.hold("a") as held:
    print(held.fence, flush=True)
    sys.stdin.readline()  # paused (SIGSTOP) around here, then told to go on
    print(held.lost, flush=True)
print(",".join(e.reason for e in rec.events), flush=True)
"""


def test_zombie_process_paused_past_its_lease_is_refused_by_the_fence(
    redis_server: RedisServer, prefix: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", ZOMBIE, redis_server.url, prefix],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        try:
            zombie_fence = int(child.stdout.readline())
            child.send_signal(signal.SIGSTOP)  # a GC pause, a stopped VM
            store = RedisStore.from_url(redis_server.url, prefix=prefix, socket_timeout=2.0)
            lock = rs.Lock("jobs", store=store, ttl=30, wait=5)
            with lock.hold("a") as successor:  # once the paused holder's lease ends
                assert successor.fence == zombie_fence + 1
                child.send_signal(signal.SIGCONT)
                child.stdin.write("go\n")
                child.stdin.flush()
                assert child.stdout.readline().strip() == "True"  # it sees it lost the lock
                # one LockLost: from its heartbeat or its release, whichever reached Redis first
                reasons = child.stdout.readline().strip()
                assert reasons in ("renewal_refused", "release_refused")
                assert child.wait(timeout=10) == 0
                # the zombie's release did not free the successor's lock
                with (
                    pytest.raises(rs.LockHeldError) as info,
                    rs.Lock("jobs", store=store).hold("a"),
                ):
                    pass  # pragma: no cover - refused
                assert info.value.fence == successor.fence
                assert not successor.lost
            store.close()
        finally:
            child.send_signal(signal.SIGCONT)
            child.kill()
