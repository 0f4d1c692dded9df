"""rs.Lock on the memory store, on a FakeClock: fences, refusals, waits, heartbeats, zombies."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import resilience as rs
from resilience.events import LockLost, LockRejected
from resilience.lock._lock import FIRST_POLL, MAX_POLL, Held
from resilience.lock._ops import AcquireOp, ReleaseOp, RenewOp
from resilience.stores import StoreFullError
from resilience.testing import FakeClock, RecordingListener

from ..helpers import BrokenStore


def is_lost(held: Held) -> bool:
    """``held.lost`` read through a call (it changes as time passes; no narrowing)."""
    return held.lost


def make(clock: FakeClock, **kw: Any) -> tuple[rs.Lock, RecordingListener]:
    rec = RecordingListener()
    return rs.Lock("jobs", clock=clock, listeners=[rec], **kw), rec


def test_fences_increase_per_key_across_releases(clock: FakeClock) -> None:
    lock, _ = make(clock)
    fences = []
    for _ in range(3):
        with lock.hold("a") as held:
            fences.append(held.fence)
    with lock.hold("b") as other:
        assert other.fence == 1  # keys are independent
    assert fences == [1, 2, 3]


def test_a_held_key_is_refused_with_the_holders_remaining_lease(clock: FakeClock) -> None:
    lock, rec = make(clock, ttl=30)
    with lock.hold("a") as held:
        clock.advance(5)
        with pytest.raises(rs.LockHeldError) as info, lock.hold("a"):
            pass  # pragma: no cover - refused
        assert not held.lost
    err = info.value
    assert (err.key, err.fence, err.lost, err.retry_after, err.policy) == (
        "a",
        1,
        False,
        25.0,
        "jobs",
    )
    assert rs.refused_by_policy(err) is False  # a direct hold is outside every composition
    [event] = rec.of(LockRejected)
    assert (event.reason, event.retry_after, event.policy) == ("lock_held", 25.0, "jobs")


def test_wait_polls_with_a_doubling_capped_backoff_until_a_crashed_holders_lease_ends(
    clock: FakeClock,
) -> None:
    lock, _ = make(clock, ttl=2, wait=5)
    # a holder that crashed: it acquired (fence 1) and never renews nor releases
    assert lock.store.apply(AcquireOp("lock:jobs:a", "crashed", 2.0, 86_400.0))[0]
    with lock.hold("a") as held:
        assert held.fence == 2
        assert clock.monotonic() == pytest.approx(2.0)
    doubling = [FIRST_POLL * 2**i for i in range(6)]
    assert clock.sleeps[:6] == pytest.approx(doubling)
    assert max(clock.sleeps) <= MAX_POLL
    assert MAX_POLL in clock.sleeps  # the backoff reached its cap


def test_wait_gives_up_after_its_budget_with_the_holders_remaining_lease(clock: FakeClock) -> None:
    lock, rec = make(clock, ttl=30, wait=1)
    lock.store.apply(AcquireOp("lock:jobs:a", "other", 30.0, 86_400.0))
    with pytest.raises(rs.LockHeldError) as info, lock.hold("a"):
        pass  # pragma: no cover - refused
    assert clock.monotonic() == pytest.approx(1.0)  # waited exactly its budget
    assert sum(clock.sleeps) == pytest.approx(1.0)
    assert info.value.retry_after == pytest.approx(29.0)
    assert len(rec.of(LockRejected)) == 1


def test_the_heartbeat_keeps_a_long_critical_section_exclusive(clock: FakeClock) -> None:
    lock, _ = make(clock, ttl=3)
    with lock.hold("a") as held:
        for _ in range(10):
            clock.advance(1)  # renewals fire every ttl / 3 on the fake clock
        assert not held.lost
        held.check()
        with pytest.raises(rs.LockHeldError), lock.hold("a"):
            pass  # pragma: no cover - refused
    assert not held.lost
    with lock.hold("a") as after:
        assert after.fence == 2


def test_a_zombie_whose_lease_expired_is_fenced_out(clock: FakeClock) -> None:
    lock, rec = make(clock, ttl=3)
    with lock.hold("a") as zombie:
        clock.advance(10)  # the holder was paused past its lease: the late renewal is refused
        assert zombie.lost
        with pytest.raises(rs.LockHeldError) as info:
            zombie.check()
        assert info.value.lost
        assert info.value.fence == 1
        assert info.value.retry_after is None
        with lock.hold("a") as successor:
            assert successor.fence == 2
            # the zombie's own renew and release are refused by the fence
            assert not lock.store.apply(RenewOp("lock:jobs:a", zombie._owner, 1, 3.0, 86_400.0))
            assert not lock.store.apply(ReleaseOp("lock:jobs:a", zombie._owner, 1, 9.0))
            lock._renew(zombie)
            assert lock.store.get("lock:jobs:a") == {
                "o": successor._owner,
                "g": 2,
                "lu": 13_000_000,
            }
    # the zombie's exit (after the successor's) frees nothing of anyone else
    assert [e.reason for e in rec.of(LockLost)] == ["renewal_refused"]


def test_a_lost_hold_is_seen_on_the_local_clock_before_any_renewal(clock: FakeClock) -> None:
    lock, rec = make(clock, ttl=3)
    with lock.hold("a") as held:
        held._stop()  # a stuck heartbeat: nothing renews, nothing asks the store
        clock.advance(2.999)
        assert not held.lost
        clock.advance(0.001)
        assert is_lost(held)  # no renewal succeeded within the lease, as this process measures it
        assert rec.of(LockLost) == []  # seen locally; the store was not asked


def test_release_after_the_lease_ended_reports_the_hold_lost(clock: FakeClock) -> None:
    lock, rec = make(clock, ttl=3)
    with lock.hold("a") as held:
        held._stop()  # no more renewals (a stuck heartbeat)
        clock.advance(5)
    assert held.lost
    assert [e.reason for e in rec.of(LockLost)] == ["release_refused"]
    with lock.hold("a") as after:
        assert after.fence == 2


def test_a_renewal_crossing_the_release_does_not_report_the_hold_lost(clock: FakeClock) -> None:
    lock, rec = make(clock, ttl=3)
    with lock.hold("a") as held:
        pass
    lock._renew(held)  # the heartbeat thread's renewal, in flight while the block exited
    clock.advance(10)
    assert not held.lost
    assert rec.of(LockLost) == []


def test_fences_keep_increasing_after_the_counter_expires(clock: FakeClock) -> None:
    lock, _ = make(clock, ttl=1, keep=10)
    for _ in range(3):
        with lock.hold("a") as held:
            pass
    assert held.fence == 3
    clock.advance(12)  # idle past keep: the counter is gone
    assert lock.store.get("lock:jobs:a") is None
    with lock.hold("a") as fresh:
        assert fresh.fence == 12_000_000 > held.fence  # seeded from the clock in µs


def test_the_default_store_never_evicts_a_held_key_but_makes_room_with_freed_ones(
    clock: FakeClock,
) -> None:
    lock = rs.Lock("jobs", clock=clock)
    lock.store.max_entries = 2
    with lock.hold("a") as a, lock.hold("b"):
        # every entry is a held lock: pinned
        with pytest.raises(StoreFullError), lock.hold("c"):
            pass  # pragma: no cover - refused
        assert not is_lost(a)
    clock.advance(1)
    with lock.hold("c") as c:  # a freed entry made room
        assert c.fence == 1_000_000  # a fresh counter: seeded from the clock
    with lock.hold("a") as again:
        assert again.fence > a.fence


def test_decorator_serialises_per_key_sync(clock: FakeClock) -> None:
    lock, _ = make(clock)
    seen: list[Any] = []

    @lock(key=lambda order_id, nested=None: order_id)
    def process(order_id: str, nested: str | None = None) -> str:
        if nested is not None:
            try:
                process(nested)
            except rs.LockHeldError as exc:
                seen.append(("refused", exc.key, rs.refused_by_policy(exc)))
            else:
                seen.append(("ran", nested))
        return order_id

    assert process("o1", nested="o1") == "o1"
    assert process("o1", nested="o2") == "o1"
    assert seen == [("refused", "o1", True), ("ran", "o2")]


def test_decorator_serialises_per_key_async(clock: FakeClock) -> None:
    lock, _ = make(clock)
    seen: list[Any] = []

    @lock(key=lambda order_id, nested=None: order_id)
    async def process(order_id: str, nested: str | None = None) -> str:
        if nested is not None:
            try:
                await process(nested)
            except rs.LockHeldError as exc:
                seen.append(("refused", exc.key))
            else:
                seen.append(("ran", nested))
        return order_id

    async def main() -> None:
        assert await process("o1", nested="o1") == "o1"
        assert await process("o1", nested="o2") == "o1"

    asyncio.run(main())
    assert seen == [("refused", "o1"), ("ran", "o2")]


def test_plain_decorator_and_call_serialise_every_call(clock: FakeClock) -> None:
    lock, _ = make(clock)
    fences: list[int] = []

    @lock
    def job() -> int:
        with pytest.raises(rs.LockHeldError):
            lock.call(lambda: None)
        return 7

    assert job() == 7
    with lock.hold("") as held:
        fences.append(held.fence)
    assert fences == [2]  # after job's own hold (fence 1); the nested one was refused
    assert rs.Pipeline(lock(key=lambda n: n), name="p").call(lambda n: n * 2, 4) == 8


def test_ahold_renews_with_tasks_and_releases(clock: FakeClock) -> None:
    lock, rec = make(clock, ttl=3)

    async def main() -> None:
        async with lock.ahold("a") as held:
            for _ in range(6):
                await clock.asleep(1)  # the renewal tasks run at each yield
            assert not held.lost
            with pytest.raises(rs.LockHeldError):
                async with lock.ahold("a"):
                    pass  # pragma: no cover - refused
        async with lock.ahold("a") as after:
            assert after.fence == 2

    asyncio.run(main())
    assert rec.of(LockLost) == []


def test_async_contention_is_exclusive_and_fences_follow_acquisition_order(
    clock: FakeClock,
) -> None:
    lock, _ = make(clock, ttl=3, wait=60)
    inside = 0
    order: list[int] = []

    async def worker() -> None:
        nonlocal inside
        async with lock.ahold("shared") as held:
            inside += 1
            assert inside == 1
            order.append(held.fence)
            await asyncio.sleep(0)
            await clock.asleep(0.5)
            inside -= 1

    async def main() -> None:
        await asyncio.gather(*(worker() for _ in range(8)))

    asyncio.run(main())
    assert len(order) == 8
    assert order == sorted(set(order))


def test_thread_contention_is_exclusive_and_fences_follow_acquisition_order() -> None:
    lock = rs.Lock("jobs", ttl=5, wait=30)
    counter = 0
    inside = 0
    order: list[int] = []
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def worker() -> None:
        nonlocal counter, inside
        barrier.wait()
        try:
            for _ in range(20):
                with lock.hold("shared") as held:
                    inside += 1
                    assert inside == 1
                    order.append(held.fence)
                    value = counter
                    threading.Event().wait(0.0001)  # widen the race window
                    counter = value + 1
                    inside -= 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert counter == 120
    assert order == sorted(set(order))
    assert len(order) == 120


def test_store_failures(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    broken = rs.Lock("jobs", store=BrokenStore(), clock=clock)
    with pytest.raises(rs.StoreError), broken.hold("a"):
        pass  # pragma: no cover - fails closed

    class Flaky(rs.MemoryStore):
        down = False

        def apply(self, op: Any, /) -> Any:
            if self.down:
                raise rs.StoreError("down")
            return super().apply(op)

    store = Flaky(clock=clock)
    lock = rs.Lock("jobs", store=store, ttl=3, clock=clock)
    with lock.hold("a") as held:
        store.down = True
        clock.advance(1)  # a renewal fails: logged, retried next beat
        assert not held.lost
        clock.advance(2)  # no renewal succeeded for a whole ttl
        assert is_lost(held)
    assert "could not renew lock 'jobs'" in caplog.text
    assert "could not release lock 'jobs'" in caplog.text


def test_configuration_is_validated() -> None:
    with pytest.raises(rs.ConfigurationError):
        rs.Lock("x", ttl=0)
    with pytest.raises(rs.ConfigurationError):
        rs.Lock("x", wait=-1)
    with pytest.raises(rs.ConfigurationError):
        rs.Lock("x", store=object())
    with pytest.raises(rs.ConfigurationError):
        rs.Lock("x")(key="not callable")  # type: ignore[call-overload]
    assert rs.Lock("x", ttl=10, wait=1).describe() == {
        "kind": "lock",
        "name": "x",
        "ttl": 10.0,
        "wait": 1.0,
        "keep": 86_400.0,
    }
