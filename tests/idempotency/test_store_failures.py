"""Idempotency when the store fails: fail closed, open or local, blips at completion, outcomes that
cannot be recorded, corrupt records.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import resilience as rs
from resilience.events import StoreFailed
from resilience.idempotency import (
    CompleteOp,
    IdempotencyRecords,
)
from resilience.stores import StoreOp
from resilience.testing import FakeClock, RecordingListener

from ..conftest import Runner
from ..helpers import Boom, BrokenStore
from .support import Counter, policy


def test_store_failure_fails_closed_by_default(runner: Runner, clock: FakeClock) -> None:
    rec = RecordingListener()
    c = Counter(runner)
    with pytest.raises(rs.StoreError):
        runner.run(
            policy(clock, store=BrokenStore("redis down", error=ConnectionError), listeners=[rec]),
            c.fn,
            "k",
        )
    assert c.n == 0
    assert [e.decision for e in rec.of(StoreFailed)] == ["closed"]


def test_store_failure_open_and_local(runner: Runner, clock: FakeClock) -> None:
    c = Counter(runner)
    open_ = policy(
        clock, store=BrokenStore("redis down", error=ConnectionError), on_store_error="open"
    )
    runner.run(open_, c.fn, "k")
    runner.run(open_, c.fn, "k")
    assert c.n == 2
    local = policy(
        clock, store=BrokenStore("redis down", error=ConnectionError), on_store_error="local"
    )
    runner.run(local, c.fn, "k")
    assert runner.run(local, c.fn, "k") == {"run": 3}
    assert c.n == 3


class StallingCompletions:
    """A memory store whose next ``failures`` completions fail (a store blip at that moment)."""

    def __init__(self, clock: FakeClock, failures: int) -> None:
        self.inner = rs.MemoryStore(clock=clock)
        self.failures = failures
        self.completions = 0

    def apply(self, op: StoreOp[Any]) -> Any:
        if isinstance(op, CompleteOp):
            self.completions += 1
            if self.failures > 0:
                self.failures -= 1
                raise ConnectionError("redis stalled")
        return self.inner.apply(op)


def test_a_store_blip_at_completion_never_runs_a_success_twice(
    runner: Runner, clock: FakeClock
) -> None:
    store = StallingCompletions(clock, failures=4)
    p = policy(clock, store=store, lease=60)
    c = Counter(runner)
    assert runner.run(p, c.fn, "k") == {"run": 1}
    assert store.completions == 5  # retried while the lease was ours, until it was recorded
    assert clock.monotonic() < 60
    clock.advance(61)  # past the lease: an unrecorded record would be taken over and rerun
    assert runner.run(p, c.fn, "k") == {"run": 1}
    assert c.n == 1  # was 2


def test_an_outcome_that_cannot_be_recorded_is_reported(runner: Runner, clock: FakeClock) -> None:
    rec = RecordingListener()
    store = StallingCompletions(clock, failures=10**9)
    p = policy(clock, store=store, lease=60, listeners=[rec])
    c = Counter(runner)
    with pytest.raises(rs.IdempotencyOutcomeUnrecordedError) as info:
        runner.run(p, c.fn, "k")  # was: {"run": 1}, as if it had been recorded
    assert info.value.result == {"run": 1}  # the caller still gets the call's own result
    assert info.value.policy == "idempotency"
    assert not isinstance(info.value, rs.StoreError)  # it ran: a StoreError says it did not
    assert 0 < clock.monotonic() <= 60  # retried for one lease at most, never forever
    assert [e.decision for e in rec.of(StoreFailed)] == ["unrecorded"]
    store.failures = 0
    with pytest.raises(rs.IdempotencyInProgressError):
        runner.run(p, c.fn, "k")  # still in progress until the lease expires...
    clock.advance(60)
    assert runner.run(p, c.fn, "k") == {"run": 2}  # ...then it runs again, as the error said


def test_an_unrecorded_error_outcome_says_so(runner: Runner, clock: FakeClock) -> None:
    store = StallingCompletions(clock, failures=10**9)
    p = policy(clock, store=store, store_errors=(Boom,))
    c = Counter(runner, Boom("declined"))
    with pytest.raises(Boom) as info:
        runner.run(p, c.fn, "k")
    assert any("could not be recorded" in note for note in info.value.__notes__)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_complete_and_acomplete_warn_alike(
    mode: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """One completion for both modes: an outcome over the cap, a claim taken over and an
    outcome the store keeps refusing are logged the same way by ``complete`` and ``acomplete``."""
    store = StallingCompletions(clock, failures=0)
    records = IdempotencyRecords(store=store, lease=1, max_response_bytes=4, clock=clock)

    def complete(claim: Any, payload: str) -> bool:
        if mode == "sync":
            return records.complete(claim, payload)
        return asyncio.run(records.acomplete(claim, payload))

    caplog.set_level(logging.WARNING, logger="resilience")
    assert complete(records.try_claim("big", "fp"), "r0123456789")  # stored, not retained
    lost = records.try_claim("lost", "fp")
    clock.advance(2)
    assert records.try_claim("lost", "fp").takeover
    assert not complete(lost, "r1")  # fenced out
    store.failures = 10**9
    assert not complete(records.try_claim("stalled", "fp"), "r2")
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [
        "resilience: an idempotent outcome of 11 bytes is over max_response_bytes=4 and was "
        "not retained",
        "resilience: idempotency claim lost was taken over before its outcome was stored "
        "(lease 1 s expired)",
        f"resilience: could not store an idempotent outcome ({store.completions - 2} attempts "
        "in 1 s, while the lease was held): idempotency store failed: "
        "ConnectionError('redis stalled')",
    ]


def test_corrupt_record_fails_closed(runner: Runner, clock: FakeClock) -> None:
    store = rs.MemoryStore(clock=clock)
    p = policy(clock, store=store)
    c = Counter(runner)
    runner.run(p, c.fn, "k")
    [key] = list(store._data)
    store._data[key] = ({"v": 1, "st": "d", "garbage": True}, float("inf"))
    with pytest.raises(rs.StoreError):
        runner.run(p, c.fn, "k")
    assert c.n == 1
