"""Hedge: tail latency and extra load of hedged calls, on virtual time with real policy objects.

Every attempt's latency is drawn independently: log-normal (median ``--median`` ms, sigma
``--sigma``) for most, ``--slow-ms`` for a ``--slow`` fraction of them (a stalled replica, a GC
pause). ``--calls`` calls arrive one after another on the virtual-time loop of
:mod:`resilience.simulate` (a :class:`~resilience.simulate.SimClock`), each through one of:

* *no hedge*: the call alone;
* *fixed delay*: ``rs.Hedge(delay=--fixed-ms)``;
* *observed p95*: ``rs.Hedge(delay=rs.Hedge.percentile(95, ...))`` with a
  ``rs.RetryBudget(ratio=--budget)`` paying for the hedges.

It reports p50 / p99 / p99.9 of the call latency (virtual ms) and the extra attempts sent per
call (``--json FILE`` also writes them: ``benchmarks/results/hedge.json`` feeds the hedging
table of ``docs/benchmarks.md``). The same seed gives the same numbers on every machine.

Usage::

    python -m benchmarks.bench_hedge [--calls 20000] [--seed 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Callable
from typing import Any

import resilience as rs
from resilience.simulate import SimClock, run_virtual

from ._results import run_info, write_results


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def run_case(
    name: str,
    make: Callable[[SimClock], rs.Policy | None],
    *,
    calls: int,
    seed: int,
    median: float,
    sigma: float,
    slow: float,
    slow_s: float,
) -> dict[str, Any]:
    """``calls`` calls through the policy ``make(clock)`` builds (``None``: no policy)."""
    clock = SimClock()
    rnd = random.Random(seed)
    policy = make(clock)
    attempts = 0

    async def attempt() -> str:
        nonlocal attempts
        attempts += 1
        latency = slow_s if rnd.random() < slow else rnd.lognormvariate(math.log(median), sigma)
        await clock.asleep(latency)
        return "ok"

    async def main() -> list[float]:
        call = attempt if policy is None else policy.wrap(attempt, operation="GET /item")
        out = []
        for _ in range(calls):
            start = clock.monotonic()
            await call()
            out.append(clock.monotonic() - start)
        return out

    latencies = run_virtual(main(), clock)
    return {
        "name": name,
        "calls": calls,
        "p50_ms": _percentile(latencies, 50) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
        "p999_ms": _percentile(latencies, 99.9) * 1000,
        "extra_calls": (attempts - calls) / calls,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--median", type=float, default=10.0, help="ms, log-normal median")
    ap.add_argument("--sigma", type=float, default=0.5)
    ap.add_argument("--slow", type=float, default=0.05, help="fraction of 1 s attempts")
    ap.add_argument("--slow-ms", type=float, default=1000.0)
    ap.add_argument("--fixed-ms", type=float, default=50.0)
    ap.add_argument("--budget", type=float, default=0.1, help="RetryBudget ratio of p95 case")
    ap.add_argument("--json", help="also write the results to this file (benchmarks.report)")
    args = ap.parse_args(argv)
    shape = {
        "calls": args.calls,
        "seed": args.seed,
        "median": args.median / 1000,
        "sigma": args.sigma,
        "slow": args.slow,
        "slow_s": args.slow_ms / 1000,
    }

    def fixed(clock: SimClock) -> rs.Policy:
        return rs.Hedge(delay=args.fixed_ms / 1000, clock=clock)

    def observed(clock: SimClock) -> rs.Policy:
        budget = rs.RetryBudget(ratio=args.budget, min_per_second=0, clock=clock)
        p95 = rs.Hedge.percentile(95, window=1000, min_samples=100, fallback=args.fixed_ms / 1000)
        return rs.Hedge(delay=p95, budget=budget, clock=clock)

    cases: list[tuple[str, Callable[[SimClock], rs.Policy | None]]] = [
        ("no hedge", lambda clock: None),
        ("fixed delay", fixed),
        ("observed p95", observed),
    ]
    rows = [run_case(name, make, **shape) for name, make in cases]
    print(f"Python {sys.version.split()[0]}; {args.calls:,} calls, seed {args.seed}")
    print(f"{'case':<14}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'extra':>8}")
    for r in rows:
        print(
            f"{r['name']:<14}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['p999_ms']:>10.1f}"
            f"{r['extra_calls']:>8.1%}"
        )
    if args.json:
        settings = {
            "calls": args.calls,
            "seed": args.seed,
            "median": args.median,
            "sigma": args.sigma,
            "slow": args.slow,
            "slow-ms": args.slow_ms,
            "fixed-ms": args.fixed_ms,
            "budget": args.budget,
        }
        info = run_info(**settings)  # named as the flags are
        write_results(args.json, info, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
