"""The adaptive throttle under overload: backend load with and without it, and its own cost.

``python -m benchmarks.bench_throttle [--instr] --json benchmarks/results/throttle.json``

**Load.** A simulated backend of capacity ``C`` calls per second (a token bucket refilled at
``C``/s holding at most ``C/10`` tokens) on a :class:`~resilience.testing.FakeClock`; a call
finding no token fails with an overload error, and costs the backend the same as a served one
(the point of throttling). Clients offer ``3 C`` calls per second, evenly spaced, for
``--seconds`` of fake time; the numbers are measured over the second half (the window has
filled). Without a throttle the backend receives ``3 C``; with one, about ``k C`` (its
equilibrium: the client sends ``k`` times what is accepted). The fleet rows run the same load
from three clients sharing one window through a store (a :class:`resilience.MemoryStore` here;
each call is the same single operation a :class:`resilience.RedisStore` runs as a script).

**Cost.** The cases of ``benchmarks/cases_throttle.py`` through the usual harness (µs per call
over a bare call; with ``--instr``, instructions per call under callgrind, as
``benchmarks.instr`` counts them).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from typing import Any

import resilience as rs
from resilience.testing import FakeClock

from . import cases_throttle
from ._harness import run_case
from ._results import run_info, write_results


class Overloaded(Exception):
    """The backend's refusal."""


class Backend:
    """A token bucket on the fake clock: ``capacity`` calls per second, ``capacity / 10`` burst."""

    def __init__(self, clock: FakeClock, capacity: float) -> None:
        self.clock = clock
        self.rate = capacity
        self.burst = capacity / 10
        self.tokens = self.burst
        self.last = clock.monotonic()
        self.received = self.served = 0

    def __call__(self) -> str:
        now = self.clock.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.received += 1
        if self.tokens < 1:
            raise Overloaded("503")
        self.tokens -= 1
        self.served += 1
        return "ok"


def simulate(
    k: float | None, *, capacity: int, overload: float, seconds: int, clients: int
) -> dict[str, Any]:
    """Offer ``overload * capacity`` calls per second; counts over the second half."""
    clock = FakeClock(start=0.0)
    backend = Backend(clock, capacity)
    store = rs.MemoryStore(clock=clock) if clients > 1 else None
    fns: list[Callable[[], str]] = []
    for i in range(clients):
        if k is None:
            fns.append(backend)
            continue
        throttle = rs.AdaptiveThrottle(
            "backend",
            k=k,
            window=60,
            on=Overloaded,
            store=store,
            clock=clock,
            random=random.Random(i),
        )
        fns.append(throttle(backend))
    step = 1.0 / (capacity * overload)
    calls = int(seconds * capacity * overload)
    half = calls // 2
    received0 = served0 = rejected = 0
    for n in range(calls):
        if n == half:
            received0, served0, rejected = backend.received, backend.served, 0
        try:
            fns[n % clients]()
        except Overloaded:
            pass
        except rs.ThrottledError:
            rejected += 1
        clock.advance(step)
    span = seconds - seconds / 2
    load = (backend.received - received0) / span
    served = (backend.served - served0) / span
    return {
        "group": "load",
        "name": "none" if k is None else f"k={k}" + (f", {clients} clients" if clients > 1 else ""),
        "k": k,
        "clients": clients,
        "capacity": capacity,
        "offered": capacity * overload,
        "backend_load": load,
        "load_over_capacity": load / capacity,
        "served": served,
        "throttled": rejected / span,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_throttle", description=__doc__
    )
    parser.add_argument("--capacity", type=int, default=100, help="backend calls per second")
    parser.add_argument("--overload", type=float, default=3.0, help="offered load / capacity")
    parser.add_argument("--seconds", type=int, default=600, help="simulated seconds")
    parser.add_argument("--instr", action="store_true", help="also count instructions")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    sim = {"capacity": args.capacity, "overload": args.overload, "seconds": args.seconds}
    print("| throttle | backend load / C | served / C | throttled / s |")
    print("|---|---:|---:|---:|")
    for k, clients in ((None, 1), (2.0, 1), (1.5, 1), (1.1, 1), (2.0, 3), (1.1, 3)):
        row = simulate(k, clients=clients, **sim)
        rows.append(row)
        print(
            f"| {row['name']} | {row['load_over_capacity']:.2f} | "
            f"{row['served'] / args.capacity:.2f} | {row['throttled']:.0f} |",
            flush=True,
        )
    for case in cases_throttle.CASES:
        res = run_case(case, repeats=7, target=0.1, warmup=0.3)
        row = {"group": case.group, "name": case.name, "seconds_per_call": res.overhead_median}
        if res.error:
            row["error"] = res.error
        if args.instr:
            from .instr import per_call

            row["instructions"] = per_call(case)
        rows.append(row)
        extra = f", {row['instructions'] / 1000:.1f} k instructions" if args.instr else ""
        print(f"{case.group}: {res.overhead_median * 1e6:.2f} µs{extra}", flush=True)
    if args.json:
        write_results(args.json, run_info(**sim, instr=args.instr), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
