"""In-process per-call timings for small functions (the structured-field and problem+json
comparisons): every case checked against its expected result first, then timed in interleaved
rounds (so a slow moment of the machine hits every case alike), the median per call reported.

Example:
    >>> medians = interleaved({"noop": (lambda: 1, 1)}, calls=10, rounds=3)
    >>> list(medians), medians["noop"] >= 0
    (['noop'], True)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from ._results import run_info, write_results

__all__ = ["interleaved", "main"]

Cases = Mapping[str, tuple[Callable[[], object], object]]


def interleaved(cases: Cases, *, calls: int, rounds: int) -> dict[str, float]:
    """The median seconds per call of every case, the cases interleaved round by round."""
    for name, (fn, expected) in cases.items():
        got = fn()
        if got != expected:
            raise AssertionError(f"{name}: {got!r} != {expected!r}")
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (fn, _) in cases.items():
            loop = range(calls)
            t0 = time.perf_counter()
            for _ in loop:
                fn()
            samples[name].append((time.perf_counter() - t0) / calls)
    return {name: statistics.median(v) for name, v in samples.items()}


def main(
    argv: list[str] | None, *, doc: str | None, cases: Callable[[], Cases], peers: Sequence[str]
) -> int:
    """The command line of such a benchmark: ``--calls``, ``--rounds``, ``--json``."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    medians = interleaved(cases(), calls=args.calls, rounds=args.rounds)
    width = max(map(len, medians))
    for name, seconds in medians.items():
        print(f"{name:<{width}}  {seconds * 1e9:10.0f} ns/call")
    if args.json:
        rows = [{"name": name, "seconds_per_call": v} for name, v in medians.items()]
        info = run_info(peers=peers, calls=args.calls, rounds=args.rounds)
        write_results(args.json, info, rows)
    return 0
