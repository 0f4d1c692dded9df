"""Idempotent policy and the record state machine (every behaviour sync and async)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import resilience as rs
from resilience._policy import function_identity
from resilience.events import CallRejected, IdempotentReplay, RecordsEvicted, StoreFailed
from resilience.idempotency import (
    ClaimOp,
    CompleteOp,
    IdempotencyRecords,
    ReleaseOp,
    RenewOp,
    _renewer,
    args_fingerprint,
    record_key,
)
from resilience.stores import StoreOp
from resilience.testing import FakeClock, RecordingListener

from ..conftest import Runner
from ..helpers import Boom, BrokenStore


def by_first_arg(*args: Any, **kwargs: Any) -> str:
    return str(args[0])


def policy(clock: FakeClock, **kw: Any) -> rs.Idempotent:
    kw.setdefault("key", by_first_arg)
    return rs.Idempotent(clock=clock, **kw)


class Counter:
    """A function (sync or async per runner) that counts executions and returns a dict."""

    def __init__(self, runner: Runner, outcome: Any = None) -> None:
        self.n = 0
        self.outcome = outcome

        def body() -> Any:
            self.n += 1
            if isinstance(self.outcome, BaseException):
                raise self.outcome
            return {"run": self.n} if self.outcome is None else self.outcome

        self.fn = runner.wrap(body)


# -- pure operations ---------------------------------------------------------------------------
def test_state_machine_is_pure_and_json_representable() -> None:
    claim = ClaimOp("k", "fp", "a", lease=60.0, ttl=100.0)
    state, result, ttl = claim.apply(None, 0.0)
    assert result == ("claimed", 1, 0)
    assert ttl == 160.0
    assert json.loads(json.dumps(state)) == state
    # the same input gives the same output (no hidden state)
    assert claim.apply(None, 0.0) == (state, result, ttl)
    renewed: Any
    taken: Any
    renewed, held, _ = RenewOp("k", "a", 1, lease=60.0, ttl=100.0).apply(state, 50.0)
    assert held
    assert renewed["lu"] == 110_000_000
    # takeover after the lease, with a new fence
    taken, res, _ = ClaimOp("k", "fp", "b", lease=60.0, ttl=100.0).apply(renewed, 111.0)
    assert res == ("claimed", 2, 1)
    assert taken["o"] == "b"
    # the zombie (fence 1) can neither renew, complete nor release
    assert RenewOp("k", "a", 1, lease=60.0, ttl=100.0).apply(taken, 112.0)[:2] == (taken, False)
    assert CompleteOp("k", "a", 1, payload="x", ttl=100.0).apply(taken, 112.0)[:2] == (
        taken,
        False,
    )
    assert ReleaseOp("k", "a", 1).apply(taken, 112.0)[:2] == (taken, False)
    done, ok, ttl2 = CompleteOp("k", "b", 2, payload="y", ttl=100.0).apply(taken, 113.0)
    assert ok
    assert ttl2 == 100.0
    assert json.loads(json.dumps(done)) == done
    assert ClaimOp("k", "fp", "c", lease=60.0, ttl=100.0).apply(done, 114.0)[1] == (
        "replay",
        2,
        "y",
    )
    assert ClaimOp("k", "zz", "c", lease=60.0, ttl=100.0).apply(done, 114.0)[1][0] == "reused"
    assert ClaimOp("k", "fp", "c", lease=60.0, ttl=100.0).apply({"v": 99}, 0.0)[1][0] == "corrupt"


def test_record_keys_are_fixed_length_and_unambiguous() -> None:
    a = record_key("ns", "ab", "c")
    assert a != record_key("ns", "a", "bc")
    assert len(record_key("ns", "x" * 100_000)) == len(a)


# -- the policy ----------------------------------------------------------------------------------
def test_first_call_runs_duplicates_replay(runner: Runner, clock: FakeClock) -> None:
    rec = RecordingListener()
    p = policy(clock, listeners=[rec])
    c = Counter(runner)
    assert runner.run(p, c.fn, "k1") == {"run": 1}
    assert runner.run(p, c.fn, "k1") == {"run": 1}
    assert runner.run(p, c.fn, "k2") == {"run": 2}
    assert c.n == 2
    assert len(rec.of(IdempotentReplay)) == 1


def test_same_key_different_arguments_is_refused(runner: Runner, clock: FakeClock) -> None:
    p = policy(clock)
    c = Counter(runner)
    runner.run(p, c.fn, "k", 1)
    with pytest.raises(rs.IdempotencyKeyReusedError):
        runner.run(p, c.fn, "k", 2)
    assert runner.run(p, c.fn, "k", 1) == {"run": 1}  # the original record is untouched
    assert c.n == 1


def test_record_expires_after_ttl_from_completion(runner: Runner, clock: FakeClock) -> None:
    p = policy(clock, ttl=100)
    c = Counter(runner)
    runner.run(p, c.fn, "k")
    clock.advance(99.9)
    assert runner.run(p, c.fn, "k") == {"run": 1}
    clock.advance(0.2)
    assert runner.run(p, c.fn, "k") == {"run": 2}


def test_in_progress_duplicate_is_rejected_with_retry_after(
    runner: Runner, clock: FakeClock
) -> None:
    rec = RecordingListener()
    p = policy(clock, lease=60, listeners=[rec])
    c = Counter(runner)
    other = _claim_as_other(p, c, "k", "k")
    assert other.status == "claimed"
    clock.advance(10)
    with pytest.raises(rs.IdempotencyInProgressError) as info:
        runner.run(p, c.fn, "k")
    assert info.value.retry_after == pytest.approx(50.0)
    assert c.n == 0
    assert [e.reason for e in rec.of(CallRejected)] == ["idempotency_conflict"]  # type: ignore[attr-defined]


def _claim_as_other(p: rs.Idempotent, c: Counter, key: str, *args: Any) -> Any:
    """Claim the record a call ``c.fn(*args)`` with ``key`` would use, as another owner."""
    rkey = p.records.key(function_identity(c.fn), key)
    return p.records.try_claim(rkey, args_fingerprint(args, {}))


def test_wait_receives_the_first_calls_result(runner: Runner, clock: FakeClock) -> None:
    p = policy(clock, wait=5)
    c = Counter(runner)
    other = _claim_as_other(p, c, "k", "k")

    # the other owner completes after 1 s of (fake) waiting
    def finish_other() -> None:
        p.records.complete(other, 'rs{"run":"other"}')

    clock.call_at(1.0, finish_other)
    assert runner.run(p, c.fn, "k") == {"run": "other"}
    assert c.n == 0
    assert 1.0 <= clock.monotonic() < 1.2


def test_wait_gives_up_after_wait(runner: Runner, clock: FakeClock) -> None:
    p = policy(clock, wait=2, lease=60)
    c = Counter(runner)
    _claim_as_other(p, c, "k", "k")
    with pytest.raises(rs.IdempotencyInProgressError):
        runner.run(p, c.fn, "k")
    assert clock.monotonic() == pytest.approx(2.0)
    assert c.n == 0


def test_crashed_owner_is_taken_over_after_the_lease_and_fenced(
    runner: Runner, clock: FakeClock
) -> None:
    p = policy(clock, lease=60)
    c = Counter(runner)
    zombie = _claim_as_other(p, c, "k", "k")  # claimed, then "crashed" (never completes)
    clock.advance(59)
    with pytest.raises(rs.IdempotencyInProgressError):
        runner.run(p, c.fn, "k")
    clock.advance(2)
    assert runner.run(p, c.fn, "k") == {"run": 1}  # takeover
    # the zombie wakes up and tries to store its late result: rejected by the fencing token
    assert p.records.complete(zombie, 'rs{"run":"zombie"}') is False
    assert runner.run(p, c.fn, "k") == {"run": 1}
    assert c.n == 1


def test_heartbeat_keeps_the_lease_of_a_long_call(runner: Runner, clock: FakeClock) -> None:
    p = policy(clock, lease=60)
    seen: list[str] = []
    op = ""

    def probe() -> None:
        claim = p.records.try_claim(p.records.key(op, "k"), args_fingerprint(("k",), {}))
        seen.append(claim.status)

    if runner.is_async:

        async def long_call(k: str) -> str:
            await clock.asleep(200)  # far past the 60 s lease
            probe()
            return "done"

        op = function_identity(long_call)

        assert asyncio.run(p(long_call)("k")) == "done"
    else:

        def long_call_sync(k: str) -> str:
            clock.sleep(200)
            probe()
            return "done"

        op = function_identity(long_call_sync)

        assert p(long_call_sync)("k") == "done"
    assert seen == ["in_progress"]


def test_without_heartbeat_a_long_call_loses_its_lease(clock: FakeClock) -> None:
    p = policy(clock, lease=60, heartbeat=False)
    seen: list[str] = []

    @p
    def long_call(k: str) -> str:
        clock.sleep(61)
        rkey = p.records.key(long_call_qualname, k)
        seen.append(p.records.try_claim(rkey, args_fingerprint((k,), {})).status)
        return "done"

    long_call_qualname = f"{__name__}:{long_call.__qualname__}"
    long_call("k")
    assert seen == ["claimed"]  # the lease lapsed: a duplicate took the record over


def test_exceptions_release_by_default(runner: Runner, clock: FakeClock) -> None:
    p = policy(clock)
    c = Counter(runner, Boom("no"))
    with pytest.raises(Boom):
        runner.run(p, c.fn, "k")
    c.outcome = None
    assert runner.run(p, c.fn, "k") == {"run": 2}


def test_listed_exceptions_are_stored_and_replayed(runner: Runner, clock: FakeClock) -> None:
    p = policy(clock, store_errors=(Boom,))
    c = Counter(runner, Boom("payment timed out", 7))
    with pytest.raises(Boom):
        runner.run(p, c.fn, "k")
    with pytest.raises(Boom) as info:
        runner.run(p, c.fn, "k")
    assert info.value.args == ("payment timed out", 7)
    assert any("replayed" in n for n in info.value.__notes__)
    assert c.n == 1
    # unlisted exceptions still release
    c2 = Counter(runner, KeyError("x"))
    with pytest.raises(KeyError):
        runner.run(p, c2.fn, "k2")
    with pytest.raises(KeyError):
        runner.run(p, c2.fn, "k2")
    assert c2.n == 2


def test_unencodable_result_is_returned_once_then_refused(runner: Runner, clock: FakeClock) -> None:
    p = policy(clock)
    marker = object()
    c = Counter(runner, marker)
    assert runner.run(p, c.fn, "k") is marker
    with pytest.raises(rs.IdempotencyConflictError, match="could not be stored"):
        runner.run(p, c.fn, "k")
    assert c.n == 1


def test_fingerprint_options(runner: Runner, clock: FakeClock) -> None:
    c = Counter(runner)
    with pytest.raises(rs.ConfigurationError, match="fingerprint="):
        runner.run(policy(clock), c.fn, "k", object())
    loose = policy(clock, fingerprint=None)
    assert runner.run(loose, c.fn, "k", 1) == runner.run(loose, c.fn, "k", 2)
    custom = policy(clock, fingerprint=lambda k, body: body["amount"].to_bytes(4, "big"))
    runner.run(custom, c.fn, "k", {"amount": 1, "noise": 1})
    assert runner.run(custom, c.fn, "k", {"amount": 1, "noise": 2}) == {"run": 2}
    with pytest.raises(rs.IdempotencyKeyReusedError):
        runner.run(custom, c.fn, "k", {"amount": 2})


def test_none_key_runs_unprotected_and_bad_keys_are_refused(
    runner: Runner, clock: FakeClock
) -> None:
    c = Counter(runner)
    p = rs.Idempotent(key=lambda *a: None, clock=clock)
    runner.run(p, c.fn)
    runner.run(p, c.fn)
    assert c.n == 2
    with pytest.raises(rs.ConfigurationError):
        runner.run(rs.Idempotent(key=lambda *a: "", clock=clock), c.fn)
    with pytest.raises(rs.ConfigurationError):
        runner.run(rs.Idempotent(key=lambda *a: 42, clock=clock), c.fn)  # type: ignore[arg-type]


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
    assert [e.decision for e in rec.of(StoreFailed)] == ["closed"]  # type: ignore[attr-defined]


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
    assert [e.decision for e in rec.of(StoreFailed)] == ["unrecorded"]  # type: ignore[attr-defined]
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


def test_full_store_evicts_the_oldest_completed_record(runner: Runner, clock: FakeClock) -> None:
    """A full default store never denies service: the oldest completed record makes room."""
    rec = RecordingListener()
    p = policy(clock, max_entries=2, listeners=[rec])
    c = Counter(runner)
    runner.run(p, c.fn, "a")
    clock.advance(1)
    runner.run(p, c.fn, "b")
    assert runner.run(p, c.fn, "c") == {"run": 3}  # was StoreError (503 over HTTP) for a day
    assert [e.count for e in rec.of(RecordsEvicted)] == [1]  # type: ignore[attr-defined]
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


def test_records_are_namespaced_by_function(clock: FakeClock) -> None:
    p = policy(clock)

    @p
    def one(k: str) -> str:
        return "one"

    @p
    def two(k: str) -> str:
        return "two"

    assert (one("k"), two("k"), one("k")) == ("one", "two", "one")


def _function_in(module: str, source: str, name: str) -> Any:
    """A function defined in a module called ``module`` (as ``import module`` would)."""
    namespace: dict[str, Any] = {"__name__": module}
    exec(source, namespace)
    return namespace[name]


_CREATE = """
runs = []
def create(k):
    runs.append(k)
    return __name__
