"""RateLimiter: reject, warm-up, pacing, warm-up + pacing, keyed, stores; sync and async."""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from typing import Any

import pytest

import resilience as rs
from resilience.events import CallRejected, RateLimitWaited, StoreFailed
from resilience.ratelimit import fresh_at, limit_params, refund, status, transition
from resilience.stores import MemoryStore, StoreFullError
from resilience.testing import FakeClock, RecordingListener

from ..conftest import Runner
from ..helpers import BrokenStore, ManualClock, assert_cold_start_ramp, saturated_per_second


def limiter(clock: FakeClock, **kw: Any) -> rs.RateLimiter:
    kw.setdefault("rate", 5)
    return rs.RateLimiter(kw.pop("name", "api"), clock=clock, **kw)


# -- reject (token bucket / GCRA) ---------------------------------------------------------------
def test_burst_then_reject_with_exact_retry_after(runner: Runner, clock: FakeClock) -> None:
    rl = limiter(clock, rate=5)
    fn = runner.scripted(["ok"])
    assert [runner.run(rl, fn) for _ in range(5)] == ["ok"] * 5
    with pytest.raises(rs.RateLimitedError) as info:
        runner.run(rl, fn)
    assert info.value.retry_after == pytest.approx(0.2)
    assert info.value.policy == "api"
    assert len(runner.calls) == 5  # the rejected call never ran
    clock.advance(0.2)
    assert runner.run(rl, fn) == "ok"


def test_rate_per_and_burst(runner: Runner, clock: FakeClock) -> None:
    rl = limiter(clock, rate=10, per=60, burst=2)
    fn = runner.scripted(["ok"])
    runner.run(rl, fn)
    runner.run(rl, fn)
    with pytest.raises(rs.RateLimitedError) as info:
        runner.run(rl, fn)
    assert info.value.retry_after == pytest.approx(6.0)
    clock.advance(5.999)
    with pytest.raises(rs.RateLimitedError):
        runner.run(rl, fn)
    clock.advance(0.001)
    assert runner.run(rl, fn) == "ok"


def test_steady_rate_admits_exactly_rate(clock: FakeClock) -> None:
    rl = limiter(clock, rate=100, burst=1)
    admitted = 0
    for _ in range(10_000):  # probe every 0.1 ms for 1 s
        admitted += rl.try_acquire().allowed
        clock.advance(0.0001)
    assert admitted == 100


def test_rejection_emits_call_rejected(runner: Runner, clock: FakeClock) -> None:
    rec = RecordingListener()
    rl = limiter(clock, rate=1, listeners=[rec])
    fn = runner.scripted(["ok"])
    runner.run(rl, fn)
    with pytest.raises(rs.RateLimitedError):
        runner.run(rl, fn)
    (event,) = rec.of(CallRejected)
    assert isinstance(event, CallRejected)
    assert event.reason == "rate_limited"
    assert event.retry_after == pytest.approx(1.0)
    assert event.policy == "api"


def test_decision_fields_and_policy_facts(clock: FakeClock) -> None:
    rl = limiter(clock, rate=100, per=60)
    assert (rl.quota, rl.window) == (100, 60.0)
    d = rl.try_acquire(key="k", cost=40)
    assert (d.allowed, d.remaining, d.limit, d.retry_after) == (True, 60, 100, 0.0)
    assert d.reset_after == pytest.approx(24.0)  # 40 permits at 0.6 s each
    d = rl.try_acquire(key="k", cost=61)
    assert not d.allowed
    assert d.remaining == 60
    assert d.retry_after == pytest.approx(0.6)
    assert rl.try_acquire(key="k", cost=60).allowed
    assert rl.try_acquire(key="k").allowed is False


def test_cost_larger_than_burst_is_configuration_error_and_not_charged(
    clock: FakeClock,
) -> None:
    rl = limiter(clock, rate=10)
    with pytest.raises(rs.ConfigurationError, match="exceeds burst"):
        rl.try_acquire(cost=11)
    with pytest.raises(ValueError):
        rl.acquire(key="x", cost=11)
    assert rl.try_acquire(cost=10).remaining == 0  # nothing was charged before


