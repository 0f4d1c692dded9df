"""rs.Lock next to redis-py's own ``Lock``: acquire and release latency on one redis-server.

On a ``redis-server`` this script starts on a free loopback port (stopped at the end), each
case holds a fresh key ``--holds`` times per round, timing the acquisition and the release of
each hold separately (``time.perf_counter``), in ``--rounds`` interleaved rounds:

* ``rs.Lock (sync)``: ``lock.hold(key)`` on a ``RedisStore`` (acquire: one ``EVALSHA``,
  which also returns the fence; release: one ``EVALSHA`` compare-and-free);
* ``rs.Lock (async)``: ``lock.ahold(key)`` on the same store's asyncio client;
* ``redis-py Lock``: ``client.lock(key, timeout=30)`` (acquire: ``SET NX PX``; release: one
  ``EVALSHA`` compare-and-delete).

Reported per case: p50 and p99 of each step (µs, over every hold of every round), holds per
second, and the round trips per hold (the server's ``INFO commandstats`` calls of ``EVALSHA``
and ``SET``, the only commands either lock sends, before and after each round). ``--json
FILE`` writes them (``benchmarks/results/lock.json`` feeds the lock table of
``docs/benchmarks.md``).

Usage::

    python -m benchmarks.bench_lock [--holds 2000] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from ._results import run_info, write_results
from .bench_idempotency import _redis_server

CASES = ("rs.Lock (sync)", "rs.Lock (async)", "redis-py Lock")


def _quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _round_trips(client: Any) -> int:
    """Commands sent by clients so far: ``EVALSHA`` and ``SET`` (the only top-level commands
    either lock sends; the commands a script runs inside are counted apart from its call)."""
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "set"))


def _sync_case(hold: Callable[[str], Any], keys: list[str]) -> tuple[list[float], list[float]]:
    acq: list[float] = []
    rel: list[float] = []
    clock = time.perf_counter
    for key in keys:
        cm = hold(key)
        t0 = clock()
        cm.__enter__()
        t1 = clock()
        cm.__exit__(None, None, None)
        t2 = clock()
        acq.append(t1 - t0)
        rel.append(t2 - t1)
    return acq, rel


async def _async_case(lock: Any, keys: list[str]) -> tuple[list[float], list[float]]:
    acq: list[float] = []
    rel: list[float] = []
    clock = time.perf_counter
    for key in keys:
        cm = lock.ahold(key)
        t0 = clock()
        await cm.__aenter__()
        t1 = clock()
        await cm.__aexit__(None, None, None)
        t2 = clock()
        acq.append(t1 - t0)
        rel.append(t2 - t1)
    return acq, rel


class _RedisPyHold:
    """``client.lock(key)`` shaped like ``lock.hold(key)``."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(self, key: str) -> Any:
        return self.client.lock(key, timeout=30)


def run(holds: int, rounds: int) -> list[dict[str, Any]]:
    """Print and return one row per case."""
    import redis

    import resilience as rs

    with _redis_server() as url:
        if url is None:
            raise SystemExit("bench_lock needs redis-server and redis-py")
        client = redis.Redis.from_url(url)
        store = rs.RedisStore.from_url(url, prefix="bench", socket_timeout=1)
        lock = rs.Lock("bench", store=store, ttl=30)
        peer = _RedisPyHold(client)
        fresh = (f"k{i}" for i in itertools.count())
        loop = asyncio.new_event_loop()
        samples: dict[str, tuple[list[float], list[float]]] = {c: ([], []) for c in CASES}
        per_hold: dict[str, list[float]] = {c: [] for c in CASES}
        wall: dict[str, list[float]] = {c: [] for c in CASES}

        def one(case: str, keys: list[str]) -> tuple[list[float], list[float]]:
            if case == "rs.Lock (sync)":
                return _sync_case(lock.hold, keys)
            if case == "rs.Lock (async)":
                return loop.run_until_complete(_async_case(lock, keys))
            return _sync_case(peer, keys)

        for case in CASES:  # warm scripts, connections and caches
            one(case, [next(fresh) for _ in range(200)])
        for _ in range(rounds):
            for case in CASES:
                keys = [next(fresh) for _ in range(holds)]
                before = _round_trips(client)
                t0 = time.perf_counter()
                acq, rel = one(case, keys)
                wall[case].append(time.perf_counter() - t0)
                per_hold[case].append((_round_trips(client) - before) / holds)
                samples[case][0].extend(acq)
                samples[case][1].extend(rel)
        loop.run_until_complete(store.aclose())
        loop.close()
        store.close()
        client.close()
    rows = []
    print(f"{holds} holds of a fresh key per round, {rounds} interleaved rounds")
    head = f"{'case':18} {'acq p50':>8} {'acq p99':>8} {'rel p50':>8} {'rel p99':>8}"
    print(f"{head} {'holds/s':>8} {'trips':>5}")
    for case in CASES:
        acq, rel = samples[case]
        row: dict[str, Any] = {
            "name": case,
            "acquire_p50": _quantile(acq, 0.5),
            "acquire_p99": _quantile(acq, 0.99),
            "release_p50": _quantile(rel, 0.5),
            "release_p99": _quantile(rel, 0.99),
            "holds_per_second": holds / statistics.median(wall[case]),
            "round_trips_per_hold": statistics.median(per_hold[case]),
        }
        rows.append(row)
        us = [row[k] * 1e6 for k in ("acquire_p50", "acquire_p99", "release_p50", "release_p99")]
        cells = " ".join(f"{v:8.1f}" for v in us)
        print(
            f"{case:18} {cells} {row['holds_per_second']:8.0f} {row['round_trips_per_hold']:5.2f}",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--holds", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="also write the results to this file (benchmarks.report)")
    args = ap.parse_args(argv)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    rows = run(args.holds, args.rounds)
    if args.json:
        info = run_info(peers=("redis",), holds=args.holds, rounds=args.rounds)
        write_results(args.json, info, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
