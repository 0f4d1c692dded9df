"""rs.delivery.Outbox on one redis-server: deliveries per second, round trips, redelivery delay.

On a ``redis-server`` this script starts on a free loopback port (stopped at the end), each
round puts ``--deliveries`` deliveries (a fresh outbox name per case and round), then times
how long the workers take to deliver them all, with a handler that returns at once:

* ``1 worker, sync``: ``outbox.run_once(handler)`` in this process (one claim and one
  acknowledgement per delivery);
* ``1 worker, async, concurrency 8``: ``await outbox.arun_once(handler, concurrency=8)`` (one
  claim per 8 deliveries, the acknowledgements concurrent);
* ``4 worker processes, sync``: four processes, each calling ``run_once`` until nothing is due
  (timed from the moment they are told to start until the last one exits; each delivery is
  counted once across them).

Reported per case: the median deliveries per second over ``--rounds`` interleaved rounds and
the round trips per delivery (the server's ``INFO commandstats`` calls of ``EVALSHA`` and
``EVAL``, the only commands the outbox sends, over the delivery phase, divided by the
deliveries). Then the **redelivery delay after kill -9**: a worker process claims a delivery
(``lease`` 1 s) and is killed with SIGKILL mid-handler; a worker loop in this process
(``run(..., poll=0.1)``) gets it again; the delay from the claim to the redelivery is expected
between the lease and the lease plus one poll interval (median of ``--kills`` drills).

``--json FILE`` writes them (``benchmarks/results/outbox.json`` feeds the outbox table of
``docs/benchmarks.md``).

Usage::

    python -m benchmarks.bench_outbox [--deliveries 2000] [--rounds 3] [--kills 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ._results import run_info, write_results
from .bench_idempotency import _redis_server

CASES = ("1 worker, sync", "1 worker, async, concurrency 8", "4 worker processes, sync")
PROCESSES = 4
LEASE = 1.0
POLL = 0.1
ROOT = Path(__file__).resolve().parent.parent

WORKER = """
import sys, resilience as rs
store = rs.RedisStore.from_url(sys.argv[1], prefix="bench", socket_timeout=2.0)
outbox = rs.delivery.Outbox(sys.argv[2], store=store, lease=60)
outbox.status("warm")  # connect before the start
print("ready", flush=True)
sys.stdin.readline()
done = 0
while True:
    n = outbox.run_once(lambda delivery: None)
    if not n:
        break
    done += n
print(done, flush=True)
"""

CLAIMER = """
import sys, resilience as rs
store = rs.RedisStore.from_url(sys.argv[1], prefix="bench", socket_timeout=2.0)
outbox = rs.delivery.Outbox(sys.argv[2], store=store, lease=float(sys.argv[3]))
def handler(delivery):
    print("claimed", flush=True)
    sys.stdin.read()
outbox.run_once(handler)
"""


def _round_trips(client: Any) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _processes(url: str, name: str) -> tuple[float, int]:
    """Four worker processes deliver the outbox ``name``: (seconds, deliveries)."""
    children = [_spawn(WORKER, url, name) for _ in range(PROCESSES)]
    for child in children:  # imported and connected: only the delivery is timed
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    t0 = time.perf_counter()
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    done = 0
    for child in children:
        assert child.stdout is not None
        done += int(child.stdout.readline())
        child.wait()
    seconds = time.perf_counter() - t0
    for child in children:
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()
    return seconds, done


def _redelivery(url: str, store: Any, name: str) -> float:
    """Seconds from a killed worker's claim to the delivery's second claim."""
    import resilience as rs

    outbox = rs.delivery.Outbox(name, store=store, lease=LEASE)
    outbox.put("evt", "x")
    child = _spawn(CLAIMER, url, name, str(LEASE))
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "claimed"
        claimed = time.monotonic()
        child.kill()  # kill -9 mid-delivery
        child.wait()
        stop = threading.Event()
        got: list[float] = []

        def handler(delivery: Any) -> None:
            got.append(time.monotonic())
            stop.set()

        outbox.run(handler, stop=stop, poll=POLL)
        return got[0] - claimed
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()


def run(deliveries: int, rounds: int, kills: int) -> tuple[list[dict[str, Any]], list[float]]:
    """Print and return one row per case, and the redelivery delays."""
    import redis

    import resilience as rs

    with _redis_server() as url:
        if url is None:
            raise SystemExit("bench_outbox needs redis-server and redis-py")
        client = redis.Redis.from_url(url)
        store = rs.RedisStore.from_url(url, prefix="bench", socket_timeout=2.0)
        names = (f"o{i}" for i in itertools.count())
        loop = asyncio.new_event_loop()
        rates: dict[str, list[float]] = {c: [] for c in CASES}
        trips: dict[str, list[float]] = {c: [] for c in CASES}

        async def nothing(delivery: Any) -> None:
            return None

        def one(case: str, n: int) -> None:
            name = next(names)
            outbox = rs.delivery.Outbox(name, store=store, lease=60)
            for i in range(n):
                outbox.put(f"evt-{i}", {"n": i})
            before = _round_trips(client)
            t0 = time.perf_counter()
            if case == CASES[0]:
                done = outbox.run_once(lambda delivery: None)
                seconds = time.perf_counter() - t0
            elif case == CASES[1]:
                done = loop.run_until_complete(outbox.arun_once(nothing, concurrency=8))
                seconds = time.perf_counter() - t0
            else:
                seconds, done = _processes(url, name)
            if done != n:
                raise SystemExit(f"{case}: {done} deliveries of {n}")
            rates[case].append(n / seconds)
            trips[case].append((_round_trips(client) - before) / n)

        for case in CASES:  # warm scripts, connections and caches
            one(case, 200)
        for case in CASES:
            rates[case].clear()
            trips[case].clear()
        for _ in range(rounds):
            for case in CASES:
                one(case, deliveries)
        delays = [_redelivery(url, store, next(names)) for _ in range(kills)]
        loop.run_until_complete(store.aclose())
        loop.close()
        store.close()
        client.close()
    rows = []
    print(f"{deliveries} deliveries per round, {rounds} interleaved rounds")
    print(f"{'case':34} {'deliveries/s':>12} {'trips':>6}")
    for case in CASES:
        row = {
            "name": case,
            "deliveries_per_second": statistics.median(rates[case]),
            "round_trips_per_delivery": statistics.median(trips[case]),
        }
        rows.append(row)
        print(
            f"{case:34} {row['deliveries_per_second']:12.0f} {row['round_trips_per_delivery']:6.3f}"
        )
    print(
        f"redelivery after kill -9 (lease {LEASE} s, poll {POLL} s): "
        + ", ".join(f"{d:.3f} s" for d in delays)
    )
    rows.append(
        {
            "name": "redelivery after kill -9",
            "lease": LEASE,
            "poll": POLL,
            "delay_median": statistics.median(delays),
            "delay_max": max(delays),
        }
    )
    return rows, delays


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--deliveries", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--json", help="also write the results to this file (benchmarks.report)")
    args = ap.parse_args(argv)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    rows, _ = run(args.deliveries, args.rounds, args.kills)
    if args.json:
        info = run_info(
            peers=("redis",), deliveries=args.deliveries, rounds=args.rounds, kills=args.kills
        )
        write_results(args.json, info, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
