"""The multi-window decorator's fast path decides exactly as the general path does."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import resilience as rs
from resilience.ratelimit._wrappers import multi_fast_path
from resilience.testing import FakeClock

_limit = st.builds(
    lambda rate, per, burst: rs.Limit(rate, per=per, burst=burst),
    st.integers(1, 6),
    st.sampled_from([1.0, 2.5, 60.0]),
    st.none() | st.integers(1, 5),
)
_step = st.tuples(
    st.sampled_from([0.0, 0.0, 0.1, 0.25, 0.5, 1.0, 7.0, 61.0]),
    st.sampled_from(["call", "call", "refused inside", "try_acquire"]),
)


def _pair(limits: list[rs.Limit]) -> tuple[rs.RateLimiter, rs.RateLimiter, FakeClock, FakeClock]:
    ca, cb = FakeClock(), FakeClock()
    fast = rs.RateLimiter("api", limits=limits, clock=ca)
    general = rs.RateLimiter("api", limits=limits, clock=cb, key=lambda: None)  # global bucket
    assert multi_fast_path(fast) is not None
    assert multi_fast_path(general) is None
    return fast, general, ca, cb


def _outcome(fn: Any) -> Any:
    try:
        return fn()
    except rs.RateLimitedError as exc:
        return ("refused", exc.policy, exc.retry_after)


def _windows(rl: rs.RateLimiter) -> Any:
    d = rl.try_acquire(cost=0)
    return d.allowed, d.remaining, d.reset_after, d.windows


@settings(max_examples=150, deadline=None)
@given(st.lists(_limit, min_size=2, max_size=3), st.lists(_step, max_size=40))
def test_the_fast_path_decides_as_the_general_path(limits: list[rs.Limit], steps: Any) -> None:
    fast, general, ca, cb = _pair(limits)
    inner = rs.RateLimiter("inner", rate=0, clock=ca)
    inner_b = rs.RateLimiter("inner", rate=0, clock=cb)
    ok = lambda: "ok"  # noqa: E731
    calls = {
        "call": (fast(ok), general(ok)),
        "refused inside": (rs.Pipeline(fast, inner)(ok), rs.Pipeline(general, inner_b)(ok)),
        "try_acquire": (
            lambda: fast.try_acquire().windows,
            lambda: general.try_acquire().windows,
        ),
    }
    for dt, action in steps:
        ca.advance(dt)
        cb.advance(dt)
        a, b = calls[action]
        assert _outcome(a) == _outcome(b)
        assert _windows(fast) == _windows(general)
    assert fast._windows is not None
    assert general._windows is not None
    assert fast._windows.glob == general._windows.glob


def test_the_async_fast_path_refuses_and_refunds_as_the_general_path() -> None:
    limits = [rs.Limit(2), rs.Limit(3, per=60)]
    fast, general, ca, cb = _pair(limits)

    async def ok() -> str:
        return "ok"

    async def run(rl: rs.RateLimiter, clock: FakeClock) -> list[Any]:
        inner = rs.RateLimiter("inner", rate=0, clock=clock)
        wrapped, refused = rl(ok), rs.Pipeline(rl, inner)(ok)
        out: list[Any] = []
        for fn, dt in [(refused, 0.0), (wrapped, 0.0), (wrapped, 0.2), (wrapped, 0.1)]:
            clock.advance(dt)
            try:
                out.append(await fn())
            except rs.RateLimitedError as exc:
                out.append((exc.policy, exc.retry_after))
        out.append(rl.try_acquire(cost=0).windows)
        return out

    a, b = asyncio.run(run(fast, ca)), asyncio.run(run(general, cb))
    assert a == b
    assert a[:4] == [("inner", None), "ok", "ok", ("api", 0.2)]  # the refusal refunded


def test_warm_up_keys_and_waits_take_the_general_path() -> None:
    two = [rs.Limit(2), rs.Limit(3, per=60)]
    assert multi_fast_path(rs.RateLimiter("a", limits=two)) is not None
    assert multi_fast_path(rs.RateLimiter("a", limits=[rs.Limit(2, warmup=5), *two])) is None
    assert multi_fast_path(rs.RateLimiter("a", limits=two, key=lambda: "k")) is None
    assert multi_fast_path(rs.RateLimiter("a", limits=two, max_wait=1)) is None
    assert multi_fast_path(rs.RateLimiter("a", limits=[rs.Limit(0), *two])) is None
    assert multi_fast_path(rs.RateLimiter("a", limits=lambda key: two)) is None
    assert multi_fast_path(rs.RateLimiter("a", rate=2)) is None


def test_the_decorators_take_the_fast_path() -> None:
    def boom(*args: Any) -> Any:
        raise AssertionError("the general path")

    fast, general, _, _ = _pair([rs.Limit(2), rs.Limit(3, per=60)])

    async def aok() -> str:
        return "ok"

    wrapped, awrapped = fast(lambda: "ok"), fast(aok)
    slow = general(lambda: "ok")
    vars(fast)["_local"] = vars(general)["_local"] = boom  # the general path decides here
    assert wrapped() == "ok"
    assert asyncio.run(awrapped()) == "ok"
    with pytest.raises(AssertionError, match="the general path"):
        slow()
