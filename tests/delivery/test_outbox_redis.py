"""rs.delivery.Outbox drills on a real redis-server: kill -9, a paused zombie, a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import resilience as rs
from resilience.delivery import Delivery
from resilience.events import DeliveryClaimRefused, DeliveryDelivered
from resilience.stores.redis import RedisStore
from resilience.testing import FakeClock, RecordingListener

from ..redis_servers import RedisCluster, RedisServer

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]

#: a worker that claims one delivery, says which, then hangs in its handler (stdin) until
#: killed; with "ack" it acknowledges when stdin closes and reports whether it was refused
WORKER = """
import sys, resilience as rs
from resilience.stores.redis import RedisStore
store = RedisStore.from_url(sys.argv[1], prefix=sys.argv[2], socket_timeout=2.0)
seen = rs.testing.RecordingListener()
outbox = rs.delivery.Outbox("hooks", store=store, lease=float(sys.argv[3]), listeners=[seen])
def handler(delivery):
    print(delivery.key, delivery.fence, flush=True)
    sys.stdin.read()
outbox.run_once(handler)
print(",".join(e.kind for e in seen.events), flush=True)
"""


def _worker(server: RedisServer, prefix: str, lease: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, server.url, prefix, str(lease)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _stop(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        os.kill(child.pid, signal.SIGCONT)
        child.kill()
    child.wait()
    for stream in (child.stdin, child.stdout):
        if stream is not None:
            stream.close()


def test_crash_a_killed_worker_s_delivery_is_claimed_again_after_the_lease(
    redis_server: RedisServer, prefix: str
) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, socket_timeout=2.0)
    seen = RecordingListener()
    outbox = rs.delivery.Outbox("hooks", store=store, lease=1.0, listeners=[seen])
    outbox.put("evt-1", {"amount": 42})
    child = _worker(redis_server, prefix, 1.0)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().split() == ["evt-1", "1"]
        status = outbox.status("evt-1")
        assert status is not None
        assert status.state == "in_flight"
        assert outbox.run_once(lambda d: None) == 0  # its lease runs
        child.kill()  # kill -9 mid-delivery: nothing settles the claim
        child.wait()
        killed = time.monotonic()
        got: list[Delivery] = []
        stop = __import__("threading").Event()

        def handler(delivery: Delivery) -> None:
            got.append(delivery)
            stop.set()

        outbox.run(handler, stop=stop, poll=0.05)
        delay = time.monotonic() - killed
        assert [(d.key, d.attempt, d.fence, d.payload) for d in got] == [
            ("evt-1", 2, 2, {"amount": 42})
        ]
        assert delay <= 1.0 + 0.05 + 0.5  # the lease, one poll, and a loaded machine's slack
        status = outbox.status("evt-1")
        assert status is not None
        assert (status.state, status.attempts) == ("delivered", 2)
    finally:
        _stop(child)
        store.close()


def test_a_paused_zombie_s_late_ack_is_refused(redis_server: RedisServer, prefix: str) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, socket_timeout=2.0)
    seen = RecordingListener()
    outbox = rs.delivery.Outbox("hooks", store=store, lease=0.3, listeners=[seen])
    outbox.put("evt-1", "x")
    child = _worker(redis_server, prefix, 0.3)
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        assert child.stdout.readline().split() == ["evt-1", "1"]
        os.kill(child.pid, signal.SIGSTOP)  # a GC pause, a stalled VM: past its lease
        deadline = time.monotonic() + 5
        while outbox.run_once(lambda d: None) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [e.attempt for e in seen.of(DeliveryDelivered)] == [2]
        os.kill(child.pid, signal.SIGCONT)
        child.stdin.close()  # the zombie's handler returns: it tries to acknowledge
        assert child.stdout.readline().strip() == "delivery_claim_refused"
        assert child.wait(10) == 0
        status = outbox.status("evt-1")
        assert status is not None
        assert (status.state, status.attempts) == ("delivered", 2)
        assert not seen.of(DeliveryClaimRefused)
    finally:
        _stop(child)
        store.close()


def test_restart_without_persistence_loses_the_deliveries(
    own_redis_server: RedisServer, prefix: str, clock: FakeClock
) -> None:
    store = RedisStore.from_url(
        own_redis_server.url, prefix=prefix, clock=clock, socket_timeout=2.0, probe_interval=0.01
    )
    seen = RecordingListener()
    outbox = rs.delivery.Outbox("hooks", store=store, lease=10, listeners=[seen])
    outbox.put("evt-1", "x")
    outbox.put("evt-2", "y")
    claimed: list[Delivery] = []

    def reachable() -> bool:
        try:
            return outbox.status("evt-1") is None
        except rs.StoreError:
            return False

    def restarts_redis(delivery: Delivery) -> None:
        claimed.append(delivery)
        own_redis_server.restart()  # the same port, nothing on disk
        deadline = time.monotonic() + 5
        while not reachable() and time.monotonic() < deadline:
            time.sleep(0.02)  # the store reconnects: the acknowledgement reaches the new server

    assert outbox.run_once(restarts_redis) == 1  # evt-2 was lost with the data
    assert outbox.status("evt-1") is None
    assert outbox.status("evt-2") is None
    assert [e.key for e in seen.of(DeliveryClaimRefused)] == ["evt-1"]  # its ack was refused
    assert outbox.run_once(lambda d: None) == 0
    assert outbox.put("evt-1", "x").state == "pending"  # a put enqueues it again
    assert outbox.run_once(lambda d: None) == 1
    store.close()


def _calls(client: Any) -> int:
    stats = client.info("commandstats")
    return sum(
        int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval")
    )


def test_one_round_trip_per_put_claim_and_settlement(
    redis_server: RedisServer, prefix: str, clock: FakeClock
) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    store = RedisStore.from_url(redis_server.url, prefix=prefix, clock=clock, socket_timeout=2.0)
    outbox = rs.delivery.Outbox("hooks", store=store, max_attempts=2)
    outbox.put("warm", "x")  # loads the scripts
    outbox.run_once(lambda d: None)
    before = _calls(client)
    for i in range(10):
        outbox.put(f"evt-{i}", i)
    assert _calls(client) - before == 10
    before = _calls(client)
    assert outbox.run_once(lambda d: None) == 10
    # per delivery one claim and one acknowledgement, plus the pass's last (empty) claim
    assert _calls(client) - before == 21
    outbox.put("fails", "x")
    before = _calls(client)

    def failing(delivery: Delivery) -> None:
        raise OSError("refused")

    assert outbox.run_once(failing) == 1  # a claim, a reschedule (, the empty claim)
    assert _calls(client) - before == 3
    clock.advance(60)
    before = _calls(client)
    assert outbox.run_once(failing) == 1  # a claim, a dead-lettering (, the empty claim)
    assert _calls(client) - before == 3
    assert outbox.status("fails").state == "dead"  # type: ignore[union-attr]
    client.close()
    store.close()


def test_every_key_of_a_final_delivery_has_a_ttl(
    redis_server: RedisServer, prefix: str, clock: FakeClock
) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    store = RedisStore.from_url(redis_server.url, prefix=prefix, clock=clock, socket_timeout=2.0)
    outbox = rs.delivery.Outbox("hooks", store=store, max_attempts=1, keep=3600)
    outbox.put("ok", "x")
    outbox.put("bad", "y")

    def handler(delivery: Delivery) -> None:
        if delivery.key == "bad":
            raise OSError("down")

    assert outbox.run_once(handler) == 2
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    assert len(keys) == 3  # two records and the dead letters (the due set is empty: gone)
    for key in keys:
        assert 0 < client.pttl(key) <= 3_600_000, key
    assert outbox.requeue("bad")
    assert client.pttl(store.redis_key("outbox:hooks", "r:bad")) == -1  # pending: kept
    client.close()
    store.close()


def test_a_store_stall_mid_ack_leaves_the_delivery_to_its_lease(
    own_redis_server: RedisServer, prefix: str, clock: FakeClock
) -> None:
    store = RedisStore.from_url(
        own_redis_server.url, prefix=prefix, clock=clock, socket_timeout=0.2, probe_interval=0.01
    )
    seen = RecordingListener()
    outbox = rs.delivery.Outbox("hooks", store=store, lease=10, listeners=[seen])
    outbox.put("evt-1", "x")

    def stalls_redis(delivery: Delivery) -> None:
        own_redis_server.pause()  # SIGSTOP: the acknowledgement times out

    try:
        # the failed ack is logged; the pass's next claim cannot reach Redis either: raised
        with pytest.raises(rs.StoreError):
            outbox.run_once(stalls_redis)
    finally:
        own_redis_server.resume()
    assert seen.of(DeliveryDelivered) == []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            status = outbox.status("evt-1")
            break
        except rs.StoreError:
            time.sleep(0.02)
    assert status is not None
    assert (status.state, status.attempts) == ("in_flight", 1)
    clock.advance(10)  # the lease ends: delivered again (at least once)
    assert outbox.run_once(lambda d: None) == 1
    assert [e.attempt for e in seen.of(DeliveryDelivered)] == [2]
    store.close()


def test_the_outbox_on_a_redis_cluster(
    redis_cluster: RedisCluster, prefix: str, clock: FakeClock
) -> None:
    """One outbox's keys share a hash tag: its scripts run on the node of one slot."""
    store = RedisStore.from_url(
        redis_cluster.url, prefix=prefix, cluster=True, clock=clock, socket_timeout=2.0
    )
    outbox = rs.delivery.Outbox("hooks", store=store, max_attempts=1)
    for key in ("a", "b {tag}", "c"):
        outbox.put(key, key)

    def handler(delivery: Delivery) -> None:
        if delivery.key == "b {tag}":
            raise OSError("down")

    assert outbox.run_once(handler) == 3
    assert [d.key for d in outbox.dead()] == ["b {tag}"]
    assert outbox.requeue("b {tag}")
    assert outbox.run_once(lambda d: None) == 1
    states = [outbox.status(k) for k in ("a", "b {tag}", "c")]
    assert [s.state if s else None for s in states] == ["delivered"] * 3
    store.close()
