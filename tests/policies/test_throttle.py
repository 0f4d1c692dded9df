"""AdaptiveThrottle: the rejection formula, accepts, the window, sync/async twins, validation,
pipelines, and a shared window with the store failing."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

import resilience as rs
from resilience.events import CallRejected, StoreFailed
from resilience.testing import FakeClock, RecordingListener

from ..conftest import Runner
from ..helpers import Boom, BrokenStore


class Draws:
    """A ``random=`` returning scripted values (the last one repeats); counts its draws."""

    def __init__(self, *values: float) -> None:
        self.values = list(values) or [0.0]
        self.n = 0

    def random(self) -> float:
        v = self.values[min(self.n, len(self.values) - 1)]
        self.n += 1
        return v


class Overloaded(Exception):
    """The backend's overload signal in these tests."""


def outcome_of(runner: Runner, throttle: rs.AdaptiveThrottle, fn: Callable[..., Any]) -> str:
    try:
        runner.run(throttle, fn)
    except rs.ThrottledError:
        return "throttled"
    except Overloaded:
        return "refused"
    except Boom:
        return "boom"
    return "ok"


def overloaded() -> None:
    raise Overloaded("503")


def throttle_of(clock: FakeClock, **kw: Any) -> rs.AdaptiveThrottle:
    kw.setdefault("on", Overloaded)
    return rs.AdaptiveThrottle("api", clock=clock, **kw)


# -- the formula --------------------------------------------------------------------------------
def test_a_healthy_backend_is_never_throttled(runner: Runner, clock: FakeClock) -> None:
    draws = Draws(0.0)  # the most eager draw: rejects whenever p > 0
    t = throttle_of(clock, random=draws)
    fn = runner.wrap(lambda: "ok")
    assert {outcome_of(runner, t, fn) for _ in range(200)} == {"ok"}
    assert t.counts() == (200, 200)
    assert t.rejection_probability() == 0.0
    assert draws.n == 0  # no draw at all while p <= 0


def test_rejection_follows_the_formula(runner: Runner, clock: FakeClock) -> None:
    # draw 0.55: the n-th call (after n-1 refused requests) is rejected when (n-1)/n > 0.55
    t = throttle_of(clock, random=Draws(0.55))
    fn = runner.wrap(overloaded)
    seen = [outcome_of(runner, t, fn) for _ in range(5)]
    assert seen == ["refused", "refused", "throttled", "throttled", "throttled"]  # 0, 1/2, 2/3...
    assert t.counts() == (5, 0)  # rejected calls count as requests


def test_k_scales_the_accepts(runner: Runner, clock: FakeClock) -> None:
    # 10 accepted, then refusals: with k=2 throttling starts once requests exceed 2 * 10
    t = throttle_of(clock, k=2.0, random=Draws(0.0))
    ok, bad = runner.wrap(lambda: "ok"), runner.wrap(overloaded)
    assert [outcome_of(runner, t, ok) for _ in range(10)] == ["ok"] * 10
    seen = [outcome_of(runner, t, bad) for _ in range(12)]
    assert seen == ["refused"] * 11 + ["throttled"]  # p = (21 - 20) / 22 > 0 at call 22
    assert t.rejection_probability() == pytest.approx((22 - 20) / 23)


def test_max_rejection_bounds_the_probability(runner: Runner, clock: FakeClock) -> None:
    t = throttle_of(clock, max_rejection=0.5, random=Draws(0.5))
    fn = runner.wrap(overloaded)
    assert {outcome_of(runner, t, fn) for _ in range(50)} == {"refused"}  # p capped at 0.5
    assert t.rejection_probability() == 0.5


def test_the_window_slides(runner: Runner, clock: FakeClock) -> None:
    t = throttle_of(clock, window=10, buckets=5, random=Draws(0.0))
    fn = runner.wrap(overloaded)
    assert outcome_of(runner, t, fn) == "refused"
    clock.advance(4)
    assert outcome_of(runner, t, fn) == "throttled"
    assert t.counts() == (2, 0)  # the first call was counted with the second decision, at 4 s
    clock.advance(9.999)
    assert t.counts() == (2, 0)
    clock.advance(0.001)  # at 14 s the [4, 6) s bucket left the (five 2 s buckets) window
    assert t.counts() == (0, 0)
    assert outcome_of(runner, t, fn) == "refused"  # an empty window admits


def test_accepts_and_overload_signals(runner: Runner, clock: FakeClock) -> None:
    t = throttle_of(clock, on_result=lambda r: r == 503, random=Draws(0.99))
    assert outcome_of(runner, t, runner.wrap(lambda: 200)) == "ok"
    assert outcome_of(runner, t, runner.wrap(lambda: 503)) == "ok"  # a refusal by result
    assert outcome_of(runner, t, runner.scripted([Boom("app error")])) == "boom"  # accepted
    assert outcome_of(runner, t, runner.wrap(overloaded)) == "refused"
    assert t.counts() == (4, 2)


