"""A timeit-like harness: each case in its own subprocess, bare loop and case loop back to back.

A :class:`Case` is Python source: ``setup`` runs once and defines every name ``stmt`` uses; the
timed loop binds those names as locals (no global lookups). Each repeat times the baseline loop
(``bare()`` / ``await abare()`` unless the case says otherwise) and the case loop back to back;
the overhead of one call is ``(case - baseline) / n``. We report the median and the min over
repeats, and ratios to our own case in the same group.
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Case", "Result", "run_case", "measure"]

BARE_SETUP = """
def bare():
    return None

async def abare():
    return None
"""


@dataclass(frozen=True)
class Case:
    """One benchmark case.

    Attributes:
        group: what is compared, e.g. ``"retry/success/sync"``.
        name: who, e.g. ``"resilience"`` or ``"tenacity"``; ``"resilience"`` is the ratio base.
        setup: source run once; ``bare``/``abare`` are predefined.
        stmt: the timed statement (may span lines; ``await`` allowed when ``is_async``).
        is_async: run the loop in an ``async def`` on one event loop.
        baseline: the statement whose cost is subtracted (default: a bare call).
        note: shown next to the result (configuration details).
    """

    group: str
    name: str
    setup: str
    stmt: str
    is_async: bool = False
    baseline: str | None = None
    note: str = ""

    def base_stmt(self) -> str:
        if self.baseline is not None:
            return self.baseline
        return "await abare()" if self.is_async else "bare()"


@dataclass
class Result:
    """Per-call overhead over the baseline, in seconds, plus the baseline itself."""

    group: str
    name: str
    overhead_median: float
    overhead_min: float
    baseline_median: float
    samples: list[float] = field(default_factory=list)
    note: str = ""
    error: str | None = None


def _indent(src: str, n: int) -> str:
    pad = " " * n
    return "\n".join(pad + line for line in src.strip("\n").splitlines())


def _build(case: Case, ns: dict[str, Any]) -> tuple[Any, Any]:
    names = [k for k in ns if not k.startswith("__")]
    params = ", ".join(["_n"] + [f"{k}={k}" for k in names])
    kw = "async def" if case.is_async else "def"
    src = (
        f"def _factory({', '.join(names)}):\n"
        f"    {kw} _case({params}):\n"
        f"        for _ in range(_n):\n{_indent(case.stmt, 12)}\n"
        f"    {kw} _base({params}):\n"
        f"        for _ in range(_n):\n{_indent(case.base_stmt(), 12)}\n"
        f"    return _case, _base\n"
    )
    code: dict[str, Any] = {}
    exec(compile(src, f"<bench {case.group} {case.name}>", "exec"), ns, code)
    return code["_factory"](*[ns[k] for k in names])  # type: ignore[no-any-return]


def measure(case: Case, *, repeats: int = 7, target: float = 0.1, warmup: float = 0.3) -> Result:
    """Measure one case in this process."""
    ns: dict[str, Any] = {}
    exec(compile(BARE_SETUP + case.setup, f"<setup {case.name}>", "exec"), ns)
    case_loop, base_loop = _build(case, ns)
    loop = None
    if case.is_async:
        import asyncio

        loop = asyncio.new_event_loop()

        def run(fn: Any, n: int) -> float:
            assert loop is not None
            t0 = time.perf_counter()
            loop.run_until_complete(fn(n))
            return time.perf_counter() - t0
    else:

        def run(fn: Any, n: int) -> float:
            t0 = time.perf_counter()
            fn(n)
            return time.perf_counter() - t0

    # calibrate n so one sample of the case loop lasts about `target` seconds
    n = 100
    while True:
        dt = run(case_loop, n)
        if dt > target / 4 or n > 10_000_000:
            break
        n *= 4
    n = max(100, int(n * target / max(dt, 1e-9)))
    t_end = time.perf_counter() + warmup
    while time.perf_counter() < t_end:
        run(case_loop, max(1, n // 10))
    overheads, bases = [], []
    for _ in range(repeats):
        gc.collect()
        b = run(base_loop, n)
        gc.collect()
        c = run(case_loop, n)
        overheads.append((c - b) / n)
        bases.append(b / n)
    if loop is not None:
        loop.close()
    return Result(
        case.group,
        case.name,
        statistics.median(overheads),
        min(overheads),
        statistics.median(bases),
        overheads,
        case.note,
    )


def run_case(case: Case, *, repeats: int, target: float, warmup: float) -> Result:
    """Measure one case in a fresh subprocess (so peers' background threads cannot interfere)."""
    payload = json.dumps(
        {"case": asdict(case), "repeats": repeats, "target": target, "warmup": warmup}
    )
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks._worker"],
        input=payload,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        return Result(
            case.group,
            case.name,
            float("nan"),
            float("nan"),
            float("nan"),
            [],
            case.note,
            error=err,
        )
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return Result(**data)
