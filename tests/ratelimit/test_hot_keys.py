"""A full key table under a flood of distinct keys: the keys in steady use keep their exact rate.

The flood is a scraper rotating IDs, each spending its whole burst in one call (so its bucket
stays in debt for a second); steady keys join while the table is already full and ask far more
often than their rate. Their entitled count comes from an oracle: the same calls on a limiter
whose table never fills.
"""

from __future__ import annotations

from typing import Any

import pytest

import resilience as rs
from resilience.testing import FakeClock

RATE, BURST = 5, 5  # one permit per 0.2 s; a drained bucket is full again after 1 s
STEADY = [f"user:{i}" for i in range(10)]


def _limiter(clock: FakeClock, windows: bool, **kw: Any) -> rs.RateLimiter:
    if windows:  # the multi-window machinery: a second, loose window
        limits = [rs.Limit(RATE, burst=BURST), rs.Limit(10**6, per=3600)]
        return rs.RateLimiter("api", limits=limits, clock=clock, **kw)
    return rs.RateLimiter("api", rate=RATE, burst=BURST, clock=clock, **kw)


def flood(
    windows: bool = False, flood_keys: int = 20_000, max_keys: int = 1000, **kw: Any
) -> dict[str, Any]:
    """2 s of flood at 10,000 distinct keys a second; steady keys from 0.2 s, every 10 ms."""
    clock = FakeClock()
    lim = _limiter(clock, windows, max_keys=max_keys, **kw)
    oracle = _limiter(clock, windows, max_keys=10**6)
    admitted = dict.fromkeys(STEADY, 0)
    entitled = dict.fromkeys(STEADY, 0)
    flood_admitted = peak = 0
    for i in range(flood_keys):
        flood_admitted += lim.try_acquire(f"scraper:{i}", cost=BURST).allowed
        if i % 100 == 0 and i >= 2000:
            for key in STEADY:
                admitted[key] += lim.try_acquire(key).allowed
                entitled[key] += oracle.try_acquire(key).allowed
        peak = max(peak, len(lim._table) if lim._windows is None else len(lim._windows.entries))
        clock.advance(0.0001)
    return {
        "admitted": admitted,
        "entitled": entitled,
        "flood_admitted": flood_admitted,
        "peak": peak,
        "limiter": lim,
    }


@pytest.mark.parametrize("windows", [False, True], ids=["one window", "two windows"])
def test_steady_keys_keep_their_exact_rate_under_a_flood_of_distinct_keys(windows: bool) -> None:
    out = flood(windows)
    # 5 of burst at 0.2 s, then one every 0.2 s until the last call at 1.99 s (the oracle)
    assert set(out["entitled"].values()) == {13}
    assert out["admitted"] == out["entitled"]
    assert out["peak"] <= 1000  # the flood is contained in the table's bound
    assert out["flood_admitted"] == 20_000  # new keys are still welcome (nobody denied)


def test_the_old_policy_denies_the_steady_keys_under_the_flood() -> None:
    out = flood(on_full="deny")
    # denied until the flood's first buckets are full again (1 s in): several permits short
    assert all(out["admitted"][k] <= out["entitled"][k] - 3 for k in STEADY), out["admitted"]
    assert out["peak"] <= 1000


def test_the_flood_never_resets_a_hammering_keys_debt() -> None:
    clock = FakeClock()
    lim = rs.RateLimiter("api", rate=1, per=10, burst=3, max_keys=100, clock=clock)
    assert [lim.try_acquire("eve").allowed for _ in range(4)] == [True] * 3 + [False]
    for i in range(10_000):  # eve floods distinct keys, hoping to get "eve" evicted
        lim.try_acquire(f"eve-{i}")
        if i % 50 == 0:
            assert not lim.try_acquire("eve").allowed  # still in debt: never a fresh burst
    assert lim.evictions > 9000  # the one-shot keys evicted each other
    clock.advance(10)
    assert lim.try_acquire("eve").allowed
    assert not lim.try_acquire("eve").allowed  # exactly one permit per 10 s


def test_an_evicted_probationary_key_gets_a_fresh_bucket() -> None:
    clock = FakeClock()
    lim = rs.RateLimiter("api", rate=1, per=60, max_keys=2, clock=clock)
    assert lim.try_acquire("a").allowed
    assert lim.try_acquire("b").allowed
    assert lim.try_acquire("c").allowed  # "a", seen once and coldest, is evicted
    assert lim.evictions == 1
    assert lim.try_acquire("a").allowed  # the documented trade-off: its debt is forgotten