@pytest.mark.parametrize("cost", [-1, True, "1", float("nan")])
def test_bad_cost(clock: FakeClock, cost: Any) -> None:
    with pytest.raises(rs.ConfigurationError, match="cost"):
        limiter(clock).try_acquire(cost=cost)


def test_fractional_cost(clock: FakeClock) -> None:
    rl = limiter(clock, rate=1, burst=1)
    assert rl.try_acquire(cost=0.5).allowed
    assert rl.try_acquire(cost=0.5).allowed
    assert not rl.try_acquire(cost=0.5).allowed


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"rate": -1}, "rate"),
        ({"rate": 10, "burst": 0.5}, "burst"),
        ({"rate": 10, "per": 0}, "per"),
        ({"rate": 10, "cold_factor": 1}, "cold_factor"),
        ({"rate": 10, "warmup": 0}, "warmup"),
        ({"rate": 10, "max_wait": -1}, "max_wait"),
        ({"rate": 10, "on_store_error": "maybe"}, "on_store_error"),
        ({"rate": 10, "store": object()}, "store"),
        ({"rate": 10, "key": "user"}, "key"),
        ({"rate": 10, "max_keys": 0}, "max_keys"),
    ],
)
def test_configuration_errors(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(rs.ConfigurationError, match=match):
        rs.RateLimiter("x", **kw)


def test_rate_zero_rejects_everything_but_cost_zero(runner: Runner, clock: FakeClock) -> None:
    rl = limiter(clock, rate=0)
    with pytest.raises(rs.RateLimitedError) as info:
        runner.run(rl, runner.scripted(["ok"]))
    assert info.value.retry_after is None
    assert rl.try_acquire(cost=0).allowed
    assert not rl.try_acquire().allowed


def test_cost_zero_always_passes_and_charges_nothing(clock: FakeClock) -> None:
    rl = limiter(clock, rate=1)
    assert rl.try_acquire().allowed
    assert rl.try_acquire(cost=0).allowed
    assert rl.try_acquire(cost=0).remaining == 0


def test_timedelta_durations(clock: FakeClock) -> None:
    from datetime import timedelta

    rl = limiter(clock, rate=1, per=timedelta(minutes=1))
    rl.try_acquire()
    assert rl.try_acquire().retry_after == pytest.approx(60.0)


# -- pure functions -----------------------------------------------------------------------------
def test_pure_transition_is_gcra() -> None:
    p = limit_params(rate=10, per=1.0, burst=3)
    tat, now = 0.0, 5.0
    for _ in range(3):
        ok, tat, _stored, wait, ct = transition(tat, 0.0, now, 1, 0.0, p)
        assert ok
        assert wait == 0.0
        assert ct == pytest.approx(0.1)
    ok, tat2, _, retry, _ = transition(tat, 0.0, now, 1, 0.0, p)
    assert not ok
    assert tat2 == tat
    assert retry == pytest.approx(0.1)
    assert status(tat, now, p)[0] == 0
    assert fresh_at(tat, 0.0, p) == pytest.approx(5.3)


def test_pure_pacing_reservations_and_refund() -> None:
    p = limit_params(rate=10, per=1.0, burst=1)
    tat, waits = 0.0, []
    for _ in range(6):
        ok, tat, _, wait, cost_time = transition(tat, 0.0, 1.0, 1, 0.45, p)
        if ok:
            ct = cost_time
            waits.append(round(wait, 9))
        else:
            assert wait == pytest.approx(0.5)
    assert waits == [0.0, 0.1, 0.2, 0.3, 0.4]
    tat, _ = refund(tat, 0.0, 1.0, ct, 0.0, p)
    assert tat == pytest.approx(1.4)  # one queued slot given back


# -- warm-up (Guava SmoothWarmingUp / Sentinel WarmUpController) --------------------------------
def test_warmup_published_example_constants() -> None:
    # Sentinel's worked example: count 100/s, warm-up 10 s, cold factor 3.
    p = limit_params(100, 1.0, warmup=10, cold_factor=3)
    assert p.warning_tokens == 500
    assert p.max_tokens == 1000
    cold_interval = p.interval + (p.max_tokens - p.warning_tokens) * p.slope
    assert 1 / cold_interval == pytest.approx(100 / 3)  # cold rate ≈ 33/s


def test_warmup_cold_rate_ramps_to_rate_over_warmup_period(clock: FakeClock) -> None:
    rl = limiter(clock, rate=100, warmup=10, cold_factor=3, burst=1, max_wait=1.0)
    times = []
    while clock.monotonic() < 12.0:  # saturate: each acquire waits for its slot
        rl.acquire()
        times.append(clock.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] == pytest.approx(0.03, rel=1e-3)  # cold: 33/s
    assert gaps[-1] == pytest.approx(0.01)  # warm: 100/s
    # From max (1000) to warning (500) tokens takes exactly the warm-up period: 500 permits.
    admitted_in_warmup = sum(1 for t in times if t < 10.0 - 1e-9)
    assert admitted_in_warmup == pytest.approx(500, abs=1)
    in_first_second = sum(1 for t in times if t < 1.0)
    assert 33 <= in_first_second <= 37
    # The rate increases monotonically.
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(gaps))


