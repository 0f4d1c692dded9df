"""Every constructor, every parameter: each invalid value raises rs.ConfigurationError (never
another error), and each sweep baseline is valid.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
from resilience.testing import FakeClock

from .validation_support import uncalled_app

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
        lambda **kw: IdempotencyMiddleware(uncalled_app, **kw),
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
        lambda **kw: RateLimitMiddleware(
            uncalled_app, **{"limiter": rs.RateLimiter("r", rate=1), **kw}
        ),
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
        lambda **kw: ResilienceMiddleware(uncalled_app, **{"pipeline": rs.Timeout(1), **kw}),
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
