"""rs.delivery.Outbox on a fake clock, each sequence on memory and on Redis (conformance)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import resilience as rs
from resilience.delivery import Delivery
from resilience.events import (
    DeliveryClaimRefused,
    DeliveryDeadLettered,
    DeliveryDelivered,
    DeliveryRescheduled,
)
from resilience.stores.memory import MemoryStore
from resilience.testing import FakeClock, RecordingListener


class Down(Exception):
    def __init__(self, message: str = "merchant down", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def failing(delivery: Delivery) -> None:
    raise Down()


def outbox_on(
    store: Any, clock: FakeClock, **kw: Any
) -> tuple[rs.delivery.Outbox, RecordingListener]:
    rec = RecordingListener()
    options: dict[str, Any] = {
        "schedule": rs.backoff.schedule([1, 5, 30]),
        "max_attempts": 4,
        "lease": 10,
        "keep": 100,
        **kw,
    }
    return rs.delivery.Outbox("hooks", store=store, clock=clock, listeners=[rec], **options), rec


def test_put_is_once_per_key_and_the_first_payload_is_delivered(
    store: Any, clock: FakeClock
) -> None:
    outbox, rec = outbox_on(store, clock)
    first = outbox.put("evt-1", {"amount": 42})
    assert (first.state, first.attempts, first.last_error) == ("pending", 0, None)
    again = outbox.put("evt-1", {"amount": 999})
    assert again == first
    seen: list[Delivery] = []
    assert outbox.run_once(seen.append) == 1
    assert [(d.key, d.payload, d.attempt, d.fence) for d in seen] == [
        ("evt-1", {"amount": 42}, 1, 1)
    ]
    status = outbox.status("evt-1")
    assert status is not None
    assert (status.state, status.attempts, status.next_attempt) == ("delivered", 1, None)
    assert outbox.put("evt-1", {"amount": 999}).state == "delivered"  # still once
    assert outbox.run_once(seen.append) == 0
    assert [e.key for e in rec.of(DeliveryDelivered)] == ["evt-1"]


def test_payload_kinds_round_trip_and_odd_keys_are_fine(store: Any, clock: FakeClock) -> None:
    outbox, _ = outbox_on(store, clock)
    payloads: dict[str, Any] = {
        "bytes \x00 {tag} \n": b"\x00\xff raw",
        "ключ/{x}:*?": "текст \udcff",
        "json": [1, "two", {"3": None}, True, 2.5],
    }
    for key, payload in payloads.items():
        outbox.put(key, payload)
    seen: dict[str, Any] = {}
    assert outbox.run_once(lambda d: seen.__setitem__(d.key, d.payload)) == 3
    assert seen == payloads
    assert outbox.status("missing") is None


def test_bad_input_is_refused(clock: FakeClock) -> None:
    bad: list[dict[str, Any]] = [
        {"max_attempts": 0},
        {"lease": 0},
        {"lease": -1},
        {"keep": 0},
        {"schedule": 3},
        {"pipeline": 1},
        {"listeners": [1]},
    ]
    for kw in bad:
        with pytest.raises(rs.ConfigurationError):
            rs.delivery.Outbox("x", clock=clock, **kw)
    with pytest.raises(rs.ConfigurationError):
        rs.delivery.Outbox("", clock=clock)
    outbox = rs.delivery.Outbox("x", clock=clock)
    with pytest.raises(TypeError):
        outbox.put("k", object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        outbox.put("k", float("nan"))
    for key in ("", "k" * 1025, 7):
        with pytest.raises(rs.ConfigurationError):
            outbox.put(key, "p")  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError):
        outbox.put("k", b"x" * (16 * 1024 * 1024 + 1))
    with pytest.raises(rs.ConfigurationError):
        outbox.run_once(print, concurrency=0)
    assert outbox.status("k") is None  # nothing was enqueued


def test_the_schedule_then_dead_letters_then_requeue(store: Any, clock: FakeClock) -> None:
    outbox, rec = outbox_on(store, clock)
    start = clock.monotonic()
    outbox.put("evt-1", "hello")
    assert outbox.run_once(failing) == 1
    status = outbox.status("evt-1")
    assert status is not None
    assert (status.state, status.attempts, status.last_error) == (
        "pending",
        1,
        "Down: merchant down",
    )
    assert status.next_attempt == pytest.approx(start + 1)
    due_at = [1.0, 6.0, 36.0]  # the schedule's steps after each failure
    for attempt, at in enumerate(due_at, start=2):
        clock.advance(at - (clock.monotonic() - start) - 0.5)
        assert outbox.run_once(failing) == 0  # not due yet
        clock.advance(0.5)
        assert outbox.run_once(failing) == 1
        status = outbox.status("evt-1")
        assert status is not None
        assert status.attempts == attempt
    assert status.state == "dead"
    assert status.next_attempt is None
    assert [e.delay for e in rec.of(DeliveryRescheduled)] == [1.0, 5.0, 30.0]
    (dead,) = rec.of(DeliveryDeadLettered)
    assert (dead.key, dead.attempts, dead.reason, dead.error_type) == (
        "evt-1",
        4,
        "exhausted",
        Down.__module__ + ".Down",
    )
    letters = list(outbox.dead())
    assert [(d.key, d.attempts, d.last_error) for d in letters] == [
        ("evt-1", 4, "Down: merchant down")
    ]
    assert letters[0].died == pytest.approx(clock.monotonic())
    clock.advance(1000)
    assert outbox.run_once(failing) == 0  # dead letters are never attempted
    assert not outbox.requeue("missing")
    assert not outbox.requeue("evt-1")
    assert outbox.status("evt-1") is None
    assert list(outbox.dead()) == []


def test_requeue_makes_a_dead_letter_pending_with_fresh_attempts(
    store: Any, clock: FakeClock
) -> None:
    outbox, _ = outbox_on(store, clock, max_attempts=1)
    outbox.put("a", "1")
    outbox.put("b", "2")
    assert outbox.run_once(failing) == 2
    assert [d.key for d in outbox.dead()] == ["a", "b"]
    assert outbox.requeue("a")
    assert not outbox.requeue("a")  # pending now: nothing to requeue
    status = outbox.status("a")
    assert status is not None
    assert (status.state, status.attempts) == ("pending", 0)
    assert [d.key for d in outbox.dead()] == ["b"]
    assert outbox.run_once(lambda d: None) == 1
    status = outbox.status("a")
    assert status is not None
    assert status.state == "delivered"


def test_retry_after_wins_capped_by_the_schedule(store: Any, clock: FakeClock) -> None:
    outbox, rec = outbox_on(store, clock)
    hints = iter([2.0, 10_000.0, 0.0])

    def busy(delivery: Delivery) -> None:
        raise Down("busy", retry_after=next(hints))

    outbox.put("evt-1", "x")
    outbox.run_once(busy)
    clock.advance(2)
    outbox.run_once(busy)
    clock.advance(30)
    outbox.run_once(busy)
    assert [e.delay for e in rec.of(DeliveryRescheduled)] == [2.0, 30.0, 0.0]
    assert outbox.run_once(busy) == 0  # due a microsecond later: not in the same pass
    clock.advance(0.001)
    assert outbox.run_once(lambda d: None) == 1


def test_a_zombie_ack_is_refused_by_its_fence(store: Any, clock: FakeClock) -> None:
    outbox, rec = outbox_on(store, clock)
    outbox.put("evt-1", "x")
    fences: list[int] = []

    def successor(delivery: Delivery) -> None:
        fences.append(delivery.fence)

    def hangs_past_its_lease(delivery: Delivery) -> None:
        fences.append(delivery.fence)
        clock.advance(10)  # the lease ends: another worker claims and delivers it
        assert outbox.run_once(successor) == 1

    assert outbox.run_once(hangs_past_its_lease) == 1
    assert fences == [1, 2]
    assert [(e.key, e.attempt) for e in rec.of(DeliveryDelivered)] == [("evt-1", 2)]
    assert [(e.key, e.fence) for e in rec.of(DeliveryClaimRefused)] == [("evt-1", 1)]
    status = outbox.status("evt-1")
    assert status is not None
    assert (status.state, status.attempts) == ("delivered", 2)


def test_a_zombie_failure_does_not_reschedule_a_delivered_one(store: Any, clock: FakeClock) -> None:
    outbox, rec = outbox_on(store, clock)
    outbox.put("evt-1", "x")

    def hangs_then_fails(delivery: Delivery) -> None:
        clock.advance(11)
        outbox.run_once(lambda d: None)
        raise Down()

    outbox.run_once(hangs_then_fails)
    status = outbox.status("evt-1")
    assert status is not None
    assert status.state == "delivered"
    assert rec.of(DeliveryRescheduled) == []
    assert len(rec.of(DeliveryClaimRefused)) == 1


def test_a_lease_that_ends_on_the_last_attempt_dead_letters(store: Any, clock: FakeClock) -> None:
    outbox, rec = outbox_on(store, clock, max_attempts=2)
    outbox.put("evt-1", "x")
    for _ in range(2):
        # a worker claims it and dies: nothing settles the claim
        assert outbox.store.apply(outbox._claim_op(None, 1))[1]
        clock.advance(10)
    assert outbox.run_once(failing) == 0
    status = outbox.status("evt-1")
    assert status is not None
    assert (status.state, status.attempts) == ("dead", 2)
    assert status.last_error == "lease expired"
    (dead,) = rec.of(DeliveryDeadLettered)
    assert (dead.reason, dead.attempts) == ("lease_expired", 2)


def test_base_exception_releases_the_claim_and_gives_the_attempt_back(
    store: Any, clock: FakeClock
) -> None:
    outbox, _ = outbox_on(store, clock)
    outbox.put("evt-1", "x")

    def interrupted(delivery: Delivery) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        outbox.run_once(interrupted)
    status = outbox.status("evt-1")
    assert status is not None
    assert (status.state, status.attempts) == ("pending", 0)
    assert outbox.run_once(lambda d: None) == 1


def test_final_deliveries_are_forgotten_after_keep(store: Any, clock: FakeClock) -> None:
    outbox, _ = outbox_on(store, clock)
    outbox.put("evt-1", "x")
    outbox.run_once(lambda d: None)
    clock.advance(99.9)
    assert outbox.put("evt-1", "y").state == "delivered"
    clock.advance(0.1)
    assert outbox.status("evt-1") is None
    assert outbox.put("evt-1", "y").state == "pending"  # a new delivery


def test_a_store_error_mid_ack_leaves_it_to_the_lease(clock: FakeClock) -> None:
    class FailsSettling(MemoryStore):
        failures = 1

        def apply(self, op: Any, /) -> Any:
            if type(op).__name__ == "SettleOp" and self.failures:
                self.failures -= 1
                raise rs.StoreError("connection reset")
            return super().apply(op)

    outbox, rec = outbox_on(FailsSettling(clock=clock), clock)
    outbox.put("evt-1", "x")
    assert outbox.run_once(lambda d: None) == 1
    status = outbox.status("evt-1")
    assert status is not None
    assert status.state == "in_flight"
    assert status.next_attempt == pytest.approx(clock.monotonic() + 10)
    clock.advance(10)
    assert outbox.run_once(lambda d: None) == 1
    assert [e.attempt for e in rec.of(DeliveryDelivered)] == [2]


def test_a_pipeline_per_destination(store: Any, clock: FakeClock) -> None:
    breakers: dict[str, rs.CircuitBreaker] = {}

    def per_host(delivery: Delivery) -> rs.Policy:
        host = delivery.payload["host"]
        if host not in breakers:
            breakers[host] = rs.CircuitBreaker(
                f"merchant:{host}", failure_count=1, open_for=60, clock=clock
            )
        return breakers[host]

    outbox, rec = outbox_on(store, clock, pipeline=per_host)
    outbox.put("a", {"host": "down.example"})
    outbox.put("b", {"host": "down.example"})
    outbox.put("c", {"host": "up.example"})
    calls: list[str] = []

    def send(delivery: Delivery) -> None:
        calls.append(delivery.key)
        if delivery.payload["host"] == "down.example":
            raise Down()

    assert outbox.run_once(send) == 3
    assert calls == ["a", "c"]  # b met the open breaker
    b = outbox.status("b")
    assert b is not None
    assert b.state == "pending"
    assert "CircuitOpenError" in (b.last_error or "")
    assert {e.key: e.error_type for e in rec.of(DeliveryRescheduled)} == {
        "a": Down.__module__ + ".Down",
        "b": "resilience.errors.CircuitOpenError",
    }


def test_async_workers_with_concurrency_and_a_stop_event(store: Any, clock: FakeClock) -> None:
    outbox, rec = outbox_on(store, clock)

    async def main() -> list[str]:
        for i in range(7):
            await outbox.aput(f"evt-{i}", {"n": i})
        seen: list[str] = []
        running = 0
        peak = 0

        async def handler(delivery: Delivery) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0)
            running -= 1
            seen.append(delivery.key)

        assert await outbox.arun_once(handler, concurrency=3) == 7
        assert peak == 3
        await outbox.aput("late", "x")
        stop = asyncio.Event()

        async def stop_when_delivered(delivery: Delivery) -> None:
            seen.append(delivery.key)
            stop.set()

        await asyncio.wait_for(outbox.arun(stop_when_delivered, stop=stop, poll=0.01), 5)
        status = await outbox.astatus("late")
        assert status is not None
        assert status.state == "delivered"
        assert [d async for d in outbox.adead()] == []
        return seen

    seen = asyncio.run(main())
    assert sorted(seen) == sorted([f"evt-{i}" for i in range(7)] + ["late"])
    assert len(rec.of(DeliveryDelivered)) == 8


def test_sync_worker_threads_deliver_each_once(store: Any, clock: FakeClock) -> None:
    import threading

    outbox, rec = outbox_on(store, clock)
    for i in range(9):
        outbox.put(f"evt-{i}", i)
    seen: list[int] = []
    lock = threading.Lock()

    def handler(delivery: Delivery) -> None:
        with lock:
            seen.append(delivery.payload)

    assert outbox.run_once(handler, concurrency=4) == 9
    assert sorted(seen) == list(range(9))
    stop = threading.Event()
    stop.set()
    outbox.run(handler, stop=stop)  # stops at once
    assert len(rec.of(DeliveryDelivered)) == 9


def test_a_cancelled_async_handler_releases_its_claim(store: Any, clock: FakeClock) -> None:
    outbox, rec = outbox_on(store, clock)

    async def main() -> None:
        await outbox.aput("evt-1", "x")
        started = asyncio.Event()

        async def hangs(delivery: Delivery) -> None:
            started.set()
            await asyncio.Event().wait()

        task = asyncio.ensure_future(outbox.arun_once(hangs))
        await started.wait()
        status = await outbox.astatus("evt-1")
        assert status is not None
        assert status.state == "in_flight"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        status = await outbox.astatus("evt-1")
        assert status is not None
        assert (status.state, status.attempts) == ("pending", 0)  # released, attempt given back

        async def ok(delivery: Delivery) -> None:
            return None

        assert await outbox.arun_once(ok) == 1

    asyncio.run(main())
    assert [e.attempt for e in rec.of(DeliveryDelivered)] == [1]


def test_racing_workers_claim_each_delivery_once(store: Any, clock: FakeClock) -> None:
    import threading

    outbox, rec = outbox_on(store, clock)
    for i in range(40):
        outbox.put(f"evt-{i}", i)
    seen: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def handler(delivery: Delivery) -> None:
        with lock:
            seen.append(delivery.key)

    def worker() -> None:
        barrier.wait()
        outbox.run_once(handler)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(seen) == sorted(f"evt-{i}" for i in range(40))  # each once
    assert len(rec.of(DeliveryDelivered)) == 40
    assert rec.of(DeliveryClaimRefused) == []