def test_warmup_idle_limiter_cools_down(clock: FakeClock) -> None:
    rl = limiter(clock, rate=100, warmup=10, burst=1, max_wait=1.0)
    while clock.monotonic() < 15.0:
        rl.acquire()
    rl.acquire()
    start = clock.monotonic()
    rl.acquire()
    assert clock.monotonic() - start == pytest.approx(0.01)  # warm
    clock.advance(10.5)  # idle for (more than) the warm-up period: cold again
    start = clock.monotonic()
    rl.acquire()
    rl.acquire()
    assert clock.monotonic() - start == pytest.approx(0.03, rel=1e-3)


def test_warmup_reject_mode_admits_cold_rate(clock: FakeClock) -> None:
    rl = limiter(clock, rate=100, warmup=10, burst=1)
    admitted = 0
    for _ in range(1000):  # probe every 1 ms for 1 s
        d = rl.try_acquire()
        if not d.allowed:
            assert d.retry_after > 0
        admitted += d.allowed
        clock.advance(0.001)
    assert 33 <= admitted <= 37


@pytest.mark.parametrize(
    ("rate", "warmup", "cold_factor", "burst"),
    [(100, 10, 3, None), (100, 10, 3, 250), (100, 3, 4, None), (40, 5, 3, 40)],
)
def test_warmup_first_second_is_cold_including_the_burst(
    clock: FakeClock, rate: float, warmup: float, cold_factor: float, burst: float | None
) -> None:
    # Sentinel's WarmUp admits ~rate/cold_factor in the first second; the burst must not add a
    # second's worth of cold permits on top of it.
    rl = limiter(clock, rate=rate, warmup=warmup, cold_factor=cold_factor, burst=burst)
    per_second = saturated_per_second(rl, clock, round(warmup) + 3, 0.001)
    assert_cold_start_ramp(per_second, rate, cold_factor)


def test_warmup_burst_scales_with_temperature(clock: FakeClock) -> None:
    rl = limiter(clock, rate=100, warmup=10, cold_factor=3)

    def burst_now() -> int:
        n = 0
        while rl.try_acquire().allowed:
            n += 1
        return n

    assert burst_now() == 1  # fully cold: no burst at all, one permit at the cold spacing
    saturated_per_second(rl, clock, 12, 0.001)  # now warm
    clock.advance(1.0)  # the backlog (one burst's worth) drains; barely cooled
    warm_burst = burst_now()
    assert 90 <= warm_burst <= 100
    clock.advance(6.0)  # cooling: about 3/5 of the way back to cold
    lukewarm = burst_now()
    assert 1 < lukewarm < warm_burst / 2


