"""Idempotency records in a full store: which records are evicted, deny-new, never an in-progress
claim, constant time.
"""

from __future__ import annotations

import pytest

import resilience as rs
from resilience.events import RecordsEvicted
from resilience.idempotency import (
    IdempotencyRecords,
)
from resilience.testing import FakeClock, RecordingListener

from ..conftest import Runner
from .support import Counter, policy


def test_full_store_evicts_the_oldest_completed_record(runner: Runner, clock: FakeClock) -> None:
    """A full default store never denies service: the oldest completed record makes room."""
    rec = RecordingListener()
    p = policy(clock, max_entries=2, listeners=[rec])
    c = Counter(runner)
    runner.run(p, c.fn, "a")
    clock.advance(1)
    runner.run(p, c.fn, "b")
    assert runner.run(p, c.fn, "c") == {"run": 3}  # was StoreError (503 over HTTP) for a day
    assert [e.count for e in rec.of(RecordsEvicted)] == [1]
    assert runner.run(p, c.fn, "b") == {"run": 2}  # the newer records are kept
    assert runner.run(p, c.fn, "c") == {"run": 3}
    # the documented trade-off: a late duplicate of the evicted key runs again
    assert runner.run(p, c.fn, "a") == {"run": 4}
    assert c.n == 4


def test_full_store_deny_new_is_configurable(runner: Runner, clock: FakeClock) -> None:
    p = policy(clock, max_entries=2, on_full="deny_new")
    c = Counter(runner)
    runner.run(p, c.fn, "a")
    runner.run(p, c.fn, "b")
    with pytest.raises(rs.StoreError):
        runner.run(p, c.fn, "c")
    assert c.n == 2
    assert p.describe()["on_full"] == "deny_new"
    with pytest.raises(rs.ConfigurationError, match="on_full"):
        policy(clock, on_full="drop")


def test_full_store_never_evicts_an_in_progress_claim(clock: FakeClock) -> None:
    records = IdempotencyRecords(max_entries=2, clock=clock)
    running = records.claim(records.key("a"), "")
    assert running.status == "claimed"
    done = records.claim(records.key("b"), "")
    assert records.complete(done, "r1")
    # full: c evicts the completed b, never the running a
    other = records.claim(records.key("c"), "")
    assert other.status == "claimed"
    assert records.claim(records.key("a"), "").status == "in_progress"
    # every record is now an in-progress claim: a new key is refused, honestly
    with pytest.raises(rs.StoreError, match="in-progress"):
        records.claim(records.key("d"), "")
    assert records.complete(running, "r0")
    assert records.claim(records.key("d"), "").status == "claimed"  # a (done) made room
    assert records.complete(other, "r2")
    assert records.claim(records.key("a"), "").status == "claimed"  # gone: runs again


def test_eviction_keeps_every_operation_constant_time(clock: FakeClock) -> None:
    """10x more keys than the cap: every call succeeds, the store stays at its cap."""
    store = rs.MemoryStore(max_entries=100, on_full="evict_oldest", clock=clock)
    p = policy(clock, store=store)

    @p
    def op(k: str) -> str:
        return k

    assert [op(f"k{i}") for i in range(1000)] == [f"k{i}" for i in range(1000)]
    assert len(store) == 100
    assert store.evicted == 900
    assert op("k999") == "k999"