def test_a_rejection_is_a_stamped_refusal_with_an_event(runner: Runner, clock: FakeClock) -> None:
    rec = RecordingListener()
    t = throttle_of(clock, window=10, buckets=5, random=Draws(0.0), listeners=[rec])
    fn = runner.wrap(overloaded)
    outcome_of(runner, t, fn)
    clock.advance(0.5)
    with pytest.raises(rs.ThrottledError) as info:
        runner.run(t, fn)
    err = info.value
    assert isinstance(err, rs.RejectedError)
    assert rs.refused_by_policy(err)
    assert (err.policy, err.retry_after) == ("api", 1.5)  # the next 2 s bucket boundary
    (event,) = rec.of(CallRejected)
    assert (event.policy, event.reason, event.retry_after) == ("api", "throttled", 1.5)


def test_an_inner_refusal_counts_as_accepted(clock: FakeClock) -> None:
    # a bulkhead inside the throttle refuses: the backend never saw the call
    t = throttle_of(clock, on=Exception, random=Draws(0.99))
    gate = rs.Bulkhead("gate", max_concurrent=1)
    pipeline = rs.Pipeline(t, gate)
    inside: list[str] = []

    @pipeline
    def call() -> None:
        if not inside:
            inside.append("x")
            with pytest.raises(rs.BulkheadFullError):
                call()  # a nested call: the one slot is taken

    call()
    assert t.counts() == (2, 2)


def test_decorator_and_async_twin_decide_alike(clock: FakeClock) -> None:
    sync_t = throttle_of(clock, random=Draws(0.3, 0.9, 0.1))
    async_t = throttle_of(FakeClock(), random=Draws(0.3, 0.9, 0.1))

    @sync_t
    def s() -> None:
        raise Overloaded

    @async_t
    async def a() -> None:
        raise Overloaded

    def play_sync() -> str:
        try:
            s()
        except Overloaded:
            return "refused"
        except rs.ThrottledError:
            return "throttled"
        return "ok"

    async def play_async() -> list[str]:
        out = []
        for _ in range(8):
            try:
                await a()
            except Overloaded:
                out.append("refused")
            except rs.ThrottledError:
                out.append("throttled")
        return out

    seen = [play_sync() for _ in range(8)]
    assert seen == asyncio.run(play_async())
    assert "throttled" in seen
    assert seen.count("refused") >= 2


def test_a_cancelled_call_counts_as_accepted(clock: FakeClock) -> None:
    t = throttle_of(clock, on=Exception)

    async def main() -> None:
        started = asyncio.Event()

        async def slow() -> None:
            started.set()
            await asyncio.Event().wait()

        task = asyncio.ensure_future(t.acall(slow))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert t.counts() == (1, 1)


def test_threads_count_every_call(clock: FakeClock) -> None:
    t = throttle_of(clock)
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        for _ in range(500):
            t.call(lambda: None)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert t.counts() == (2000, 2000)


def test_describe_and_repr(clock: FakeClock) -> None:
    t = rs.AdaptiveThrottle("api", k=1.5, window=60, max_rejection=0.9, clock=clock)
    assert t.describe() == {
        "kind": "adaptive_throttle",
        "name": "api",
        "k": 1.5,
        "window": 60.0,
        "buckets": 20,
        "max_rejection": 0.9,
        "store": None,
    }
    assert repr(t).startswith("AdaptiveThrottle(name='api', k=1.5")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0.5}, "k must be >= 1"),
        ({"k": "2"}, "k must be a number"),
        ({"window": 0}, "window must be > 0 seconds"),
        ({"buckets": 0}, "buckets must be an integer >= 1"),
        ({"buckets": 1001}, "buckets must be an integer >= 1 and <= 1000"),
        ({"window": 0.000005, "buckets": 10}, "at least 1 µs per bucket"),
        ({"max_rejection": 0}, "max_rejection must be in (0, 1]"),
        ({"max_rejection": 1.5}, "max_rejection must be in (0, 1]"),
        ({"on": 3}, "on must be an exception type"),
        ({"on_result": int}, "on_result must be a predicate"),
        ({"store": object()}, "store must be a resilience.stores.Store"),
        ({"on_store_error": "retry"}, "on_store_error must be 'local', 'open' or 'closed'"),
        ({"random": object()}, "random must be a random.Random"),
    ],
)
def test_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(rs.ConfigurationError) as info:
        rs.AdaptiveThrottle("api", **kwargs)
    assert message in str(info.value)