@pytest.mark.parametrize(("busy", "idle"), [(0, 0), (3, 0.5), (6, 1.0), (12, 1.0), (12, 4.0)])
def test_warmup_remaining_tells_the_truth(clock: FakeClock, busy: int, idle: float) -> None:
    # RateLimit headers must not promise a cold limiter's full burst: remaining is what it
    # would admit right now (a lower bound, close to it)
    rl = limiter(clock, rate=100, warmup=10, cold_factor=3)
    saturated_per_second(rl, clock, busy, 0.001)
    clock.advance(idle)
    promised = rl.try_acquire(cost=0).remaining  # cost 0: a probe that takes nothing
    admitted = 0
    while rl.try_acquire().allowed:
        admitted += 1
    assert promised <= admitted <= promised + max(2, promised // 10), (promised, admitted)


def test_warmup_plus_pacing_cold_start(clock: FakeClock) -> None:
    rl = limiter(clock, rate=100, warmup=10, cold_factor=3, burst=20, max_wait=0.2)
    stamps: list[float] = []
    while clock.monotonic() < 13.0:
        rl.acquire()  # saturating: each call waits for its slot
        stamps.append(clock.monotonic())
    per_second = [sum(1 for t in stamps if k <= t < k + 1) for k in range(13)]
    assert_cold_start_ramp(per_second, 100, 3)


# -- uniform pacing (bounded queue) -------------------------------------------------------------
def test_pacing_spaces_calls_exactly(runner: Runner, clock: FakeClock) -> None:
    rl = limiter(clock, rate=10, burst=1, max_wait=1.0)
    fn = runner.scripted(["ok"])
    for _ in range(5):
        runner.run(rl, fn)
    assert runner.calls == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_pacing_queue_bound_rejects_at_once_and_cancel_returns_slot() -> None:
    clock = ManualClock()
    rec = RecordingListener()
    rl = limiter(clock, rate=10, burst=1, max_wait=0.25, listeners=[rec])
    admitted: list[float] = []

    async def one() -> None:
        await rl.aacquire()
        admitted.append(clock.monotonic())

    async def main() -> None:
        tasks = [asyncio.create_task(one()) for _ in range(3)]
        await asyncio.sleep(0)  # all three reserve: waits 0, 0.1, 0.2
        assert len(clock.sleeps) == 2
        with pytest.raises(rs.RateLimitedError) as info:  # wait 0.3 > 0.25: rejected at once
            await rl.aacquire()
        assert info.value.retry_after == pytest.approx(0.3)
        tasks[2].cancel()  # the 0.2 waiter gives its slot back
        await asyncio.gather(tasks[0], tasks[2], return_exceptions=True)
        d = rl.try_acquire()
        assert d.allowed is False
        assert d.retry_after == pytest.approx(0.2)  # not 0.3: the slot was returned
        clock.advance(0.1)
        await tasks[1]

    asyncio.run(main())
    assert admitted == pytest.approx([0.0, 0.1])
    assert [e.wait for e in rec.of(RateLimitWaited)] == pytest.approx([0.1, 0.2])


def test_pacing_never_sleeps_past_the_deadline(runner: Runner, clock: FakeClock) -> None:
    rl = limiter(clock, rate=5, burst=1, max_wait=10)
    fn = runner.scripted(["ok"])
    runner.run(rl, fn)
    pipeline = rs.Pipeline(rs.Timeout(0.1, clock=clock), rl)
    with pytest.raises(rs.RateLimitedError) as info:
        runner.run(pipeline, fn)
    assert info.value.retry_after == pytest.approx(0.2)
    assert clock.sleeps == []
    with rs.deadline_scope(0.5, clock=clock):
        assert runner.run(rl, fn) == "ok"
    assert clock.sleeps == pytest.approx([0.2])


def test_sync_waiter_interrupted_returns_reservation(clock: FakeClock) -> None:
    class Interrupting(FakeClock):
        def sleep(self, seconds: float, /) -> None:
            raise KeyboardInterrupt

    iclock = Interrupting()
    rl = limiter(iclock, rate=10, burst=1, max_wait=1)
    rl.acquire()
    with pytest.raises(KeyboardInterrupt):
        rl.acquire()
    assert rl.try_acquire().retry_after == pytest.approx(0.1)


def test_warmup_plus_pacing(clock: FakeClock) -> None:
    rl = limiter(clock, rate=100, warmup=10, burst=1, max_wait=0.05)
    rl.acquire()
    rl.acquire()  # waits the cold interval 0.03
    assert clock.sleeps == pytest.approx([0.03], rel=1e-3)
    # queue two more at the same instant: the second would wait > 0.05 → rejected at once
    d = rl.try_acquire()
    assert not d.allowed
    assert d.retry_after == pytest.approx(0.03, rel=1e-2)


# -- keyed ---------------------------------------------------------------------------------------
def test_keys_are_independent(clock: FakeClock) -> None:
    rl = limiter(clock, rate=1)
    assert rl.try_acquire(key="a").allowed
    assert not rl.try_acquire(key="a").allowed
    assert rl.try_acquire(key="b").allowed
    assert rl.try_acquire().allowed  # the global bucket is separate too


def test_key_callable_for_decorator(runner: Runner, clock: FakeClock) -> None:
    rl = limiter(clock, rate=1, key=lambda user, **kw: user)
    fn = runner.scripted(["ok"])
    assert runner.run(rl, fn, "alice") == "ok"
    assert runner.run(rl, fn, "bob") == "ok"
    with pytest.raises(rs.RateLimitedError):
        runner.run(rl, fn, "alice")


def test_acquire_waits_per_key_and_raises(clock: FakeClock) -> None:
    rl = limiter(clock, rate=2, burst=1, max_wait=0.5)
    assert rl.acquire(key="k").waited == 0.0
    assert rl.acquire(key="k").waited == pytest.approx(0.5)
    assert rl.acquire(key="other").waited == 0.0
    rl2 = limiter(clock, rate=1, burst=1, max_wait=0.5)
    rl2.acquire(key="k")
    with pytest.raises(rs.RateLimitedError):
        rl2.acquire(key="k")


def test_memory_bounded_full_store_denies_new_keys_not_active_ones(clock: FakeClock) -> None:
    rl = limiter(clock, rate=1, per=10, max_keys=100, on_full="deny")
    for i in range(100):
        assert rl.try_acquire(key=f"user-{i}").allowed
    d = rl.try_acquire(key="attacker")
    assert not d.allowed
    assert d.retry_after == pytest.approx(10.0)
    assert not rl.try_acquire(key="user-0").allowed  # the victim was not reset
    clock.advance(10.0)  # every bucket is full again: droppable
    assert rl.try_acquire(key="attacker").allowed
    assert len(rl._table) <= 100
    assert all(rl.try_acquire(key=f"new-{i}").allowed for i in range(99))  # all idle: room


def test_memory_stays_bounded_with_many_distinct_keys(clock: FakeClock) -> None:
    rl = limiter(clock, rate=10, max_keys=1000)
    denied = 0
    for i in range(200_000):
        denied += not rl.try_acquire(key=f"k{i}").allowed
        clock.advance(0.0005)  # a bucket is full again 0.1 s after its only call
        assert len(rl._table) <= 1000
    assert denied == 0  # idle buckets were recycled, nobody was denied


# -- stores ---------------------------------------------------------------------------------------
def test_store_path_matches_local_path(clock: FakeClock) -> None:
    import random

    rnd = random.Random(7)
    store = MemoryStore(clock=clock)
    kw: dict[str, Any] = {"rate": 7, "per": 2, "burst": 3, "warmup": 4}
    local = limiter(clock, **kw)
    shared = limiter(clock, store=store, **kw)
    for _ in range(2000):
        key = rnd.choice(["a", "b", None])
        cost = rnd.choice([0, 1, 1, 2, 0.5])
        a, b = local.try_acquire(key, cost), shared.try_acquire(key, cost)
        assert a.allowed == b.allowed
        assert a.remaining == b.remaining
        assert a.retry_after == pytest.approx(b.retry_after, abs=1e-9)
        clock.advance(rnd.choice([0.0, 0.01, 0.3, 2.0]))


def test_store_pacing_and_refund(clock: FakeClock) -> None:
    mclock = ManualClock()
    store = MemoryStore(clock=mclock)
    rl = limiter(mclock, rate=10, burst=1, max_wait=1, store=store)

    async def main() -> None:
        await rl.aacquire()
        task = asyncio.create_task(rl.aacquire())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert rl.try_acquire().retry_after == pytest.approx(0.1)

    asyncio.run(main())


@pytest.mark.parametrize(("mode", "allowed"), [("open", True), ("closed", False), ("local", True)])
def test_store_failure_modes(runner: Runner, clock: FakeClock, mode: str, allowed: bool) -> None:
    rec = RecordingListener()
    share = {"instances": 1} if mode == "local" else {}
    rl = limiter(clock, rate=1, store=BrokenStore(), on_store_error=mode, listeners=[rec], **share)
    fn = runner.scripted(["ok"])
    if allowed:
        assert runner.run(rl, fn) == "ok"
    else:
        with pytest.raises(rs.RateLimitedError):
            runner.run(rl, fn)
    (event,) = rec.of(StoreFailed)
    assert isinstance(event, StoreFailed)
    assert event.decision == mode
    if mode == "local":  # the local bucket now enforces the limit
        with pytest.raises(rs.RateLimitedError):
            runner.run(rl, fn)


@pytest.mark.parametrize("share", [{"instances": 4}, {"local_share": 0.25}])
def test_local_fallback_enforces_this_process_share(clock: FakeClock, share: Any) -> None:
    rl = limiter(
        clock, rate=8, per=60, burst=8, store=BrokenStore(), on_store_error="local", **share
    )
    assert [rl.try_acquire(key="k").allowed for _ in range(3)] == [True, True, False]
    assert rl.try_acquire(key="k").retry_after == 30.0  # 2 permits per minute: one every 30 s
    clock.advance(30)
    assert rl.try_acquire(key="k").allowed
    assert rl.describe()["local_share"] == 0.25


def test_local_fallback_needs_a_share(clock: FakeClock) -> None:
    with pytest.raises(rs.ConfigurationError, match="instances="):
        limiter(clock, store=BrokenStore(), on_store_error="local")
    with pytest.raises(rs.ConfigurationError, match="not both"):
        limiter(clock, store=BrokenStore(), instances=2, local_share=0.5)
    with pytest.raises(rs.ConfigurationError, match="local_share"):
        limiter(clock, store=BrokenStore(), on_store_error="local", local_share=1.5)
    # the in-process limiter (no store) keeps the full limit whatever the share
    rl = limiter(clock, rate=2, per=60, burst=2, instances=4)
    assert [rl.try_acquire().allowed for _ in range(3)] == [True, True, False]


def test_full_store_denies_instead_of_failing_open(clock: FakeClock) -> None:
    store = MemoryStore(max_entries=1, clock=clock)
    rl = limiter(clock, rate=1, per=10, store=store)
    assert rl.try_acquire(key="a").allowed
    d = rl.try_acquire(key="b")
    assert not d.allowed
    assert d.retry_after > 0
    with pytest.raises(StoreFullError):
        store.apply(type("Op", (), {"key": "z", "apply": lambda s, st, now: (1, 1, 5)})())


def test_store_entries_expire_when_fresh(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    rl = limiter(clock, rate=1, per=10, store=store)
    rl.try_acquire(key="a")
    assert store.get("rl:api:a") is not None
    clock.advance(10)
    assert store.get("rl:api:a") is None


def test_describe_and_repr(clock: FakeClock) -> None:
    rl = limiter(clock, rate=100, warmup=10)
    info = rl.describe()
    assert info["warning_tokens"] == 500
    assert info["max_tokens"] == 1000
    assert "RateLimiter(name='api'" in repr(rl)


# -- real time -------------------------------------------------------------------------------
def test_real_time_accuracy_two_threads() -> None:
    # A bucket of 0.1 s worth of permits absorbs scheduling jitter; drained first, it then
    # admits exactly the rate: 2 threads spinning on try_acquire for 1.5 s.
    rate, duration = 1000, 1.5
    rl = rs.RateLimiter("rt", rate=rate, burst=100)
    admitted = [0, 0]
    assert rl.try_acquire(cost=100).allowed
    start = time.monotonic()
    stop = start + duration

    def worker(i: int) -> None:
        n = 0
        while time.monotonic() < stop:
            if rl.try_acquire().allowed:
                n += 1
        admitted[i] = n

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = rate * duration
    assert math.isclose(sum(admitted), expected, rel_tol=0.05), (admitted, expected)
    assert min(admitted) > 0
