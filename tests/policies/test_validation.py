"""Nothing accepted at construction fails at call time: every invalid parameter raises
``rs.ConfigurationError`` naming the allowed range, and the extremes that are accepted work on
both stores (memory and a real redis-server)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest

import resilience as rs
from interceptors.asgi import IdempotencyMiddleware, RateLimitMiddleware, ResilienceMiddleware
from interceptors.grpc import (
    AsyncResilienceClientInterceptor,
    AsyncResilienceServerInterceptor,
    ResilienceClientInterceptor,
    ResilienceServerInterceptor,
    grpc_retry,
)
from interceptors.httpx import ResilientTransport, http_retry
from resilience import _types
from resilience.testing import FakeClock

from ..redis_servers import RedisServer

MAX_SECONDS = 1e9  # the documented range of every duration
MIN_SECONDS = 1e-6  # ... where zero is not allowed


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
        lambda: IdempotencyMiddleware(_app, release_statuses=["abc"]),  # type: ignore[list-item]
        ("release_statuses", "100 to 599"),
    ),
    "release-statuses-out-of-range": (
        lambda: IdempotencyMiddleware(_app, release_statuses=[99]),
        ("release_statuses", "100 to 599"),
    ),
    "retry-attempts-huge": (
        lambda: rs.Retry(on=OSError, attempts=2**60),
        ("attempts", ">= 1 and <= 2**53"),
    ),
}


async def _app(scope: Any, receive: Any, send: Any) -> None:  # an ASGI app never called
    raise AssertionError("not called")


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


# -- every constructor, every parameter: invalid → ConfigurationError (never another error) ---
BAD_DURATION = [-1, math.nan, math.inf, -math.inf, 1e300, 10**400, timedelta.max, "1", True]
BAD_POSITIVE_DURATION = [*BAD_DURATION, 0, 1e-9]
BAD_COUNT = [0, -1, 1.5, 2**60, "3", None, True, math.nan]
BAD_NUMBER = [-1, math.nan, math.inf, 1e300, 10**400, "1", True]

Factory = Callable[..., object]
SWEEP: list[tuple[str, Factory, dict[str, list[Any]]]] = [
    (
        "RateLimiter",
        lambda **kw: rs.RateLimiter(**{"name": "r", "rate": 10, **kw}),
        {
            "rate": list(BAD_NUMBER),
            "per": BAD_POSITIVE_DURATION,
            "burst": [*BAD_NUMBER, 0, 0.5],
            "warmup": BAD_POSITIVE_DURATION,
            "cold_factor": [*BAD_NUMBER, 1, 0.5],
            "max_wait": BAD_DURATION,
            "max_keys": BAD_COUNT,
            "on_store_error": ["nope", None],
            "key": [5],
            "store": [5],
            "name": ["", 5, None],
            "listeners": [5, [5]],
        },
    ),
    (
        "CircuitBreaker",
        lambda **kw: rs.CircuitBreaker("b", **{"failure_count": 3, **kw}),
        {
            "failure_ratio": [0, 1.5, math.nan, "0.5", True],
            "failure_count": [*BAD_COUNT[:-2], True],
            "slow_call_ratio": [0, 1.5],
            "min_calls": [v for v in BAD_COUNT if v is not None],
            "window": BAD_POSITIVE_DURATION,
            "buckets": [*BAD_COUNT, 7, 1001],
            "open_for": BAD_POSITIVE_DURATION,
            "half_open_calls": BAD_COUNT,
            "half_open_timeout": BAD_POSITIVE_DURATION,
            "on": [5, (5,)],
            "on_result": [5],
            "on_store_error": ["nope"],
        },
    ),
    (
        "Bulkhead",
        lambda **kw: rs.Bulkhead("b", **{"max_concurrent": 2, **kw}),
        {"max_concurrent": BAD_COUNT, "max_wait": BAD_DURATION},
    ),
    (
        "AdaptiveConcurrency",
        lambda **kw: rs.AdaptiveConcurrency("a", **kw),
        {
            "initial_limit": BAD_COUNT,
            "min_limit": BAD_COUNT,
            "max_limit": BAD_COUNT,
            "tolerance": [*BAD_NUMBER, 0.5],
            "smoothing": [0, 2, math.nan],
            "queue_size": BAD_NUMBER,
            "long_window": BAD_COUNT,
        },
    ),
    (
        "Retry",
        lambda **kw: rs.Retry(**{"on": OSError, **kw}),
        {
            "attempts": BAD_COUNT,
            "max_elapsed": BAD_DURATION,
            "backoff": [5],
            "budget": [5],
            "retry_after": [5],
        },
    ),
    (
        "RetryBudget",
        lambda **kw: rs.RetryBudget(**kw),
        {
            "ratio": [*BAD_NUMBER, 1e4],
            "min_per_second": BAD_NUMBER,
            "ttl": [*BAD_POSITIVE_DURATION, 0.5, 61],
            "buckets": [*BAD_COUNT, 1001],
        },
    ),
    (
        "RetryThrottle",
        lambda **kw: rs.RetryThrottle(**kw),
        {"max_tokens": [*BAD_NUMBER, 0, 1e4], "token_ratio": [*BAD_NUMBER, 0]},
    ),
    (
        "Timeout",
        lambda **kw: rs.Timeout(**{"seconds": 1.0, **kw}),
        {"seconds": BAD_POSITIVE_DURATION, "max_workers": BAD_COUNT, "sync": ["nope"]},
    ),
    (
        "backoff.constant",
        lambda **kw: rs.backoff.constant(**{"delay": 1.0, **kw}),
        {"delay": BAD_DURATION, "jitter": ["nope"]},
    ),
    (
        "backoff.exponential",
        lambda **kw: rs.backoff.exponential(**kw),
        {"initial": BAD_DURATION, "maximum": BAD_DURATION, "multiplier": [*BAD_NUMBER, 0.5]},
    ),
    (
        "backoff.decorrelated",
        lambda **kw: rs.backoff.decorrelated(**kw),
        {"initial": BAD_POSITIVE_DURATION, "maximum": BAD_DURATION},
    ),
    (
        "backoff.schedule",
        lambda **kw: rs.backoff.schedule(**{"steps": [1.0], **kw}),
        {"steps": [[v] for v in BAD_DURATION] + [[], "1", 5]},
    ),
    (
        "Idempotent",
        lambda **kw: rs.Idempotent(**{"key": lambda: "k", **kw}),
        {
            "ttl": BAD_POSITIVE_DURATION,
            "lease": BAD_POSITIVE_DURATION,
            "wait": BAD_DURATION,
            "max_entries": BAD_COUNT,
            "key": [5],
            "store": [5],
            "on_store_error": ["nope"],
            "fingerprint": [5],
        },
    ),
    (
        "IdempotencyRecords",
        lambda **kw: rs.IdempotencyRecords(**kw),
        {
            "ttl": BAD_POSITIVE_DURATION,
            "lease": BAD_POSITIVE_DURATION,
            "max_entries": BAD_COUNT,
            "namespace": ["", 5],
        },
    ),
    (
        "MemoryStore",
        lambda **kw: rs.MemoryStore(**kw),
        {"max_entries": BAD_COUNT, "on_full": ["nope"]},
    ),
    (
        "RedisStore.from_url",
        lambda **kw: rs.RedisStore.from_url(**{"url": "redis://127.0.0.1:1/0", **kw}),
        {
            "url": ["http://x", 5],
            "socket_timeout": BAD_POSITIVE_DURATION,
            "socket_connect_timeout": BAD_POSITIVE_DURATION,
            "failure_threshold": BAD_COUNT,
            "probe_interval": BAD_POSITIVE_DURATION,
        },
    ),
    (
        "IdempotencyMiddleware",
        lambda **kw: IdempotencyMiddleware(_app, **kw),
        {
            "ttl": BAD_POSITIVE_DURATION,
            "lease": BAD_POSITIVE_DURATION,
            "wait": BAD_DURATION,
            "max_body": [-1, 1.5, 2**60, "1"],
            "max_response_bytes": [-1, 1.5, 2**60, "1"],
            "max_buffered_bytes": [0, -1, 1.5, 2**60, "1", None],
            "max_request_body": [-1, 1.5, 2**60, "1", None],
            "methods": ["POST", [5], [], 5],
            "release_statuses": [["abc"], [99], [600], "500", 5, [True], [500.0]],
            "replay_headers": ["x-id", [5], ["bad header"], 5],
            "store_errors": ["nope"],
            "on_store_error": ["nope"],
        },
    ),
    (
        "RateLimitMiddleware",
        lambda **kw: RateLimitMiddleware(_app, **{"limiter": rs.RateLimiter("r", rate=1), **kw}),
        {
            "cost": [0, -1, 1.5, "1", True],
            "trusted_proxies": ["10.0.0.0/8", ["not an ip"], [5.5]],
            "include": ["/x", ["x"], [5]],
            "exclude": ["/x", ["x"]],
            "when": [5],
            "limiter": [5],
        },
    ),
    (
        "ResilienceMiddleware",
        lambda **kw: ResilienceMiddleware(_app, **{"pipeline": rs.Timeout(1), **kw}),
        {
            "pipeline": [5, rs.Retry(on=OSError)],
            "deadline_headers": ["x-timeout", [5], ["bad header"]],
            "operation": [5],
            "failure_status": [5],
            "include": [["x"]],
            "max_deadline": BAD_POSITIVE_DURATION,
            "scope": [5, None],
        },
    ),
    (
        "ResilientTransport",
        lambda **kw: ResilientTransport(**{"pipeline": rs.Pipeline(rs.Timeout(1)), **kw}),
        {"methods": ["GET", [5], 5], "pipeline": [5]},
    ),
    (
        "http_retry",
        lambda **kw: http_retry(**kw),
        {
            "attempts": BAD_COUNT,
            "statuses": [["abc"], [99], [600], "503", 5, [True]],
            "methods": ["GET", [5], 5],
            "max_retry_after": BAD_NUMBER,
            "max_elapsed": BAD_DURATION,
        },
    ),
    (
        "ResilienceServerInterceptor",
        lambda **kw: ResilienceServerInterceptor(**{"pipeline": None, **kw}),
        {
            "idempotency_wait": BAD_DURATION,
            "idempotency": [5],
            "principal": [5],
            "pipeline": [5],
            "max_deadline": BAD_POSITIVE_DURATION,
        },
    ),
    (
        "AsyncResilienceServerInterceptor",
        lambda **kw: AsyncResilienceServerInterceptor(**{"pipeline": None, **kw}),
        {"idempotency_wait": BAD_DURATION, "max_deadline": BAD_POSITIVE_DURATION},
    ),
    (
        "AsyncResilienceClientInterceptor",
        lambda **kw: AsyncResilienceClientInterceptor(**{"pipeline": None, **kw}),
        {"replay_limit": [-1, 1.5, 2**60, "1", None]},
    ),
    (
        "ResilienceClientInterceptor",
        lambda **kw: ResilienceClientInterceptor(**{"pipeline": None, **kw}),
        {"replay_limit": [-1, 1.5, 2**60, "1", None]},
    ),
    (
        "grpc_retry",
        lambda **kw: grpc_retry(**kw),
        {
            "attempts": BAD_COUNT,
            "max_elapsed": BAD_DURATION,
            "codes": [[], [5], [grpc.StatusCode.OK], 5],
        },
    ),
    (
        "testing.FakeClock",
        lambda **kw: FakeClock(**kw),
        {"start": ["0", math.nan, math.inf, None], "epoch": ["x", math.inf]},
    ),
    (
        "deadline_scope",
        lambda **kw: rs.deadline_scope(**kw).__enter__(),
        {"timeout": [-1, math.nan, math.inf, "1", True]},
    ),
]

SWEEP_CASES = [
    pytest.param(factory, param, bad, id=f"{name}-{param}-{bad!r:.30}")
    for name, factory, params in SWEEP
    for param, bads in params.items()
    for bad in bads
]


@pytest.mark.parametrize(("factory", "param", "bad"), SWEEP_CASES)
def test_every_invalid_parameter_raises_configuration_error(
    factory: Factory, param: str, bad: object
) -> None:
    with pytest.raises(rs.ConfigurationError):
        factory(**{param: bad})


BASELINES = [(n, f) for n, f, _ in SWEEP if n != "deadline_scope"]


@pytest.mark.parametrize(("name", "factory"), BASELINES, ids=[n for n, _ in BASELINES])
def test_sweep_baselines_are_valid(name: str, factory: Factory) -> None:
    """The sweep's base configuration itself is accepted (so each case tests its parameter)."""
    assert factory() is not None