def test_a_family_cap_keeps_the_flood_to_its_share() -> None:
    clock = FakeClock()
    lim = rs.RateLimiter(
        "api",
        rate=1,
        per=60,
        max_keys=100,
        family=lambda key: key.split(":")[0],
        max_keys_per_family=20,
        clock=clock,
    )
    # 50 users of 10 tenants: one call each, then one more much later
    occasional = [f"tenant{i % 10}:user{i}" for i in range(50)]
    for key in occasional:
        assert lim.try_acquire(key).allowed
    for i in range(5000):
        assert lim.try_acquire(f"scraper:{i}").allowed  # evicts its own family's coldest
    assert sum(k.startswith("scraper:") for k in [*lim._table.hot, *lim._table.new]) == 20
    for key in occasional:  # still in debt: none was evicted by the scraper
        assert not lim.try_acquire(key).allowed
    # without the cap the same flood evicts the occasional users: their debt is forgotten
    free = rs.RateLimiter("api", rate=1, per=60, max_keys=100, clock=clock)
    for key in occasional:
        free.try_acquire(key)
    for i in range(5000):
        free.try_acquire(f"scraper:{i}")
    assert all(free.try_acquire(key).allowed for key in occasional)


def test_a_full_family_with_deny_refuses_its_new_keys_until_one_is_idle() -> None:
    clock = FakeClock()
    lim = rs.RateLimiter(
        "api",
        rate=1,
        per=10,
        max_keys=100,
        on_full="deny",
        family=lambda key: key.split(":")[0],
        max_keys_per_family=2,
        clock=clock,
    )
    assert lim.try_acquire("t1:a").allowed
    clock.advance(4)
    assert lim.try_acquire("t1:b").allowed
    d = lim.try_acquire("t1:c")
    assert not d.allowed
    assert d.retry_after == pytest.approx(6.0)  # until "t1:a" is full again
    assert lim.try_acquire("t2:a").allowed  # another family is unaffected
    clock.advance(6)
    assert lim.try_acquire("t1:c").allowed  # took the idle "t1:a"'s place
    assert not lim.try_acquire("t1:b").allowed


def test_protected_keys_survive_a_flood_in_the_multi_window_table_too() -> None:
    clock = FakeClock()
    lim = rs.RateLimiter("api", limits=[rs.Limit(1, per=10)], max_keys=10, clock=clock)
    lim.try_acquire("steady")
    lim.try_acquire("steady")  # promoted
    for i in range(1000):
        assert lim.try_acquire(f"k{i}").allowed
    assert not lim.try_acquire("steady").allowed
    assert lim.evictions == 1000 - 9  # the one-shot keys evicted each other
    assert lim.try_acquire().allowed  # the global bucket is never evicted


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"on_full": "lru"}, "on_full"),
        ({"family": "prefix", "max_keys_per_family": 2}, "family must be a callable"),
        ({"max_keys_per_family": 2}, "needs family="),
        ({"family": str}, "needs max_keys_per_family="),
        ({"family": str, "max_keys_per_family": 0}, "max_keys_per_family"),
        ({"family": str, "max_keys_per_family": 11}, "max_keys_per_family"),
        ({"family": str, "max_keys_per_family": True}, "max_keys_per_family"),
    ],
)
def test_bad_full_table_options_are_configuration_errors(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(rs.ConfigurationError, match=match):
        rs.RateLimiter("api", rate=1, max_keys=10, **kw)


def _repeat_flood(**kw: Any) -> tuple[dict[str, int], dict[str, int]]:
    """A scraper calling each ID 3 times (so each is promoted), 10,000 IDs a second for 2 s;
    steady keys from 0.2 s, every 100 ms."""
    clock = FakeClock()
    lim = rs.RateLimiter("api", rate=RATE, burst=BURST, max_keys=1000, clock=clock, **kw)
    oracle = rs.RateLimiter("api", rate=RATE, burst=BURST, clock=clock)
    admitted = dict.fromkeys(STEADY, 0)
    entitled = dict.fromkeys(STEADY, 0)
    for i in range(20_000):
        for _ in range(3):
            lim.try_acquire(f"scraper:{i}")
        if i % 1000 == 0 and i >= 2000:
            for key in STEADY:
                admitted[key] += lim.try_acquire(key).allowed
                entitled[key] += oracle.try_acquire(key).allowed
        clock.advance(0.0001)
    return admitted, entitled


def test_a_family_cap_protects_steady_keys_from_a_scraper_reusing_each_id() -> None:
    admitted, entitled = _repeat_flood()
    # repeat keys churn the protected segment too: the steady keys were evicted, their debt
    # forgotten (more than their rate: what the family cap is for)
    assert all(admitted[k] > entitled[k] for k in STEADY), (admitted, entitled)
    capped, entitled = _repeat_flood(family=lambda k: k.split(":")[0], max_keys_per_family=500)
    assert capped == entitled