# -- a shared window ----------------------------------------------------------------------------
class CountingStore(rs.MemoryStore):
    """A memory store counting its round trips."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.ops: list[Any] = []

    def apply(self, op: Any, /) -> Any:
        self.ops.append((op.done, op.accepted, op.draw))
        return super().apply(op)


def test_a_shared_window_decides_like_a_local_one(runner: Runner, clock: FakeClock) -> None:
    store = CountingStore(clock)
    shared = throttle_of(clock, store=store, random=Draws(0.4))
    local = throttle_of(clock, random=Draws(0.4))
    script: list[Callable[[], Any]] = [lambda: "ok", overloaded, overloaded, overloaded] * 6
    for body in script:
        fn = runner.wrap(body)
        assert outcome_of(runner, shared, fn) == outcome_of(runner, local, fn)
        clock.advance(1)
    assert shared.counts() == local.counts()
    assert len(store.ops) == len(script) + 1  # one round trip per decision (+ counts())
    assert store.ops[1] == (1, 1, 0.4)  # the first call's outcome went with the second decision


def test_two_throttles_share_one_window(clock: FakeClock) -> None:
    store = rs.MemoryStore(clock=clock)
    a = throttle_of(clock, store=store, random=Draws(0.0))
    b = throttle_of(clock, store=store, random=Draws(0.0))
    for _ in range(3):
        with pytest.raises((Overloaded, rs.ThrottledError)):
            a.call(overloaded)
    with pytest.raises(rs.ThrottledError):  # b sees a's refusals
        b.call(lambda: "ok")
    assert b.counts() == (4, 0)


def test_store_errors(clock: FakeClock) -> None:
    rec = RecordingListener()
    local = throttle_of(clock, store=BrokenStore(), random=Draws(0.0), listeners=[rec])
    assert local.call(lambda: "ok") == "ok"
    with pytest.raises(Overloaded):
        local.call(overloaded)
    with pytest.raises(Overloaded):  # the local window: (2 - 2 * 1) / 3 = 0, admitted
        local.call(overloaded)
    with pytest.raises(rs.ThrottledError):  # (3 - 2 * 1) / 4 > 0
        local.call(overloaded)
    assert [e.decision for e in rec.of(StoreFailed)] == ["local"] * 4
    with pytest.raises(rs.StoreError):  # counts() needs the store
        local.counts()

    opened = throttle_of(clock, store=BrokenStore(), on_store_error="open", random=Draws(0.0))
    for _ in range(20):
        with pytest.raises(Overloaded):
            opened.call(overloaded)  # never throttled: unguarded

    closed = throttle_of(clock, store=BrokenStore(), on_store_error="closed")
    with pytest.raises(rs.ThrottledError) as info:
        closed.call(lambda: "never")
    assert info.value.retry_after is None
    assert isinstance(info.value.__cause__, rs.StoreError)


async def test_shared_async_uses_aapply(clock: FakeClock) -> None:
    store = CountingStore(clock)
    t = throttle_of(clock, store=store, random=Draws(0.0))

    async def ok() -> str:
        return "ok"

    assert [await t.acall(ok) for _ in range(3)] == ["ok"] * 3
    assert [(done, accepted) for done, accepted, _ in store.ops] == [(0, 0), (1, 1), (1, 1)]


def test_under_sustained_overload_most_calls_are_throttled() -> None:
    import random

    overload_clock = FakeClock(start=50.0)
    t = throttle_of(overload_clock, random=random.Random(1))
    sent = 0
    for _ in range(1000):
        try:
            t.call(overloaded)
        except Overloaded:
            sent += 1
        except rs.ThrottledError:
            pass
        overload_clock.advance(0.01)
    assert sent < 50  # p -> 1: only a trickle reaches a backend that refuses everything


def test_calls_in_flight_do_not_raise_the_probability(clock: FakeClock) -> None:
    # a burst of concurrent first calls: none has finished, so none is counted yet (counted on
    # arrival, call n would face p = (n - 1) / n with no accept to offset it)
    t = throttle_of(clock, random=Draws(0.0))

    async def main() -> list[str]:
        gate = asyncio.Event()

        async def call() -> str:
            await gate.wait()
            return "ok"

        tasks = [asyncio.ensure_future(t.acall(call)) for _ in range(50)]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == ["ok"] * 50
    assert t.counts() == (50, 50)


BAD_DURATION = [-1, math.nan, math.inf, -math.inf, 1e300, 10**400, timedelta.max, "1", True]
BAD_COUNT = [0, -1, 1.5, 2**60, "3", None, True, math.nan]
SWEEP: dict[str, list[Any]] = {
    "k": [-1, 0, 0.999, math.nan, math.inf, 1e300, 10**400, "1", True],
    "window": [*BAD_DURATION, 0, 1e-9],
    "buckets": [*BAD_COUNT, 1001],
    "max_rejection": [0, -0.1, 1.5, math.nan, "0.5", True],
    "on": [5, (5,)],
    "on_result": [5, int],
    "store": [5],
    "on_store_error": ["nope", None],
    "clock": [5],
    "random": [5],
    "listeners": [5, [5]],
}


@pytest.mark.parametrize(
    ("param", "value"), [(p, v) for p, values in SWEEP.items() for v in values]
)
def test_every_invalid_value_is_a_configuration_error(param: str, value: Any) -> None:
    with pytest.raises(rs.ConfigurationError):
        rs.AdaptiveThrottle("api", **{param: value})