async def acreate(k):
    return create(k)
"""


def test_same_qualname_in_two_modules_never_shares_records(
    runner: Runner, clock: FakeClock
) -> None:
    """billing.create and refunds.create on one store: each runs, each returns its own."""
    store = rs.MemoryStore(clock=clock)
    p = policy(clock, store=store)
    name = "acreate" if runner.is_async else "create"
    billing = _function_in("billing", _CREATE, name)
    refunds = _function_in("refunds", _CREATE, name)
    assert billing.__qualname__ == refunds.__qualname__ == name
    assert runner.run(p, billing, "k") == "billing"
    assert runner.run(p, refunds, "k") == "refunds"  # was "billing", without running
    assert runner.run(p, billing, "k") == "billing"
    assert len(store) == 2


def test_explicit_namespace_shares_records(runner: Runner, clock: FakeClock) -> None:
    p = policy(clock, namespace="orders.create")
    first, second = Counter(runner), Counter(runner, {"run": "second"})
    assert runner.run(p, first.fn, "k") == {"run": 1}
    assert runner.run(p, second.fn, "k") == {"run": 1}  # a replay of the first one's record
    assert (first.n, second.n) == (1, 0)
    assert p.describe()["namespace"] == "orders.create"
    with pytest.raises(rs.ConfigurationError, match="namespace"):
        policy(clock, namespace="")


def test_namespace_is_stable_across_processes_and_pipelines(clock: FakeClock) -> None:
    store = rs.MemoryStore(clock=clock)
    main = _function_in("__main__", _CREATE, "create")
    child = _function_in("__mp_main__", _CREATE, "create")  # a spawned multiprocessing child
    assert function_identity(main) == function_identity(child) == "__main__:create"
    rs.Idempotent(key=by_first_arg, store=store, clock=clock)(main)("k")
    # inside a pipeline the record key is the same as for the bare policy
    wrapped = rs.Pipeline(rs.Retry(on=OSError), rs.Idempotent(key=by_first_arg, store=store))
    assert wrapped(child)("k") == "__main__"
    assert child.__globals__["runs"] == []  # replayed: the same record in both "processes"
    assert list(store._data) == [record_key("idem:idempotency", "__main__:create", "k")]


def test_namespace_of_the_old_layout_reads_old_records(clock: FakeClock) -> None:
    """Records written before the module was part of the namespace stay readable."""
    store = rs.MemoryStore(clock=clock)
    old = IdempotencyRecords(store=store, namespace="idem:idempotency", clock=clock)
    claim = old.claim(old.key("create", "k"), args_fingerprint(("k",), {}))  # the old layout
    assert old.complete(claim, "r" + "s" + json.dumps("old result"))
    create = _function_in("billing", _CREATE, "create")
    p = rs.Idempotent(key=by_first_arg, store=store, namespace="create", clock=clock)
    assert p(create)("k") == "old result"
    assert create.__globals__["runs"] == []


def test_message_consumer_redeliveries_do_not_repeat_side_effects(
    runner: Runner, clock: FakeClock
) -> None:
    """The consumer pattern: key = message id, fingerprint = message body."""
    sent: list[str] = []
    consume = rs.Idempotent(
        key=lambda msg: msg["id"],
        fingerprint=lambda msg: msg["body"].encode(),
        ttl=7 * 86400,
        clock=clock,
    )

    def side_effect(msg: dict[str, str]) -> str:
        sent.append(msg["body"])
        return "acked"

    handler = runner.wrap(lambda: None)  # unused, keeps the sync/async symmetry
    del handler
    if runner.is_async:

        async def ahandle(msg: dict[str, str]) -> str:
            return side_effect(msg)

        wrapped: Any = consume(ahandle)
    else:
        wrapped = consume(side_effect)
    stream = [
        {"id": "m1", "body": "email alice"},
        {"id": "m2", "body": "email bob"},
        {"id": "m1", "body": "email alice"},  # redelivered (consumer crashed before acking)
        {"id": "m2", "body": "email bob"},
        {"id": "m1", "body": "email alice"},
    ]
    acks = [asyncio.run(wrapped(m)) if runner.is_async else wrapped(m) for m in stream]
    assert acks == ["acked"] * 5
    assert sent == ["email alice", "email bob"]


def test_configuration_errors(clock: FakeClock) -> None:
    with pytest.raises(rs.ConfigurationError, match="key"):
        rs.Idempotent(key="order_id")  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError, match="lease"):
        rs.Idempotent(key=by_first_arg, lease=0)
    with pytest.raises(rs.ConfigurationError, match="store_errors"):
        rs.Idempotent(key=by_first_arg, store_errors=("x",))  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError, match="on_store_error"):
        rs.Idempotent(key=by_first_arg, on_store_error="maybe")  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError, match="store"):
        rs.Idempotent(key=by_first_arg, store=object())
    with pytest.raises(rs.ConfigurationError, match="codec"):
        rs.Idempotent(key=by_first_arg, codec=object())  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError, match="fingerprint"):
        rs.Idempotent(key=by_first_arg, fingerprint="body")  # type: ignore[arg-type]
    assert rs.Idempotent(key=by_first_arg).describe()["store_errors"] == "never"


def test_custom_codec_with_bytes(runner: Runner, clock: FakeClock) -> None:
    class TupleCodec:
        def encode(self, value: Any) -> bytes:
            return repr(value).encode()

        def decode(self, data: str | bytes) -> Any:
            assert isinstance(data, bytes)
            return tuple(int(x) for x in data.decode().strip("()").split(",") if x.strip())

    p = policy(clock, codec=TupleCodec())
    c = Counter(runner, (1, 2))
    runner.run(p, c.fn, "k")
    assert runner.run(p, c.fn, "k") == (1, 2)


# -- concurrency (real threads and tasks, real clock, short) -----------------------------------
def test_100_concurrent_threads_execute_once() -> None:
    release = threading.Event()
    started = threading.Event()
    runs: list[int] = []

    @rs.Idempotent(key=lambda k: k, wait=10)
    def work(k: str) -> dict[str, int]:
        runs.append(1)
        started.set()
        release.wait(5)
        return {"value": 42}

    with ThreadPoolExecutor(max_workers=100) as pool:
        futures = [pool.submit(work, "same") for _ in range(100)]
        started.wait(5)
        release.set()
        results = [f.result(timeout=10) for f in futures]
    assert len(runs) == 1
    assert results == [{"value": 42}] * 100


def test_100_concurrent_threads_conflict_without_wait() -> None:
    release = threading.Event()
    runs: list[int] = []
    barrier = threading.Barrier(100)

    @rs.Idempotent(key=lambda k: k)
    def work(k: str) -> str:
        runs.append(1)
        release.wait(5)
        return "ok"

    def call() -> str:
        barrier.wait(5)
        try:
            return work("same")
        except rs.IdempotencyInProgressError:
            return "conflict"

    with ThreadPoolExecutor(max_workers=100) as pool:
        futures = [pool.submit(call) for _ in range(100)]
        # every caller but the owner gets its answer while the owner is blocked
        while sum(f.done() for f in futures) < 99:
            threading.Event().wait(0.01)
        release.set()
        outcomes = [f.result(timeout=10) for f in futures]
    assert len(runs) == 1
    assert sorted(outcomes).count("conflict") == 99
    assert "ok" in outcomes


async def test_100_concurrent_tasks_execute_once() -> None:
    release = asyncio.Event()
    runs: list[int] = []
    keyed = 0
    all_keyed = asyncio.Event()

    def key(k: str) -> str:
        # the memory store claims without suspending: once the 100th call has its key, every
        # call has claimed or is waiting on the first one's claim
        nonlocal keyed
        keyed += 1
        if keyed == 100:
            all_keyed.set()
        return k

    @rs.Idempotent(key=key, wait=10)
    async def work(k: str) -> list[int]:
        runs.append(1)
        await release.wait()
        return [1, 2, 3]

    tasks = [asyncio.create_task(work("same")) for _ in range(100)]
    await asyncio.wait_for(all_keyed.wait(), 5)
    release.set()
    results = await asyncio.gather(*tasks)
    assert len(runs) == 1
    assert results == [[1, 2, 3]] * 100

    conflicts = 0
    release2 = asyncio.Event()
    all_refused = asyncio.Event()

    @rs.Idempotent(key=lambda k: k)
    async def work2(k: str) -> str:
        runs.append(2)
        await release2.wait()
        return "ok"

    async def call() -> str:
        nonlocal conflicts
        try:
            return await work2("other")
        except rs.IdempotencyInProgressError:
            conflicts += 1
            if conflicts == 99:
                all_refused.set()
            return "conflict"

    tasks2 = [asyncio.create_task(call()) for _ in range(100)]
    await asyncio.wait_for(all_refused.wait(), 5)  # every duplicate refused while the first runs
    release2.set()
    out = await asyncio.gather(*tasks2)
    assert runs.count(2) == 1
    assert conflicts == 99
    assert out.count("ok") == 1


def test_real_time_heartbeat_thread_renews_sync_claims() -> None:
    """Real clock, 0.3 s lease, a 0.6 s call: the background renewer keeps the claim."""
    p = rs.Idempotent(key=lambda k: k, lease=0.3)
    inside = threading.Event()
    done = threading.Event()

    @p
    def slow(k: str) -> str:
        inside.set()
        done.wait(0.6)
        return "slow"

    with ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(slow, "k")
        inside.wait(2)
        threading.Event().wait(0.45)  # past the first lease
        with pytest.raises(rs.IdempotencyInProgressError):
            slow("k")
        assert fut.result(timeout=5) == "slow"
    assert slow("k") == "slow"


class RenewalsSeen(rs.MemoryStore):
    """A memory store that signals every lease renewal it applies."""

    def __init__(self) -> None:
        super().__init__()
        self.renewed = threading.Event()

    def apply(self, op: StoreOp[Any], /) -> Any:
        out = super().apply(op)
        if isinstance(op, RenewOp) and out:
            self.renewed.set()
        return out


def test_one_bad_entry_cannot_disarm_the_shared_renewer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries that bypass construction validation (a lease the thread cannot wait for, a
    renewal that raises) must not kill the renewer every other policy relies on."""
    renewer = _renewer._Renewer()
    monkeypatch.setattr(_renewer, "_RENEWER", renewer)
    bad = IdempotencyRecords(lease=60)
    held = bad.claim(bad.key("bad"), "")
    entries = [
        _renewer._Beat(bad, held, 1e300 / 3),  # Idempotent(lease=1e300): OverflowError
        _renewer._Beat(bad, held, float("inf")),
        _renewer._Beat(bad, held, float("nan")),
        _renewer._Beat(bad, None, 0.01),  # type: ignore[arg-type]  # its renewal raises
    ]
    for entry in entries:
        renewer.add(entry)
    store = RenewalsSeen()
    p = rs.Idempotent(key=lambda k: k, lease=0.3, store=store)

    @p
    def slow(k: str) -> bool:
        return store.renewed.wait(5)  # returns once the shared thread renewed this claim

    try:
        assert slow("k") is True  # was False: the thread had died of the first entry
        assert renewer._thread is not None
        assert renewer._thread.is_alive()
        store.renewed.clear()
        assert slow("k2") is True  # and it keeps renewing
    finally:
        for entry in entries:
            entry.stop()


