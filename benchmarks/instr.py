"""Instruction counts per call under ``valgrind --tool=callgrind`` (deterministic, noise-free).

``python -m benchmarks.instr [--only GROUP ...] [--name LIB ...]`` runs each case's loop and its
baseline loop at two lengths under callgrind and reports
``((I(case, n2) - I(case, n1)) - (I(base, n2) - I(base, n1))) / (n2 - n1)``: the instructions a
call costs over a bare call, with interpreter start-up and imports cancelled out.
``--json FILE`` also writes the counts (``python -m benchmarks.report`` reads
``benchmarks/results/instr.json`` for the instruction rows of ``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict

from ._harness import BARE_SETUP, Case, _build
from ._registry import PEERS, all_cases, select
from ._results import run_info, write_results

N1, N2 = 2_000, 12_000


def _worker(spec: str, which: str, n: int) -> None:
    case = Case(**json.loads(spec))
    ns: dict[str, object] = {}
    exec(compile(BARE_SETUP + case.setup, "<setup>", "exec"), ns)
    case_loop, base_loop = _build(case, ns)
    fn = case_loop if which == "case" else base_loop
    if case.is_async:
        import asyncio

        loop = asyncio.new_event_loop()
        loop.run_until_complete(fn(200))  # warm caches the same way for both lengths
        loop.run_until_complete(fn(n))
        loop.close()
    else:
        fn(200)
        fn(n)


def _count(case: Case, which: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "benchmarks.instr",
            "--worker",
            json.dumps(asdict(case)),
            which,
            str(n),
        ]
        subprocess.run(
            cmd, check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0"}
        )
        with open(out) as f:
            text = f.read()
    m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if m is None:
        raise RuntimeError("no instruction total in callgrind output")
    return int(m.group(1))


def per_call(case: Case) -> float:
    """Instructions per call over the baseline."""
    c = _count(case, "case", N2) - _count(case, "case", N1)
    b = _count(case, "base", N2) - _count(case, "base", N1)
    return (c - b) / (N2 - N1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        _worker(argv[1], argv[2], int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instr", description=__doc__)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--name", nargs="*")
    parser.add_argument("--json", help="also write the counts to this file")
    args = parser.parse_args(argv)
    print("| group | library | instructions / call over bare |")
    print("|---|---|---:|")
    rows: list[dict[str, object]] = []
    for case in select(all_cases(), args.only, args.name):
        count: float | None = None
        error: str | None = None
        try:
            count = per_call(case)
            value = f"{count / 1000:.1f} k"
        except (subprocess.CalledProcessError, RuntimeError) as exc:
            error = value = f"error: {exc}"
        print(f"| {case.group} | {case.name} | {value} |", flush=True)
        rows.append({"group": case.group, "name": case.name, "instructions": count, "error": error})
    if args.json:
        write_results(args.json, run_info(peers=PEERS), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
