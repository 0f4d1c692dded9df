"""Nothing accepted at construction fails at call time: the reported invalid cases are refused with
rs.ConfigurationError naming the allowed range; the representable extremes are accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

import resilience as rs
from interceptors.asgi import IdempotencyMiddleware
from resilience import _types

from .validation_support import MAX_SECONDS, MIN_SECONDS, uncalled_app


def test_the_bounds_are_the_documented_ones() -> None:
    assert (_types.MAX_SECONDS, _types.MIN_SECONDS, _types.MAX_COUNT) == (1e9, 1e-6, 2**53)


# -- the reported cases: each is refused at construction with the allowed range ---------------
# (factory, words the message must contain)
REPORTED: dict[str, tuple[Callable[[], object], tuple[str, ...]]] = {
    "idempotent-ttl-1e300": (
        lambda: rs.Idempotent(key=lambda: "k", ttl=1e300),
        ("ttl", "allowed: 1e-06 to 1e+09 seconds"),
    ),
    "idempotent-ttl-timedelta-max": (
        lambda: rs.Idempotent(key=lambda: "k", ttl=timedelta.max),
        ("ttl", "1e+09 seconds"),
    ),
    "idempotent-lease-1e300": (
        lambda: rs.Idempotent(key=lambda: "k", lease=1e300),
        ("lease", "1e+09 seconds"),
    ),
    "records-ttl-timedelta-max": (
        lambda: rs.IdempotencyRecords(ttl=timedelta.max),
        ("ttl", "1e+09 seconds"),
    ),
    "limiter-rate-1e-300": (
        lambda: rs.RateLimiter("r", rate=1e-300),
        ("emission interval", "between 1e-06 and 1e+09 seconds"),
    ),
    "limiter-per-1e300": (
        lambda: rs.RateLimiter("r", rate=1, per=1e300),
        ("per", "1e+09 seconds"),
    ),
    "limiter-per-timedelta-max": (
        lambda: rs.RateLimiter("r", rate=1, per=timedelta.max),
        ("per", "1e+09 seconds"),
    ),
    "limiter-rate-1e300": (
        lambda: rs.RateLimiter("r", rate=1e300),
        ("rate", "2**53"),
    ),
    "limiter-warmup-1e300": (
        lambda: rs.RateLimiter("r", rate=1, warmup=1e300),
        ("warmup", "1e+09 seconds"),
    ),
    "breaker-open-for-1e300": (
        lambda: rs.CircuitBreaker("b", failure_count=1, open_for=1e300),
        ("open_for", "1e+09 seconds"),
    ),
    "breaker-open-for-schedule-1e300": (
        lambda: rs.CircuitBreaker(
            "b",
            failure_count=1,
            open_for=_Forever(),
        ),
        ("open_for", "1e+09 seconds"),
    ),
    "breaker-window-1e300": (
        lambda: rs.CircuitBreaker("b", failure_count=1, window=1e300),
        ("window", "1e+09 seconds"),
    ),
    "breaker-window-below-1us": (
        lambda: rs.CircuitBreaker("b", failure_count=1, window=1e-9, buckets=1),
        ("window", "allowed: 1e-06 to 1e+09 seconds"),
    ),
    "release-statuses-abc": (
        lambda: IdempotencyMiddleware(uncalled_app, release_statuses=["abc"]),  # type: ignore[list-item]
        ("release_statuses", "100 to 599"),
    ),
    "release-statuses-out-of-range": (
        lambda: IdempotencyMiddleware(uncalled_app, release_statuses=[99]),
        ("release_statuses", "100 to 599"),
    ),
    "retry-attempts-huge": (
        lambda: rs.Retry(on=OSError, attempts=2**60),
        ("attempts", ">= 1 and <= 2**53"),
    ),
}


class _Forever:
    """A custom open_for schedule whose durations no store can represent."""

    def delay(self, n: int, prev: float | None, rnd: object) -> float:
        return 1e300


@pytest.mark.parametrize("case", sorted(REPORTED))
def test_reported_cases_are_refused_with_the_allowed_range(case: str) -> None:
    factory, words = REPORTED[case]
    with pytest.raises(rs.ConfigurationError) as info:
        factory()
    for word in words:
        assert word in str(info.value)


# -- rate / per combinations whose emission interval is not representable ---------------------
@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"rate": 1e7}, "emission interval"),  # 1e7 per second: 0.1 µs apart
        ({"rate": 1, "per": 1e-7}, "per"),  # below 1 µs already as a duration
        ({"rate": 10, "per": 5e-6}, "emission interval"),  # 0.5 µs
        ({"rate": 1e-10}, "emission interval"),  # one per 1e10 s
        ({"rate": 1e-3, "per": 1e7}, "emission interval"),  # one per 1e10 s
        ({"rate": 1, "per": 9e8, "burst": 2}, "keeps a bucket's state"),  # 1.8e9 s window
        ({"rate": 1e-3, "per": 1, "burst": 2e6}, "keeps a bucket's state"),  # 2e9 s window
        ({"rate": 1, "per": 2e8, "warmup": 10}, "cold_factor + 2"),  # cold backlog 1e9+ s
        ({"rate": 1, "per": 1e6, "warmup": 1, "cold_factor": 1e4}, "cold_factor + 2"),
        (
            {
                "rate": 1,
                "per": 3e8,
                "store": rs.MemoryStore(),
                "on_store_error": "local",
                "instances": 10,
            },
            "local share",
        ),
    ],
)
def test_unrepresentable_emission_intervals_are_refused(kw: dict[str, Any], words: str) -> None:
    with pytest.raises(rs.ConfigurationError, match=words.replace("+", r"\+")):
        rs.RateLimiter("r", **kw)


def test_the_representable_extremes_are_accepted() -> None:
    rs.RateLimiter("fast", rate=1e6)  # 1 µs apart
    rs.RateLimiter("slow", rate=1, per=MAX_SECONDS)
    rs.RateLimiter("warm", rate=1, per=1e6, warmup=1e8, cold_factor=100)
    rs.RateLimiter("zero", rate=0)
    rs.CircuitBreaker("b", failure_count=1, window=MIN_SECONDS, buckets=1, open_for=MAX_SECONDS)
    rs.Idempotent(key=lambda: "k", ttl=MAX_SECONDS, lease=MAX_SECONDS)
    rs.Bulkhead("b", max_concurrent=2**53, max_wait=MAX_SECONDS)
    rs.Timeout(MAX_SECONDS)
