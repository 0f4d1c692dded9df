"""Run the benchmarks: ``python -m benchmarks [--quick] [--only GROUP ...] [--json FILE]``.

Prints, per group, each library's per-call overhead over a bare call (median and min over the
repeats, in µs) and its ratio to ours (``x ours`` > 1 means slower than resilience). With
``--json FILE`` the results are also written as JSON (see :func:`to_json`); ``make bench``
writes ``benchmarks/results/micro.json``, from which ``python -m benchmarks.report`` generates
the tables of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
from collections import OrderedDict
from dataclasses import asdict
from typing import Any

from ._harness import Result, run_case
from ._registry import PEERS, all_cases, select
from ._results import run_info, write_results


def _fmt(v: float) -> str:
    return "   n/a" if math.isnan(v) else f"{v * 1e6:7.2f}"


def print_table(results: list[Result]) -> None:
    """Print results grouped, with ratios to the ``resilience`` case of each group."""
    groups: OrderedDict[str, list[Result]] = OrderedDict()
    for r in results:
        groups.setdefault(r.group, []).append(r)
    for group, rows in groups.items():
        ours = next((r for r in rows if r.name.startswith("resilience")), None)
        print(f"\n## {group}")
        print(f"| {'library':<28} | median µs | min µs | x ours | note")
        print(f"|{'-' * 30}|-----------|--------|--------|-----")
        for r in rows:
            ratio = ""
            if ours is not None and ours.overhead_median > 0 and not math.isnan(r.overhead_median):
                ratio = f"{r.overhead_median / ours.overhead_median:6.1f}"
            note = r.error or r.note
            print(
                f"| {r.name:<28} | {_fmt(r.overhead_median)}   | {_fmt(r.overhead_min)}| "
                f"{ratio:>6} | {note}"
            )


def to_json(results: list[Result], *, repeats: int, quick: bool) -> dict[str, Any]:
    """What ``--json`` writes: the run's settings and one entry per case (:class:`Result` fields,
    times in seconds)."""
    info = run_info(peers=PEERS, repeats=repeats, quick=quick)
    return {**info, "results": [asdict(r) for r in results]}


def write_json(path: str, doc: dict[str, Any]) -> None:
    """Write a :func:`to_json` document to ``path``."""
    write_results(path, {k: v for k, v in doc.items() if k != "results"}, doc["results"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--only", nargs="*", help="group prefixes, e.g. retry/success")
    parser.add_argument("--name", nargs="*", help="only these libraries")
    parser.add_argument("--quick", action="store_true", help="3 short repeats (smoke run)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    repeats, target, warmup = (3, 0.03, 0.05) if args.quick else (args.repeats, 0.1, 0.3)
    cases = select(all_cases(), args.only, args.name)
    print(
        f"# {len(cases)} cases; Python {platform.python_version()} on {platform.machine()};"
        f" {repeats} repeats; overhead = case - bare call"
    )
    results = []
    for case in cases:
        r = run_case(case, repeats=repeats, target=target, warmup=warmup)
        print(f"  {case.group:<34} {case.name:<28} {_fmt(r.overhead_median)} µs", file=sys.stderr)
        results.append(r)
    bare = [r.baseline_median for r in results if not math.isnan(r.baseline_median)]
    if bare:
        print(
            f"# baseline (bare call) median over cases: {sorted(bare)[len(bare) // 2] * 1e9:.0f} ns"
        )
    print_table(results)
    if args.json:
        write_json(args.json, to_json(results, repeats=repeats, quick=args.quick))
        print(f"# results written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
