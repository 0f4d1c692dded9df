"""Hot keys: a keyed rate limiter's full table under a flood of distinct keys.

A scraper rotates IDs: ``--flood`` distinct keys, one decision each at full speed, each
spending its ID's whole burst (``cost=burst``: its bucket owes permits for ``burst / rate``
seconds). On a fake clock the flood arrives at ``--flood-rate`` keys a second, so the table
(``max_keys``, the default 100,000) is full after its first second and turns over ~9 times.
From the first second on, ``--steady`` keys (legitimate users, another prefix) each ask every
10 ms, far above their rate. Their *entitled* count is what the same calls get from a limiter
whose table never fills (an oracle run on the same fake instants).

Per policy (``on_full="evict"``, the default; ``"deny"``, the old policy; ``"evict"`` with a
family cap of half the table for the scraper's prefix) it reports: decisions per second of
wall time under the flood (flood and steady decisions over the loop's time, the fake clock's
``advance`` included), the steady keys' admitted count next to their entitled count (total
and the worst key), the flood keys admitted, the table's size at the end, the buckets evicted
while they still owed permits, and the table's memory (``tracemalloc``: the bytes a second
run allocates filling the table with ``max_keys`` flood keys, and that over the buckets it
then holds). A run stops after ``--max-seconds`` of wall
time (the rows say how far it got: ``flood_done``).

Usage::

    python -m benchmarks.bench_hotkeys [--flood 1000000] [--steady 100] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from typing import Any

from ._results import run_info, write_results

RATE, BURST = 1.0, 5.0  # a drained bucket is full again after 5 s
POLICIES = ("evict", "deny", "evict + family cap")


def _limiter(policy: str, clock: Any, max_keys: int) -> Any:
    import resilience as rs

    kw: dict[str, Any] = {"max_keys": max_keys}
    if policy == "deny":
        kw["on_full"] = "deny"
    elif policy == "evict + family cap":
        kw.update(family=lambda key: key.partition(":")[0], max_keys_per_family=max_keys // 2)
    return rs.RateLimiter("hot", rate=RATE, burst=BURST, clock=clock, **kw)


def _run(policy: str, flood: int, steady: int, rate: float, max_keys: int, cap: float) -> Any:
    from resilience.testing import FakeClock

    clock = FakeClock()
    lim = _limiter(policy, clock, max_keys)
    users = [f"user:{i}" for i in range(steady)]
    scrapers = [f"scraper:{i}" for i in range(flood)]
    dt = 1.0 / rate
    every = max(1, int(0.01 * rate))  # the steady keys ask every 10 ms of fake time
    join = int(rate)  # from the first second on
    try_acquire, advance, wall = lim.try_acquire, clock.advance, time.perf_counter
    admitted = dict.fromkeys(users, 0)
    flood_ok = decisions = done = 0
    asks: list[int] = []  # flood indices at which the steady keys asked
    t0 = wall()
    for i in range(flood):
        flood_ok += try_acquire(scrapers[i], BURST).allowed
        if i % every == 0 and i >= join:
            asks.append(i)
            for key in users:
                admitted[key] += try_acquire(key).allowed
            decisions += steady
            if i % (every * 100) == 0 and wall() - t0 > cap:
                done = i + 1
                break
        advance(dt)
    else:
        done = flood
    elapsed = wall() - t0
    decisions += done
    # the oracle: the same steady calls at the same fake instants, on a table that never fills
    oclock = FakeClock()
    oracle = _limiter("evict", oclock, 10 * max(steady, 1))
    entitled = dict.fromkeys(users, 0)
    at = 0
    for i in asks:
        oclock.advance((i - at) * dt)
        at = i
        for key in users:
            entitled[key] += oracle.try_acquire(key).allowed
    table = lim._table
    return {
        "decisions_per_second": decisions / elapsed,
        "seconds": elapsed,
        "flood_done": done,
        "fake_seconds": done * dt,
        "steady_admitted": sum(admitted.values()),
        "steady_entitled": sum(entitled.values()),
        "steady_worst": min(admitted[k] - entitled[k] for k in users) if users else 0,
        "flood_admitted": flood_ok,
        "table_size": len(table),
        "evicted_owing": lim.evictions,
    }


def _memory(policy: str, max_keys: int, rate: float) -> tuple[int, int]:
    """``(bytes, buckets)`` of a full table: what filling it allocates (the limiter, its
    table, the keys' entries), and how many buckets it then holds."""
    from resilience.testing import FakeClock

    clock = FakeClock()
    keys = [f"scraper:{i}" for i in range(max_keys)]
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    lim = _limiter(policy, clock, max_keys)
    for key in keys:
        lim.try_acquire(key, BURST)
        clock.advance(1.0 / rate)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return used, len(lim._table)


def run(flood: int, steady: int, rate: float, max_keys: int, cap: float) -> list[dict[str, Any]]:
    rows = []
    head = f"{'policy':20} {'decisions/s':>12} {'flood done':>10} {'steady':>15} {'worst':>6}"
    print(f"{head} {'table':>7} {'evicted':>8} {'B/bucket':>8}")
    for policy in POLICIES:
        row: dict[str, Any] = {"name": policy, **_run(policy, flood, steady, rate, max_keys, cap)}
        used, size = _memory(policy, max_keys, rate)
        row["table_bytes"] = used
        row["bytes_per_bucket"] = used / max(1, size)
        rows.append(row)
        steady_cell = f"{row['steady_admitted']}/{row['steady_entitled']}"
        print(
            f"{policy:20} {row['decisions_per_second']:12,.0f} {row['flood_done']:10,} "
            f"{steady_cell:>15} {row['steady_worst']:6} {row['table_size']:7,} "
            f"{row['evicted_owing']:8,} {row['bytes_per_bucket']:8.0f}",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--flood", type=int, default=1_000_000, help="distinct flood keys")
    ap.add_argument("--steady", type=int, default=100, help="steady keys")
    ap.add_argument("--flood-rate", type=float, default=100_000, help="flood keys per fake s")
    ap.add_argument("--max-keys", type=int, default=100_000)
    ap.add_argument("--max-seconds", type=float, default=60.0, help="wall-time cap per run")
    ap.add_argument("--json", help="also write the results to this file (benchmarks.report)")
    args = ap.parse_args(argv)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    rows = run(args.flood, args.steady, args.flood_rate, args.max_keys, args.max_seconds)
    if args.json:
        info = run_info(
            flood=args.flood,
            steady=args.steady,
            flood_rate=args.flood_rate,
            max_keys=args.max_keys,
            max_seconds=args.max_seconds,
        )
        write_results(args.json, info, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
