"""Idempotency claims in progress: refusals with retry-after, waiting for the first call, lease
takeover and fencing, heartbeat renewal.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import resilience as rs
from resilience._policy import function_identity
from resilience.events import CallRejected
from resilience.idempotency import (
    IdempotencyRecords,
    RenewOp,
    _renewer,
    args_fingerprint,
)
from resilience.stores import StoreOp
from resilience.testing import FakeClock, RecordingListener

from ..conftest import Runner
from .support import Counter, claim_as_other, policy


def test_in_progress_duplicate_is_rejected_with_retry_after(
    runner: Runner, clock: FakeClock
) -> None:
    rec = RecordingListener()
    p = policy(clock, lease=60, listeners=[rec])
    c = Counter(runner)
    other = claim_as_other(p, c, "k", "k")
    assert other.status == "claimed"
    clock.advance(10)
    with pytest.raises(rs.IdempotencyInProgressError) as info:
        runner.run(p, c.fn, "k")
    assert info.value.retry_after == pytest.approx(50.0)
    assert c.n == 0
    assert [e.reason for e in rec.of(CallRejected)] == ["idempotency_conflict"]


def test_wait_receives_the_first_calls_result(runner: Runner, clock: FakeClock) -> None:
    p = policy(clock, wait=5)
    c = Counter(runner)
    other = claim_as_other(p, c, "k", "k")

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
    claim_as_other(p, c, "k", "k")
    with pytest.raises(rs.IdempotencyInProgressError):
        runner.run(p, c.fn, "k")
    assert clock.monotonic() == pytest.approx(2.0)
    assert c.n == 0


def test_crashed_owner_is_taken_over_after_the_lease_and_fenced(
    runner: Runner, clock: FakeClock
) -> None:
    p = policy(clock, lease=60)
    c = Counter(runner)
    zombie = claim_as_other(p, c, "k", "k")  # claimed, then "crashed" (never completes)
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


class RenewalTimes(rs.MemoryStore):
    """A memory store that notes when (real monotonic time) it applied a successful renewal."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.changed = threading.Condition()

    def apply(self, op: StoreOp[Any], /) -> Any:
        out = super().apply(op)
        if isinstance(op, RenewOp) and out:
            with self.changed:
                self.times.append(time.monotonic())
                self.changed.notify_all()
        return out

    def wait_renewal_after(self, moment: float, timeout: float = 5.0) -> bool:
        """Block until a renewal succeeded after ``moment`` (True), or ``timeout`` passed."""
        with self.changed:
            return self.changed.wait_for(lambda: any(t > moment for t in self.times), timeout)


def test_real_time_heartbeat_thread_renews_sync_claims() -> None:
    """Real clock, 0.3 s lease, a call that outlives it: the background renewer keeps the claim
    (a renewal succeeds after the first lease would have run out, and a duplicate is refused)."""
    store = RenewalTimes()
    p = rs.Idempotent(key=lambda k: k, lease=0.3, store=store)
    inside = threading.Event()
    release = threading.Event()

    @p
    def slow(k: str) -> str:
        inside.set()
        release.wait(5)  # runs until the test has checked the duplicate
        return "slow"

    with ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(slow, "k")
        assert inside.wait(2)
        assert store.wait_renewal_after(time.monotonic() + 0.3)  # past the first lease
        with pytest.raises(rs.IdempotencyInProgressError):
            slow("k")
        release.set()
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
        self.renewed = threading.Event()

    def renew(self, claim: Any) -> bool:
        self.renewals += 1
        self.renewed.set()
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
            await clock.asleep(1.0)  # one renewal interval: the renewal task is spawned
            await asyncio.wait_for(asyncio.to_thread(records.renewed.wait, 5), 5)
            for _ in range(2):
                await clock.asleep(1.0)  # two more intervals
                # no event to wait for (nothing must happen): give a wrongly re-armed renewal
                # the loop iterations it would need (call_soon_threadsafe, then its task)
                for _ in range(5):
                    await asyncio.sleep(0)
            return beat

        beat = asyncio.run(main())
    beat.stop()
    assert records.renewals == 1
    raised = [r for r in caplog.records if r.name == "resilience" and r.exc_info]
    assert [r.getMessage() for r in raised] == [
        "resilience: renewing an idempotency lease raised; that claim's lease is no longer renewed"
    ]


async def test_real_time_heartbeat_on_the_event_loop() -> None:
    """The same on the event loop's timers: a call outliving its 0.3 s lease keeps its claim."""
    store = RenewalTimes()
    p = rs.Idempotent(key=lambda k: k, lease=0.3, store=store)
    runs: list[int] = []
    inside = asyncio.Event()
    release = asyncio.Event()

    @p
    async def slow(k: str) -> str:
        runs.append(1)
        inside.set()
        await release.wait()  # runs until the test has checked the duplicate
        return "slow"

    task = asyncio.create_task(slow("k"))
    await asyncio.wait_for(inside.wait(), 5)
    past_lease = time.monotonic() + 0.3
    # waited for on a thread: the loop stays free to run the renewals
    assert await asyncio.to_thread(store.wait_renewal_after, past_lease)
    with pytest.raises(rs.IdempotencyInProgressError):
        await slow("k")
    release.set()
    assert await task == "slow"
    assert len(runs) == 1