class BrokenRenewals(IdempotencyRecords):
    """Records whose renewals raise something other than a store failure (a bug)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(lease=3, clock=clock)
        self.renewals = 0

    def renew(self, claim: Any) -> bool:
        self.renewals += 1
        raise RuntimeError("renewal bug")

    async def arenew(self, claim: Any) -> bool:
        return self.renew(claim)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_renewal_that_raises_is_logged_and_stops_that_heartbeat_in_both_modes(
    mode: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """As on the renewer thread: logged by resilience, that claim's renewals stop, and the
    caller is not disturbed (was: out of the fake clock's advance() for sync claims, an
    unretrieved task exception for async ones)."""
    records = BrokenRenewals(clock)
    claim = records.try_claim("k", "fp")
    if mode == "sync":
        beat = records.start_heartbeat(claim)
        clock.advance(3.5)  # past three renewal intervals
    else:

        async def main() -> Any:
            beat = records.astart_heartbeat(claim)
            for _ in range(3):
                await clock.asleep(1.0)  # one renewal interval
                for _ in range(5):
                    await asyncio.sleep(0)  # let the renewal task run
            return beat

        beat = asyncio.run(main())
    beat.stop()
    assert records.renewals == 1
    raised = [r for r in caplog.records if r.name == "resilience" and r.exc_info]
    assert [r.getMessage() for r in raised] == [
        "resilience: renewing an idempotency lease raised; that claim's lease is no longer renewed"
    ]


async def test_real_time_heartbeat_on_the_event_loop() -> None:
    p = rs.Idempotent(key=lambda k: k, lease=0.3)
    runs: list[int] = []

    @p
    async def slow(k: str) -> str:
        runs.append(1)
        await asyncio.sleep(0.6)  # real time on purpose: a call longer than its 0.3 s lease
        return "slow"

    task = asyncio.create_task(slow("k"))
    await asyncio.sleep(0.45)  # real time past the first lease (the renewer must have run)
    with pytest.raises(rs.IdempotencyInProgressError):
        await slow("k")
    assert await task == "slow"
    assert len(runs) == 1


# -- the RPC flow (used by the gRPC server interceptor) ---------------------------------------
def test_records_run_for_rpc(clock: FakeClock) -> None:
    records = IdempotencyRecords(clock=clock)
    calls: list[int] = []

    def handler() -> bytes:
        calls.append(1)
        return b"\x00resp"

    args: dict[str, Any] = {"method": "/svc.A/B", "key": "k", "fingerprint": b"req"}
    assert records.run(principal="alice", handler=handler, **args) == (b"\x00resp", False)
    assert records.run(principal="alice", handler=handler, **args) == (b"\x00resp", True)
    assert records.run(principal="bob", handler=handler, **args) == (b"\x00resp", False)
    assert len(calls) == 2
    with pytest.raises(rs.IdempotencyKeyReusedError):
        records.run(principal="alice", handler=handler, **{**args, "fingerprint": b"other"})

    def failing() -> bytes:
        raise Boom

    with pytest.raises(Boom):
        records.run(principal="carol", handler=failing, **args)
    assert records.run(principal="carol", handler=handler, **args) == (b"\x00resp", False)


async def test_records_arun_for_rpc(clock: FakeClock) -> None:
    records = IdempotencyRecords(clock=clock)
    calls: list[int] = []

    async def handler() -> bytes:
        calls.append(1)
        return b"resp"

    args: dict[str, Any] = {"principal": "a", "method": "/m", "key": "k", "fingerprint": b""}
    assert await records.arun(handler=handler, **args) == (b"resp", False)
    assert await records.arun(handler=handler, **args) == (b"resp", True)
    assert len(calls) == 1


# -- conflicts are the composition's own refusals (issue 11 item 1) ----------------------------
def _conflict_pipeline(clock: FakeClock) -> tuple[rs.Pipeline, rs.RateLimiter, rs.CircuitBreaker]:
    outer_limit = rs.RateLimiter("outer", rate=50, per=60, clock=clock)
    breaker = rs.CircuitBreaker("dep", failure_count=1, clock=clock)
    idem = rs.Idempotent(key=lambda order, amount: order, clock=clock)
    return rs.Pipeline(outer_limit, breaker, idem), outer_limit, breaker


def _duplicates() -> list[tuple[str, int, type[BaseException]]]:
    return (
        [("o1", 1, rs.IdempotencyInProgressError)] * 20  # while the first call runs
        + [("o2", 2, rs.IdempotencyKeyReusedError)] * 5  # other arguments, same key
        + [("o3", 1, rs.IdempotencyConflictError)] * 5  # the first outcome was not retained
    )


def _check_refusals_spent_nothing(
    refusals: list[BaseException], outer_limit: rs.RateLimiter, breaker: rs.CircuitBreaker
) -> None:
    expected = [t for _, _, t in _duplicates()]
    assert [type(e) for e in refusals] == expected  # never CircuitOpenError
    assert breaker.state is rs.CircuitState.CLOSED
    m = breaker.metrics
    assert (m.calls, m.failures) == (3, 0)  # only the three first calls count
    assert outer_limit.try_acquire(cost=0).remaining == 47  # the refused calls were refunded


def test_idempotency_conflicts_leave_the_breaker_closed_and_are_refunded(clock: FakeClock) -> None:
    pipeline, outer_limit, breaker = _conflict_pipeline(clock)
    started, release = threading.Event(), threading.Event()

    def charge(order: str, amount: int) -> Any:
        if order == "o1":
            started.set()
            assert release.wait(10)
        return {amount} if order == "o3" else {"amount": amount}  # a set: not retained

    first = threading.Thread(target=pipeline.call, args=(charge, "o1", 1))
    first.start()
    assert started.wait(10)
    assert pipeline.call(charge, "o2", 1) == {"amount": 1}
    assert pipeline.call(charge, "o3", 1) == {1}
    refusals: list[BaseException] = []
    for order, amount, _ in _duplicates():
        try:
            pipeline.call(charge, order, amount)
        except rs.RejectedError as exc:
            refusals.append(exc)
    release.set()
    first.join(10)
    _check_refusals_spent_nothing(refusals, outer_limit, breaker)


async def test_idempotency_conflicts_leave_the_breaker_closed_and_are_refunded_async(
    clock: FakeClock,
) -> None:
    pipeline, outer_limit, breaker = _conflict_pipeline(clock)
    started, release = asyncio.Event(), asyncio.Event()

    async def charge(order: str, amount: int) -> Any:
        if order == "o1":
            started.set()
            await release.wait()
        return {amount} if order == "o3" else {"amount": amount}

    first = asyncio.create_task(pipeline.acall(charge, "o1", 1))
    await started.wait()
    assert await pipeline.acall(charge, "o2", 1) == {"amount": 1}
    assert await pipeline.acall(charge, "o3", 1) == {1}
    refusals: list[BaseException] = []
    for order, amount, _ in _duplicates():
        try:
            await pipeline.acall(charge, order, amount)
        except rs.RejectedError as exc:
            refusals.append(exc)
    release.set()
    await first
    _check_refusals_spent_nothing(refusals, outer_limit, breaker)
