"""The breaker core's named fast path is exactly its general path where it claims to be."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as hs

from resilience.circuit import _core as core

_CFG = core.Config(
    failure_ratio=0.5,
    failure_count=0,
    slow_call_ratio=0.5,
    min_calls=3,
    buckets=4,
    bucket_us=1_000,
    open_us=(5_000,),
    half_open_calls=1,
    half_open_timeout_us=5_000,
    bad_mask=core.FAILURE | core.SLOW_BIT,
)

_steps = hs.lists(
    hs.tuples(hs.integers(0, 1_500), hs.sampled_from([0, 0, 0, 1, 2, 3, core.RELEASE])),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(_steps, hs.integers(0, 1_500))
def test_count_success_is_record_success_up_to_its_bound(
    steps: list[tuple[int, int]], dt: int
) -> None:
    st = core.initial_state(_CFG)
    now = 0
    for gap, outcome in steps:
        now += gap
        permit, _, _ = core.acquire(st, _CFG, now)
        if permit >= 0:
            core.record(st, _CFG, now, permit, outcome)
    until = core.fast_success_until(st, _CFG)
    at = now + dt
    if core.state_of(st[core.TOKEN]) != core.CLOSED or not now <= at <= until:
        return
    fast, slow = list(st), list(st)
    core.count_success(fast)
    assert core.record(slow, _CFG, at, slow[core.TOKEN], core.SUCCESS) is None
    assert fast == slow


def test_no_fast_path_once_the_window_holds_a_failure() -> None:
    st = core.initial_state(_CFG)
    assert core.fast_success_until(st, _CFG) == _CFG.bucket_us - 1
    core.record(st, _CFG, 10, st[core.TOKEN], core.FAILURE)
    assert core.fast_success_until(st, _CFG) == -1
