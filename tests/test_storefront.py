"""The storefront demo's short mode runs end to end (real servers on loopback, ~17 s)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_storefront_short_mode() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "examples.storefront", "--short", "--no-live"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "=== summary" in text
    rows = {
        line[:22].strip(): line[22:].split()
        for line in text.split("=== summary", 1)[1].splitlines()[1:]
        if line[:22].strip()
    }
    without, with_ = rows["duplicate charges"]
    assert int(with_) == 0  # Idempotency-Key end to end: nobody is charged twice
    assert int(without) > 0  # the naive service charges retried orders again
    assert int(rows["service retries"][1]) > 0
    assert int(rows["orders"][0]) > 100
