"""Chaos policies: per-call overhead over a bare call, off, on at rate 0, and injecting at rate 1.

Runs the cases of ``benchmarks/cases_chaos.py`` (each in a fresh subprocess, like
``python -m benchmarks``), and with ``valgrind`` installed counts their instructions per call
too (like ``python -m benchmarks.instr``), or takes them from ``--instr-json FILE``, the output
of ``python -m benchmarks.instr --only chaos --json FILE`` (valgrind is slow: count once, time
as often as you like). ``--json FILE`` writes the results: ``benchmarks/results/chaos.json``
feeds the chaos table of ``docs/benchmarks.md``.

Usage::

    python -m benchmarks.bench_chaos [--repeats 7] [--quick] [--no-instr | --instr-json FILE]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

from ._harness import run_case
from ._results import run_info, write_results
from .cases_chaos import CASES


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="3 short repeats (smoke run)")
    ap.add_argument("--no-instr", action="store_true", help="skip the valgrind counts")
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
    rows: list[dict[str, object]] = []
    for case in CASES:
        r = run_case(case, repeats=repeats, target=target, warmup=warmup)
        instructions = counted.get((case.group, case.name))
        if count:
            from .instr import per_call

            try:
                instructions = per_call(case)
            except (subprocess.CalledProcessError, RuntimeError):
                instructions = None
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
