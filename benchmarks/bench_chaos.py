"""Chaos policies: per-call overhead over a bare call, off, on at rate 0, and injecting at rate 1.

Runs the cases of ``benchmarks/cases_chaos.py`` (each in a fresh subprocess, like
``python -m benchmarks``), and with ``valgrind`` installed counts their instructions per call
too, as ``python -m benchmarks.instr`` does but counting each side's bare-call baseline once
(``--instr-sides sync`` counts the sync cases only: valgrind is slow), or takes the counts
from ``--instr-json FILE``, the output of ``python -m benchmarks.instr --only chaos --json
FILE``. ``--json FILE`` writes the results: ``benchmarks/results/chaos.json``
feeds the chaos table of ``docs/benchmarks.md``.

Usage::

    python -m benchmarks.bench_chaos [--repeats 7] [--quick]
        [--no-instr | --instr-json FILE | --instr-sides sync async] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

from ._harness import Case, run_case
from ._results import run_info, write_results
from .cases_chaos import CASES


def _count_all(cases: list[Case], jobs: int) -> dict[tuple[str, str], float | None]:
    """Instructions per call over the bare call, under valgrind (``jobs`` runs at once: the
    counts do not depend on the load); each side's baseline (the bare loop, the same for every
    case of a side) counted once."""
    from concurrent.futures import ThreadPoolExecutor

    from .instr import N1, N2, _count

    def delta(case: Case, which: str) -> int | None:
        try:
            return _count(case, which, N2) - _count(case, which, N1)
        except (subprocess.CalledProcessError, RuntimeError):
            return None

    sides = {case.is_async: case for case in cases}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        base_runs = {side: pool.submit(delta, case, "base") for side, case in sides.items()}
        case_runs = [(case, pool.submit(delta, case, "case")) for case in cases]
        bases = {side: run.result() for side, run in base_runs.items()}
        out: dict[tuple[str, str], float | None] = {}
        for case, run in case_runs:
            c, b = run.result(), bases[case.is_async]
            out[(case.group, case.name)] = None if c is None or b is None else (c - b) / (N2 - N1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="3 short repeats (smoke run)")
    ap.add_argument("--no-instr", action="store_true", help="skip the valgrind counts")
    ap.add_argument(
        "--instr-sides", nargs="+", choices=("sync", "async"), default=["sync", "async"]
    )
    ap.add_argument("--instr-jobs", type=int, default=4, help="valgrind runs at once")
    ap.add_argument("--instr-json", help="instruction counts from a benchmarks.instr run")
    ap.add_argument("--json", help="also write the results to this file (benchmarks.report)")
    args = ap.parse_args(argv)
    repeats, target, warmup = (3, 0.03, 0.05) if args.quick else (args.repeats, 0.1, 0.3)
    counted: dict[tuple[str, str], float | None] = {}
    if args.instr_json:
        with open(args.instr_json, encoding="utf-8") as f:
            for row in json.load(f)["results"]:
                counted[(row["group"], row["name"])] = row.get("instructions")
    count = not args.no_instr and not counted and shutil.which("valgrind") is not None
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; overhead = case - bare call")
    print(f"{'case':36} {'ns/call':>9} {'bare ns':>9} {'instr':>9}")
    results = [run_case(case, repeats=repeats, target=target, warmup=warmup) for case in CASES]
    if count:
        chosen = [c for c in CASES if c.group.split("/")[1] in args.instr_sides]
        counted.update(_count_all(chosen, args.instr_jobs))
    rows: list[dict[str, object]] = []
    for case, r in zip(CASES, results, strict=True):
        instructions = counted.get((case.group, case.name))
        label = f"{case.group} {case.name}"
        shown = "-" if instructions is None else f"{instructions:.0f}"
        print(
            f"{label:36} {r.overhead_median * 1e9:9.0f} {r.baseline_median * 1e9:9.0f} {shown:>9}",
            flush=True,
        )
        rows.append(
            {
                "group": case.group,
                "name": case.name,
                "overhead_median": r.overhead_median,
                "overhead_min": r.overhead_min,
                "baseline_median": r.baseline_median,
                "instructions": instructions,
                "note": case.note,
                "error": r.error,
            }
        )
    if args.json:
        write_results(args.json, run_info(repeats=repeats, quick=args.quick), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
