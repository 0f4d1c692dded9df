"""The storefront demo's short mode runs end to end (real service processes on loopback, ~35 s
each): in memory with one order worker, and with two order workers sharing state in Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ..redis_servers import RedisServer

pytestmark = pytest.mark.slow  # ~35 s each; skip locally with `pytest -m "not slow"`

ROOT = Path(__file__).resolve().parent.parent.parent


def run_demo(tmp_path: Path, *args: str) -> tuple[str, dict[str, Any]]:
    """Run ``--short`` with ``args``; its stdout and the numbers it wrote as JSON."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    numbers = tmp_path / "numbers.json"
    command = [sys.executable, "-m", "examples.storefront", "--short", "--no-live"]
    out = subprocess.run(
        [*command, *args, "--json", str(numbers)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "=== summary" in out.stdout
    runs: dict[str, Any] = json.loads(numbers.read_text())
    return out.stdout, runs


def test_storefront_short_mode(tmp_path: Path) -> None:
    stdout, runs = run_demo(tmp_path)
    assert "store: in-memory (each process its own); order-service workers: 1" in stdout
    without, with_ = runs["without policies"], runs["with policies"]
    assert with_["duplicate_charges"] == 0  # Idempotency-Key end to end: nobody charged twice
    assert without["duplicate_charges"] > 0  # the naive service charges retried orders again
    assert with_["p99_ms"] < without["p99_ms"]  # timeouts, breaker and shedding cut the tail
    assert with_["service_retries"] > 0
    assert without["orders"] > 100
    assert with_["orders"] > 100
    for run in (without, with_):  # every order has exactly one outcome
        assert run["success"] + run["degraded"] + run["shed"] + run["failed"] == run["orders"]
    assert with_["store"] == "memory"
    assert with_["workers"] == 1
    assert with_["lost_answers"] == 0  # the default run is unchanged: no balancer faults
    notified = runs["merchant notifications"]  # through rs.delivery.Outbox, after the runs
    assert notified["notifications"] > 0
    assert notified["dead while down"] > 0  # the merchant was down for the second half
    assert notified["delivered after requeue"] == notified["dead while down"]
    assert notified["all delivered"] is True
    assert notified["events at the merchant"] == notified["notifications"]  # each once


def test_storefront_short_mode_with_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    stdout, runs = run_demo(tmp_path, "--redis", redis_server.url, "--workers", "2")
    assert f"store: redis ({redis_server.url}, key prefix storefront-" in stdout
    assert "order-service workers: 2" in stdout
    without, with_ = runs["without policies"], runs["with policies"]
    assert with_["store"] == "redis"
    assert with_["workers"] == 2
    # round robin per request: both workers served orders
    assert len(with_["orders_by_worker"]) == 2
    assert all(n > 0 for n in with_["orders_by_worker"])
    assert sum(with_["orders_by_worker"]) >= with_["success"] + with_["degraded"]
    assert with_["duplicate_charges"] == 0
    assert without["duplicate_charges"] > 0
    # a retried order that was done is replayed from Redis by whichever worker it reaches,
    # never run again (the balancer lost some answers, so such retries happened)
    assert with_["lost_answers"] > 0
    assert with_["orders_completed_twice"] == 0
    assert with_["breaker_transitions"] > 0
    for run in (without, with_):
        assert run["success"] + run["degraded"] + run["shed"] + run["failed"] == run["orders"]
    assert runs["merchant notifications"]["all delivered"] is True  # the outbox on Redis
    # the demo deletes its keys at the end
    assert redis_server.cli("--scan", "--pattern", "storefront-*") == ""
