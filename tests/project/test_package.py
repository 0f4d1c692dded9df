"""Packaging: exports, import weight, typing marker, examples run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import resilience as rs

ROOT = Path(__file__).resolve().parent.parent.parent


def test_all_is_sorted_and_complete() -> None:
    assert rs.__all__ == sorted(rs.__all__)
    for name in rs.__all__:
        assert hasattr(rs, name), name


def test_api_contract_names_exist() -> None:
    for name in [
        "Timeout",
        "Retry",
        "Fallback",
        "Pipeline",
        "RetryBudget",
        "MemoryStore",
        "ResilienceError",
        "ConfigurationError",
        "RejectedError",
        "CircuitOpenError",
        "RateLimitedError",
        "BulkheadFullError",
        "IdempotencyConflictError",
        "IdempotencyInProgressError",
        "IdempotencyKeyReusedError",
        "TimeoutExceededError",
        "StoreError",
    ]:
        assert hasattr(rs, name), name
    for name in ["constant", "exponential", "decorrelated", "schedule"]:
        assert callable(getattr(rs.backoff, name))
    assert callable(rs.testing.FakeClock)
    assert callable(rs.instrumentation.OpenTelemetry)


def test_error_hierarchy() -> None:
    assert issubclass(rs.ConfigurationError, ValueError)
    assert issubclass(rs.TimeoutExceededError, TimeoutError)
    for cls in (
        rs.CircuitOpenError,
        rs.RateLimitedError,
        rs.BulkheadFullError,
        rs.IdempotencyConflictError,
    ):
        assert issubclass(cls, rs.RejectedError)
    for cls in (rs.IdempotencyInProgressError, rs.IdempotencyKeyReusedError):
        assert issubclass(cls, rs.IdempotencyConflictError)
    err = rs.RateLimitedError(policy="api", retry_after=1.5)
    assert (err.policy, err.retry_after) == ("api", 1.5)


def test_import_is_light() -> None:
    code = (
        "import sys, resilience\n"
        "heavy = [m for m in ('asyncio', 'redis', 'grpc', 'httpx', 'opentelemetry')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_py_typed_marker() -> None:
    assert (ROOT / "resilience" / "py.typed").exists()


def test_demo_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    assert "the dependency saw" in out.stdout