# -- the accepted extremes work on Redis: no StoreError, no silent misbehaviour ---------------


@pytest.fixture
def redis_store(redis_server: RedisServer) -> Iterator[tuple[rs.RedisStore, FakeClock]]:
    clock = FakeClock(start=1000.0)
    store = rs.RedisStore.from_url(
        redis_server.url, prefix=f"val{uuid.uuid4().hex[:10]}", clock=clock, socket_timeout=2.0
    )
    yield store, clock
    store.close()


@pytest.fixture
def real_clock_store(redis_server: RedisServer) -> Iterator[rs.RedisStore]:
    """Server TIME (now ≈ 1.8e15 µs), the clock that makes ``now + duration`` large."""
    store = rs.RedisStore.from_url(
        redis_server.url, prefix=f"valt{uuid.uuid4().hex[:10]}", socket_timeout=2.0
    )
    yield store
    store.close()


@pytest.mark.redis
def test_idempotent_at_the_longest_ttl_and_lease_works_on_redis(
    real_clock_store: rs.RedisStore,
) -> None:
    calls: list[int] = []

    @rs.Idempotent(
        key=lambda n: f"order-{n}",
        ttl=MAX_SECONDS,
        lease=MAX_SECONDS,
        store=real_clock_store,
        heartbeat=False,
    )
    def charge(n: int) -> int:
        calls.append(n)
        return n * 10

    assert charge(7) == 70
    assert charge(7) == 70  # replayed: ran once
    assert calls == [7]


