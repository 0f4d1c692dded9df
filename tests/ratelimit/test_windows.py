"""RateLimiter with several windows (``limits=``) and per-key tiers: one decision, every window."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest

import resilience as rs
from resilience.events import CallRejected, StoreFailed
from resilience.stores import MemoryStore
from resilience.testing import FakeClock, RecordingListener

from ..conftest import Runner
from ..helpers import BrokenStore, ManualClock

SECOND = rs.Limit(rate=2, per=1)
MINUTE = rs.Limit(rate=3, per=60)


def two(clock: FakeClock, **kw: Any) -> rs.RateLimiter:
    return rs.RateLimiter(kw.pop("name", "api"), limits=[SECOND, MINUTE], clock=clock, **kw)


# -- rs.Limit ---------------------------------------------------------------------------------
def test_limit_is_a_validated_frozen_dataclass() -> None:
    w = rs.Limit(rate=10, per=timedelta(minutes=1), burst=4, warmup=5, name="minute")
    assert (w.rate, w.per, w.burst, w.warmup, w.name) == (10.0, 60.0, 4.0, 5.0, "minute")
    assert w.params.burst == 4.0
    assert w == rs.Limit(rate=10, per=60, burst=4, warmup=5, name="minute")
    assert hash(w) == hash(rs.Limit(rate=10, per=60, burst=4, warmup=5, name="minute"))
    with pytest.raises(AttributeError):
        w.rate = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"rate": -1}, "rate"),
        ({"rate": 1, "per": 0}, "per"),
        ({"rate": 5, "burst": 0.5}, "burst"),
        ({"rate": 1, "cold_factor": 1}, "cold_factor"),
        ({"rate": 1, "warmup": -1}, "warmup"),
        ({"rate": 1, "name": 3}, "name"),
        ({"rate": 1e9}, "emission interval"),
    ],
)
def test_limit_rejects_bad_options(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(rs.ConfigurationError, match=match):
        rs.Limit(**kw)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"rate": 1, "limits": [SECOND]}, "not both"),
        ({}, "give rate="),
        ({"limits": [SECOND], "per": 60}, "options of each rs.Limit"),
        ({"limits": [SECOND], "burst": 3}, "options of each rs.Limit"),
        ({"limits": []}, "non-empty sequence"),
        ({"limits": [SECOND, 3]}, "non-empty sequence"),
        ({"limits": "2/s"}, "non-empty sequence"),
    ],
)
def test_limiter_configuration_errors(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(rs.ConfigurationError, match=match):
        rs.RateLimiter("bad", **kw)


# -- one decision over every window -----------------------------------------------------------
def test_admitted_only_if_every_window_admits(clock: FakeClock) -> None:
    rl = two(clock)
    assert [rl.try_acquire().allowed for _ in range(3)] == [True, True, False]
    clock.advance(1)
    d = rl.try_acquire()
    assert d.allowed
    assert [(w.name, w.remaining) for w in d.windows] == [("1s", 1), ("60s", 0)]
    refused = rl.try_acquire()  # the second window still has one, the minute window none
    assert not refused.allowed
    assert (
        refused.retry_after == 19.0
    )  # the minute window's: 60 s of backlog at t=1, 40 s tolerated
    assert [w.retry_after for w in refused.windows] == [0.0, 19.0]
    assert (refused.remaining, refused.limit) == (0, 3)  # the tightest window's


def test_a_refused_call_charges_no_window(clock: FakeClock) -> None:
    rl = two(clock)
    rl.try_acquire()
    rl.try_acquire()
    for _ in range(5):  # the second window refuses: the minute window is not charged
        assert not rl.try_acquire().allowed
    clock.advance(1)
    assert [w.remaining for w in rl.try_acquire().windows] == [1, 0]


def test_retry_after_is_the_latest_of_the_refusing_windows(clock: FakeClock) -> None:
    rl = rs.RateLimiter("api", limits=[rs.Limit(1, per=1), rs.Limit(1, per=10)], clock=clock)
    rl.try_acquire()
    d = rl.try_acquire()
    assert [w.retry_after for w in d.windows] == [1.0, 10.0]
    assert d.retry_after == 10.0
    clock.advance(10)
    assert rl.try_acquire().allowed


def test_decorator_sync_and_async(runner: Runner, clock: FakeClock) -> None:
    rec = RecordingListener()
    rl = two(clock, listeners=[rec])
    fn = runner.scripted(["ok"])
    assert [runner.run(rl, fn) for _ in range(2)] == ["ok", "ok"]
    with pytest.raises(rs.RateLimitedError) as info:
        runner.run(rl, fn)
    assert info.value.retry_after == 0.5
    assert len(runner.calls) == 2
    assert [e.retry_after for e in rec.of(CallRejected)] == [0.5]


def test_the_decorator_decides_every_window(runner: Runner, clock: FakeClock) -> None:
    rl = rs.RateLimiter("api", limits=[rs.Limit(100), rs.Limit(2, per=60)], clock=clock)
    fn = runner.scripted(["ok"])
    assert [runner.run(rl, fn) for _ in range(2)] == ["ok", "ok"]
    with pytest.raises(rs.RateLimitedError) as info:  # the second window refuses
        runner.run(rl, fn)
    assert info.value.retry_after == 30.0
    assert runner.run_decorated(rs.RateLimiter("x", limits=[rs.Limit(1)], clock=clock), fn) == "ok"


def test_a_refusal_inside_refunds_every_window(runner: Runner, clock: FakeClock) -> None:
    rl = two(clock)
    inner = rs.RateLimiter("inner", rate=0, clock=clock)
    pipeline = rs.Pipeline(rl, inner)
    fn = runner.scripted(["ok"])
    for _ in range(4):
        with pytest.raises(rs.RateLimitedError):
            runner.run(pipeline, fn)
    assert [w.remaining for w in rl.try_acquire().windows] == [1, 2]  # nothing was spent


def test_refund_gives_every_window_back(clock: FakeClock) -> None:
    rl = two(clock)
    d = rl.try_acquire(key="k", cost=2)
    assert [w.remaining for w in d.windows] == [0, 1]
    assert rl.refund(d) is True
    assert rl.refund(d) is False
    assert [w.remaining for w in rl.try_acquire(key="k").windows] == [1, 2]


def test_cost_must_fit_every_window(clock: FakeClock) -> None:
    rl = two(clock)
    with pytest.raises(rs.ConfigurationError, match="exceeds burst 2"):
        rl.try_acquire(cost=3)
    assert rl.try_acquire(cost=0).permit is None


def test_pacing_waits_for_the_slowest_window() -> None:
    clock = ManualClock()
    rl = rs.RateLimiter(
        "pace",
        limits=[rs.Limit(rate=10, burst=1), rs.Limit(rate=4, burst=1)],
        max_wait=1.0,
        clock=clock,
    )
    waits = [rl.acquire().waited for _ in range(3)]
    assert waits == [0.0, 0.25, 0.25]


def test_a_cancelled_waiter_gives_every_window_back() -> None:
    clock = ManualClock()
    rl = rs.RateLimiter(
        "pace",
        limits=[rs.Limit(rate=10, burst=1), rs.Limit(rate=4, burst=1)],
        max_wait=1.0,
        clock=clock,
    )

    async def main() -> None:
        rl.try_acquire()
        task = asyncio.create_task(rl.aacquire())
        await asyncio.sleep(0)  # reserved: waits 0.25 s
        assert len(clock.sleeps) == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    d = rl.try_acquire()
    assert [w.retry_after for w in d.windows] == [0.1, 0.25]  # not 0.2, 0.5: the slot came back


def test_every_window_is_charged_under_one_lock() -> None:
    clock = FakeClock()
    rl = rs.RateLimiter("race", limits=[rs.Limit(50), rs.Limit(30, per=60)], clock=clock)
    barrier = threading.Barrier(4)
    admitted: list[int] = []

    def worker() -> None:
        barrier.wait()
        admitted.append(sum(rl.try_acquire(key="k").allowed for _ in range(40)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 30  # the minute window's quota exactly, never more
    assert [w.remaining for w in rl.try_acquire(key="k").windows] == [20, 0]


def test_warm_up_per_window(clock: FakeClock) -> None:
    rl = rs.RateLimiter(
        "warm", limits=[rs.Limit(100, warmup=2, burst=1), rs.Limit(1000, per=60)], clock=clock
    )
    admitted = 0
    for _ in range(100):
        admitted += rl.try_acquire().allowed
        clock.advance(0.01)
    assert 30 <= admitted < 60  # cold: about rate / cold_factor in the first second


def test_describe_lists_the_windows(clock: FakeClock) -> None:
    facts = two(clock).describe()
    assert [w["per"] for w in facts["limits"]] == [1.0, 60.0]
    assert facts["kind"] == "rate_limiter"


def test_single_window_limiter_decision_has_no_windows(clock: FakeClock) -> None:
    d = rs.RateLimiter("one", rate=2, clock=clock).try_acquire()
    assert d.windows == ()
    assert rs.RateLimiter("one", limits=SECOND, clock=clock).try_acquire().windows[0].name == "1s"


# -- stores -----------------------------------------------------------------------------------
def test_store_path_matches_local_path(clock: FakeClock) -> None:
    local, shared = two(clock), two(clock, store=MemoryStore(clock=clock))
    for step in [0, 0, 0, 0.5, 0, 1, 0, 0, 30]:
        clock.advance(step)
        a, b = local.try_acquire(key="k"), shared.try_acquire(key="k")
        assert a[:6] == b[:6]
        assert a.windows == b.windows
    assert b.allowed
    assert shared.refund(b) is True
    assert local.refund(a) is True
    assert local.try_acquire(key="k")[:6] == shared.try_acquire(key="k")[:6]


@pytest.mark.parametrize(("mode", "allowed"), [("open", True), ("closed", False), ("local", True)])
def test_store_failure_modes(clock: FakeClock, mode: str, allowed: bool) -> None:
    rec = RecordingListener()
    share = {"instances": 2} if mode == "local" else {}
    rl = two(clock, store=BrokenStore(), on_store_error=mode, listeners=[rec], **share)
    d = rl.try_acquire(key="k")
    assert d.allowed is allowed
    assert [e.decision for e in rec.of(StoreFailed)] == [mode]
    if mode == "local":  # half of each window: one per second, one (of 1.5) per minute
        assert [w.limit for w in d.windows] == [1, 1]
        assert not rl.try_acquire(key="k").allowed
        assert rl.refund(d) is True  # back to the local share it came from
        assert rl.try_acquire(key="k").allowed


def test_memory_bounded_new_keys_denied_while_every_bucket_is_active(clock: FakeClock) -> None:
    rl = two(clock, max_keys=2, on_full="deny")
    assert rl.try_acquire(key="a").allowed
    assert rl.try_acquire(key="b").allowed
    d = rl.try_acquire(key="c")
    assert not d.allowed
    assert d.retry_after == 20.0  # until the first bucket is full again
    clock.advance(20)
    assert rl.try_acquire(key="c").allowed


# -- per-key tiers ----------------------------------------------------------------------------
FREE = rs.Limit(rate=2, per=60)
PRO = [rs.Limit(rate=10, per=60), rs.Limit(rate=100, per=86_400)]


def test_tiers_give_each_key_its_own_quota(clock: FakeClock) -> None:
    calls: list[str] = []

    def tier(key: str) -> rs.Limit | list[rs.Limit]:
        calls.append(key)
        return PRO if key.startswith("pro:") else FREE

    rl = rs.RateLimiter("plans", limits=tier, clock=clock)
    assert sum(rl.try_acquire(key="free:alice").allowed for _ in range(20)) == 2
    assert sum(rl.try_acquire(key="pro:bob").allowed for _ in range(20)) == 10
    assert calls == ["free:alice", "pro:bob"]  # cached per key
    assert [w.limit for w in rl.try_acquire(key="pro:bob").windows] == [10, 100]
    assert rl.try_acquire().windows[0].limit == 2  # the global bucket is looked up as ""
    assert calls[-1] == ""


def test_rate_may_be_the_tier_callable(clock: FakeClock) -> None:
    rl = rs.RateLimiter("plans", rate=lambda key: FREE, clock=clock)
    assert [rl.try_acquire(key="k").allowed for _ in range(3)] == [True, True, False]


def test_a_change_of_tier_keeps_the_permits_spent(clock: FakeClock) -> None:
    plan = {"alice": "free"}
    tiers = {"free": [rs.Limit(rate=4, per=60)], "pro": [rs.Limit(rate=40, per=60), FREE]}
    rl = rs.RateLimiter("plans", limits=lambda key: tiers[plan[key]], clock=clock)
    assert [rl.try_acquire(key="alice").allowed for _ in range(3)] == [True, True, True]
    plan["alice"] = "pro"
    assert rl.try_acquire(key="alice").windows[0].limit == 4  # cached until retier
    rl.retier("alice")
    d = rl.try_acquire(key="alice")  # 4 spent of 40: the upgrade takes effect at once
    assert d.allowed
    assert [(w.limit, w.remaining) for w in d.windows] == [(40, 35), (2, 1)]  # a fresh window
    plan["alice"] = "free"  # and back: 5 spent of 4
    rl.retier()  # every key
    d = rl.try_acquire(key="alice")
    assert not d.allowed
    assert d.retry_after == 30.0  # 5 permits of 15 s, 3 tolerated: 75 - 45
    assert d.windows[0].limit == 4


def test_a_bad_tier_is_a_configuration_error(clock: FakeClock) -> None:
    def bad(key: str) -> Any:
        return "lots"

    rl = rs.RateLimiter("plans", limits=bad, clock=clock)
    with pytest.raises(rs.ConfigurationError, match="non-empty sequence"):
        rl.try_acquire(key="k")


def test_tier_cost_is_checked_per_tier(clock: FakeClock) -> None:
    rl = rs.RateLimiter("plans", limits=lambda key: PRO if key == "pro" else FREE, clock=clock)
    assert rl.try_acquire(key="pro", cost=5).allowed
    with pytest.raises(rs.ConfigurationError, match="exceeds burst 2"):
        rl.try_acquire(key="free", cost=5)


def test_tiers_on_a_store(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    rl = rs.RateLimiter(
        "plans",
        limits=lambda key: PRO if key.startswith("pro:") else FREE,
        store=store,
        clock=clock,
    )
    assert sum(rl.try_acquire(key="free:a").allowed for _ in range(5)) == 2
    d = rl.try_acquire(key="pro:b", cost=3)
    assert [w.remaining for w in d.windows] == [7, 97]
    assert rl.refund(d) is True
    assert [w.remaining for w in rl.try_acquire(key="pro:b").windows] == [9, 99]


def test_tiers_in_the_decorator(runner: Runner, clock: FakeClock) -> None:
    rl = rs.RateLimiter(
        "plans",
        limits=lambda key: PRO if key.startswith("pro:") else FREE,
        key=lambda user: user,
        clock=clock,
    )
    fn = runner.scripted(["ok"])
    assert [runner.run(rl, fn, "free:a") for _ in range(2)] == ["ok", "ok"]
    with pytest.raises(rs.RateLimitedError):
        runner.run(rl, fn, "free:a")
    assert runner.run(rl, fn, "pro:b") == "ok"
