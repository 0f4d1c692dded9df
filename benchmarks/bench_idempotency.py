"""Idempotent: per-call cost of a first run and of a replay, memory and Redis; eviction at scale.

``--mode calls`` (default): for the default memory store and for a ``RedisStore`` on a
``redis-server`` this script starts on a free loopback port (stopped at the end), times a sync
``Idempotent`` function (a trivial body) in interleaved rounds:

* *first run*: every call has a fresh key (claim, heartbeat registration, complete);
* *replay*: every call repeats one key (one claim that finds the stored result).

It reports the median µs per call over the rounds (``--json FILE`` also writes them:
``benchmarks/results/idempotency.json`` feeds the idempotency table of ``docs/benchmarks.md``).

``--mode evict``: ``--keys`` distinct keys (default 1,000,000) through one ``Idempotent`` with
the default store (``max_entries=10_000``): how many calls succeed, the per-call cost of the
first and of the last 10,000 calls, and the peak RSS (``resource.getrusage``) after the first
10,000 calls and at the end (``--json FILE`` writes them too:
``benchmarks/results/idempotency_evict.json`` feeds the eviction table).

Usage::

    python -m benchmarks.bench_idempotency [--mode calls|evict] [--calls 2000] [--rounds 3]
        [--keys 1000000] [--no-redis] [--json FILE]
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ._results import run_info, write_results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def _redis_server() -> Iterator[str | None]:
    """A redis-server we start and stop (None when the binary or redis-py is missing)."""
    binary = shutil.which("redis-server")
    try:
        import redis
    except ImportError:  # pragma: no cover - optional
        binary = None
    if binary is None:
        yield None
        return
    workdir = tempfile.mkdtemp(prefix="rs-bench-idem-")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", workdir, "--protected-mode", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()  # only the server this script started
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def _policy_fn(store: Any) -> Callable[[str], Any]:
    import resilience as rs

    @rs.Idempotent(key=lambda k: k, store=store)
    def op(k: str) -> int:
        return 1

    return op


def _time_calls(fn: Callable[[str], Any], keys: list[str]) -> float:
    t0 = time.perf_counter()
    for k in keys:
        fn(k)
    return (time.perf_counter() - t0) / len(keys)


def run_calls(calls: int, rounds: int, use_redis: bool) -> dict[str, float]:
    """Print and return the median seconds per call of each ``"<store>: <case>"``."""
    import resilience as rs

    with _redis_server() if use_redis else _no_server() as url:
        stores: dict[str, Callable[[], Any]] = {
            "memory": lambda: rs.MemoryStore(max_entries=10 * calls * (rounds + 1))
        }
        if url is not None:
            stores["redis"] = lambda: rs.RedisStore.from_url(url, prefix="bench", socket_timeout=1)
        fresh = (f"k{i}" for i in itertools.count())
        results: dict[str, list[float]] = {}
        for _ in range(rounds):
            for name, make in stores.items():
                op = _policy_fn(make())
                op("warm")
                for _ in range(200):
                    op(next(fresh))  # warm caches and connections
                first = _time_calls(op, [next(fresh) for _ in range(calls)])
                replay = _time_calls(op, ["warm"] * calls)
                results.setdefault(f"{name}: first run", []).append(first)
                results.setdefault(f"{name}: replay", []).append(replay)
        print(f"{calls} sync calls per round, median of {rounds} interleaved rounds")
        print(f"{'case':24} {'µs/call':>9}")
        medians = {name: statistics.median(samples) for name, samples in results.items()}
        for name, median in medians.items():
            print(f"{name:24} {median * 1e6:9.1f}", flush=True)
        return medians


@contextmanager
def _no_server() -> Iterator[None]:
    yield None


def _rss_mib() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run_evict(keys: int) -> dict[str, Any]:
    """Print and return the eviction run's counts, per-call costs (seconds) and peak RSS."""
    import resilience as rs

    @rs.Idempotent(key=lambda k: k)
    def op(k: str) -> int:
        return 1

    window = 10_000
    ok = failed = 0
    errors: dict[str, int] = {}
    first = last = 0.0
    rss_first = 0.0
    t_start = time.perf_counter()
    t0 = t_start
    for i in range(keys):
        if i == window:
            first = (time.perf_counter() - t0) / window
            rss_first = _rss_mib()
        if i == keys - window:
            t0 = time.perf_counter()
        try:
            op(f"key-{i}")
            ok += 1
        except Exception as exc:
            failed += 1
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
    last = (time.perf_counter() - t0) / window
    total = time.perf_counter() - t_start
    print(f"{keys:,} distinct keys through Idempotent (default store), {total:.1f} s")
    print(f"succeeded {ok:,}, failed {failed:,} {errors or ''}")
    print(f"first {window:,} calls: {first * 1e6:.1f} µs/call; last {window:,}: {last * 1e6:.1f}")
    print(f"ratio last/first: {last / first:.2f}")
    rss_end = _rss_mib()
    print(f"peak RSS after {window:,} calls: {rss_first:.1f} MiB; at the end: {rss_end:.1f} MiB")
    return {
        "name": "evict",
        "keys": keys,
        "succeeded": ok,
        "failed": failed,
        "errors": errors,
        "first_seconds_per_call": first,
        "last_seconds_per_call": last,
        "window": window,
        "rss_first_mib": rss_first,
        "rss_end_mib": rss_end,
        "seconds": total,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--mode", choices=("calls", "evict"), default="calls")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--no-redis", action="store_true")
    ap.add_argument("--json", help="also write the results to this file (benchmarks.report)")
    args = ap.parse_args(argv)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    if args.mode == "evict":
        row = run_evict(args.keys)
        if args.json:
            write_results(args.json, run_info(mode="evict", keys=args.keys), [row])
    else:
        medians = run_calls(args.calls, args.rounds, not args.no_redis)
        if args.json:
            rows = [{"name": name, "seconds_per_call": v} for name, v in medians.items()]
            info = run_info(peers=("redis",), calls=args.calls, rounds=args.rounds)
            write_results(args.json, info, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
