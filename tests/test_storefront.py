"""The storefront demo's short mode runs end to end (real service processes on loopback, ~35 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_storefront_short_mode(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    numbers = tmp_path / "numbers.json"
    out = subprocess.run(
        [sys.executable, "-m", "examples.storefront", "--short", "--no-live", "--json", numbers],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "=== summary" in out.stdout
    runs = json.loads(numbers.read_text())
    without, with_ = runs["without policies"], runs["with policies"]
    assert with_["duplicate_charges"] == 0  # Idempotency-Key end to end: nobody charged twice
    assert without["duplicate_charges"] > 0  # the naive service charges retried orders again
    assert with_["p99_ms"] < without["p99_ms"]  # timeouts, breaker and shedding cut the tail
    assert with_["service_retries"] > 0
    assert without["orders"] > 100
    assert with_["orders"] > 100
    for run in (without, with_):  # every order has exactly one outcome
        assert run["success"] + run["degraded"] + run["shed"] + run["failed"] == run["orders"]