@pytest.mark.redis
@pytest.mark.parametrize(
    "kw",
    [
        {"rate": 1e6},  # 1 µs apart
        {"rate": 1, "per": MAX_SECONDS},  # one per 1e9 s
        {"rate": 2, "per": 1e9, "burst": 1},
        {"rate": 1, "per": 1e6, "warmup": 1e8, "cold_factor": 100},
    ],
    ids=["fastest", "slowest", "slow-burst-1", "warm-up-extremes"],
)
def test_limiter_at_the_extremes_enforces_on_redis(
    real_clock_store: rs.RedisStore, kw: dict[str, Any]
) -> None:
    rl = rs.RateLimiter("extreme", store=real_clock_store, on_store_error="closed", **kw)
    burst = int(rl.params.burst)
    if burst > 1000:
        first = rl.try_acquire(cost=burst)
    else:
        first = rl.try_acquire()
        for _ in range(burst - 1):
            first = rl.try_acquire()
    assert first.allowed  # not refused by a store error ("closed" would deny)
    # half a burst more at once (the server clock moves: at 1e6/s a permit comes back every µs)
    over = rl.try_acquire(cost=max(1, burst // 2))
    assert not over.allowed  # enforced, not failing open
    assert 0 < over.retry_after < math.inf  # a real, finite retry_after


@pytest.mark.redis
def test_breaker_at_the_longest_durations_opens_and_stays_open_on_redis(
    real_clock_store: rs.RedisStore,
) -> None:
    b = rs.CircuitBreaker(
        "extreme",
        failure_count=1,
        window=MAX_SECONDS,
        open_for=MAX_SECONDS,
        half_open_timeout=MAX_SECONDS,
        store=real_clock_store,
        on_store_error="open",  # a store error would let the call through: detectable
    )
    with pytest.raises(ZeroDivisionError):
        b.call(lambda: 1 / 0)
    with pytest.raises(rs.CircuitOpenError) as info:
        b.call(lambda: "never")
    assert info.value.retry_after == pytest.approx(MAX_SECONDS, rel=1e-6)


@pytest.mark.redis
def test_breaker_with_the_shortest_window_works_on_redis(
    redis_store: tuple[rs.RedisStore, FakeClock],
) -> None:
    store, clock = redis_store
    b = rs.CircuitBreaker(
        "tiny",
        failure_count=1,
        window=MIN_SECONDS,
        buckets=1,
        open_for=MIN_SECONDS,
        store=store,
        clock=clock,
        on_store_error="open",
    )
    with pytest.raises(ZeroDivisionError):
        b.call(lambda: 1 / 0)
    assert b.state is rs.CircuitState.OPEN
    clock.advance(MIN_SECONDS)
    assert b.call(lambda: "probe") == "probe"
    assert b.metrics.state is rs.CircuitState.CLOSED
