"""Shared rate limiting and circuit breaking on a local Redis: decisions/s and round trips.

Starts its own ``redis-server`` on a free loopback port (stopped at the end), then for each
limiter and for 1 and 4 client processes (spawned) runs decisions against one shared key for a
fixed time, in interleaved rounds (each round runs every variant once, so a noisy neighbour
hits them alike), and reports the medians of decisions/s (summed over processes) and of the
per-round ratio to the floor, and the
round trips per decision (requests the server read, ``total_reads_processed`` of ``INFO stats``).

Compared, in one run: resilience (``RateLimiter`` + ``RedisStore``, one EVALSHA per decision),
the shared circuit breaker (``CircuitBreaker(store=RedisStore)``, successful calls in the closed
state: one call is one decision), the shared retry budget (``RetryBudget(store=RedisStore)``: a
call's deposit and one retry decision, one round trip),
limits (``RedisStorage``, fixed window and sliding window counter), pyrate-limiter
(``RedisBucket``) and throttled-py (``RedisStore``, GCRA), plus the floor: a raw ``EVALSHA`` of a
trivial script (``return 1``) from the same redis-py client (the ratios are to it), and the
transport floor: the same script pre-packed and sent on a kept connection, the way RedisStore
sends its scripts with a plain ``redis.Redis`` client. The hot-path rows add the multi-window
limiter (``limits=[per second, per day]``, one script for both) and the async paths
(``redis.asyncio``: ``atry_acquire`` on a ``RedisStore.from_url`` store, beside the same two
floors from a ``redis.asyncio`` client), each with its ratio to the pre-packed floor of its own
kind (sync or async) in the same round.

Usage::

    python -m benchmarks.bench_redis [--seconds 2] [--procs 1,4] [--rounds 3] [--only NAME,...]
        [--json FILE]

``--json FILE`` also writes one result per variant and process count
(``benchmarks/results/redis.json`` feeds the Redis tables of ``docs/benchmarks.md`` and
``docs/redis.md``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

RATE = 1_000_000  # per second, far above what one server can do: every decision is "allowed"
KEY = "bench-user"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _noop() -> None:
    return None


def _shared_budget_decider(url: str) -> Callable[[], Any]:
    """One call and one retry decision on a RetryBudget shared through Redis (the call's
    deposit rides on the decision: one round trip)."""
    import resilience as rs

    budget = rs.RetryBudget(
        ratio=1000, name="bench", store=rs.RedisStore.from_url(url, socket_timeout=1.0)
    )
    deposit, try_withdraw = budget.deposit, budget.try_withdraw

    def decide() -> bool:
        deposit()
        return try_withdraw()

    return decide


#: variants whose deciders live outside make_decider (a line each in VARIANTS)
SHARED_DECIDERS: dict[str, Callable[[str], Callable[[], Any]]] = {
    "resilience retry budget (shared)": _shared_budget_decider,
}


def make_decider(name: str, url: str) -> Callable[[], Any]:
    """A zero-argument callable that takes one rate-limit decision on the shared key."""
    import redis

    if name in SHARED_DECIDERS:
        return SHARED_DECIDERS[name](url)

    if name == "floor: raw EVALSHA":
        client = redis.Redis.from_url(url)
        sha = client.script_load("return 1")
        return lambda: client.evalsha(sha, 0)
    if name == "floor: pre-packed EVALSHA, kept conn":
        client = redis.Redis.from_url(url)
        sha = client.script_load("return 1")
        conn: Any = client.connection_pool.get_connection()
        cmd = [conn.pack_command("EVALSHA", sha, 0)[0]]

        def raw() -> Any:
            conn.send_packed_command(cmd)
            return conn.read_response()

        return raw
    if name == "resilience":
        import resilience as rs

        limiter = rs.RateLimiter(
            "bench", rate=RATE, store=rs.RedisStore.from_url(url, socket_timeout=1.0)
        )
        try_acquire = limiter.try_acquire
        return lambda: try_acquire(KEY)
    if name == "resilience (2 windows)":
        try_two = make_two_windows(url).try_acquire
        return lambda: try_two(KEY)
    if name == "resilience breaker (shared, closed)":
        import resilience as rs

        breaker = rs.CircuitBreaker(
            "bench", failure_ratio=0.5, store=rs.RedisStore.from_url(url, socket_timeout=1.0)
        )
        call = breaker.call
        return lambda: call(_noop)
    if name.startswith("limits"):
        from limits import RateLimitItemPerSecond
        from limits.storage import RedisStorage
        from limits.strategies import FixedWindowRateLimiter, SlidingWindowCounterRateLimiter

        storage = RedisStorage(url)
        strategy = (
            FixedWindowRateLimiter(storage)
            if "fixed" in name
            else SlidingWindowCounterRateLimiter(storage)
        )
        item = RateLimitItemPerSecond(RATE)
        hit = strategy.hit
        return lambda: hit(item, KEY)
    if name == "pyrate-limiter (redis bucket)":
        from pyrate_limiter import Duration, Limiter, Rate, RedisBucket

        client = redis.Redis.from_url(url)
        bucket = RedisBucket.init([Rate(RATE, Duration.SECOND)], client, "bench-bucket")
        limiter2 = Limiter(bucket)
        acquire = limiter2.try_acquire
        return lambda: acquire(KEY, blocking=False)
    if name == "throttled-py (redis, gcra)":
        from throttled import RateLimiterType, Throttled, per_sec
        from throttled.store import RedisStore as ThrottledRedis

        throttle = Throttled(
            key=KEY,
            using=RateLimiterType.GCRA.value,
            quota=per_sec(RATE),
            store=ThrottledRedis(server=url),
        )
        limit = throttle.limit
        return lambda: limit(KEY)
    raise ValueError(name)


#: the multi-window limiter of the hot-path rows: per second and per day, never rejecting
_TWO_WINDOWS = ((RATE, 1.0), (10**9, 86_400.0))


def make_two_windows(url: str) -> Any:
    """The multi-window limiter on a fresh store."""
    import resilience as rs

    return rs.RateLimiter(
        "bench2",
        limits=[rs.Limit(rate, per=per) for rate, per in _TWO_WINDOWS],
        store=rs.RedisStore.from_url(url, socket_timeout=1.0),
    )


async def make_async_decider(name: str, url: str) -> Callable[[], Any]:
    """:func:`make_decider` for the async variants: a coroutine function (one decision)."""
    import redis.asyncio

    if name.startswith("floor async"):
        client = redis.asyncio.Redis.from_url(url)
        sha = await client.script_load("return 1")
        if "raw" in name:
            return lambda: client.evalsha(sha, 0)
        pool: Any = client.connection_pool
        conn: Any = await pool.get_connection()
        cmd = [conn.pack_command("EVALSHA", sha, 0)[0]]

        async def raw() -> Any:
            await conn.send_packed_command(cmd)
            return await conn.read_response()

        return raw
    import resilience as rs

    if name == "resilience async (2 windows)":
        limiter = make_two_windows(url)
    else:
        limiter = rs.RateLimiter(
            "bench", rate=RATE, store=rs.RedisStore.from_url(url, socket_timeout=1.0)
        )
    atry = limiter.atry_acquire
    return lambda: atry(KEY)


async def _async_worker(name: str, url: str, seconds: float, barrier: Any, out: Any) -> None:
    decide = await make_async_decider(name, url)
    for _ in range(200):
        await decide()
    barrier.wait(timeout=60)  # blocks the loop: nothing else runs on it yet
    n = 0
    end = time.perf_counter() + seconds
    while True:
        for _ in range(50):
            await decide()
        n += 50
        if time.perf_counter() >= end:
            break
    out.put(n)


def _worker(name: str, url: str, seconds: float, barrier: Any, out: Any) -> None:
    if name in ASYNC_VARIANTS:
        import asyncio

        asyncio.run(_async_worker(name, url, seconds, barrier, out))
        return
    decide = make_decider(name, url)
    for _ in range(200):  # warm up: scripts loaded, connections open
        decide()
    barrier.wait(timeout=60)
    n = 0
    end = time.perf_counter() + seconds
    while True:
        for _ in range(50):
            decide()
        n += 50
        if time.perf_counter() >= end:
            break
    out.put(n)


def _round_trips(client: Any) -> int:
    """Requests the server has read so far (a pipelined batch read at once counts once)."""
    return int(client.info("stats")["total_reads_processed"])


def run(name: str, url: str, procs: int, seconds: float) -> tuple[float, float]:
    """``(decisions/s summed over processes, round trips per decision)``."""
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(procs + 1)
    out = ctx.Queue()
    ps = [
        ctx.Process(target=_worker, args=(name, url, seconds, barrier, out)) for _ in range(procs)
    ]
    for p in ps:
        p.start()
    barrier.wait(timeout=120)
    before = _round_trips(client)
    t0 = time.perf_counter()
    counts = [out.get(timeout=120) for _ in range(procs)]
    elapsed = time.perf_counter() - t0
    after = _round_trips(client) - 1  # the INFO command itself
    for p in ps:
        p.join(timeout=30)
    client.close()
    total = sum(counts)
    return total / elapsed, (after - before) / total


ASYNC_VARIANTS = (
    "floor async: raw EVALSHA",
    "floor async: pre-packed EVALSHA, kept conn",
    "resilience async",
    "resilience async (2 windows)",
)
#: variant -> the pre-packed floor of its kind (its ``ratio_to_packed``)
PACKED_FLOOR = {
    "resilience": "floor: pre-packed EVALSHA, kept conn",
    "resilience (2 windows)": "floor: pre-packed EVALSHA, kept conn",
    "resilience async": "floor async: pre-packed EVALSHA, kept conn",
    "resilience async (2 windows)": "floor async: pre-packed EVALSHA, kept conn",
}

VARIANTS = [
    "floor: raw EVALSHA",
    "floor: pre-packed EVALSHA, kept conn",
    "resilience",
    "resilience (2 windows)",
    *ASYNC_VARIANTS,
    "resilience breaker (shared, closed)",
    "resilience retry budget (shared)",
    "limits (redis, fixed window)",
    "limits (redis, sliding window counter)",
    "pyrate-limiter (redis bucket)",
    "throttled-py (redis, gcra)",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--procs", default="1,4")
    ap.add_argument("--only", default="")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="also write the results to this file (benchmarks.report)")
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    server = shutil.which("redis-server")
    if server is None:
        print("redis-server not found", file=sys.stderr)
        return 2
    variants = [v for v in VARIANTS if not args.only or any(o in v for o in args.only.split(","))]
    workdir = tempfile.mkdtemp(prefix="rs-bench-redis-")
    port = _free_port()
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--protected-mode",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        print(f"redis-server {port}, {os.cpu_count()} CPUs, {args.seconds:g} s per run, one key")
        for procs in [int(p) for p in args.procs.split(",")]:
            print(f"\n{procs} client process(es), median of {args.rounds} interleaved rounds")
            print(
                f"{'variant':42} {'decisions/s':>12} {'vs floor':>9} {'round trips':>12}"
                f" {'vs packed':>10}"
            )
            rates: dict[str, list[float]] = {name: [] for name in variants}
            ratios: dict[str, list[float]] = {name: [] for name in variants}
            packed: dict[str, list[float]] = {name: [] for name in variants}
            cmds: dict[str, float] = {}
            failed: dict[str, str] = {}
            for _ in range(args.rounds):  # interleaved: a noisy neighbour hits every variant
                floor = None
                this_round: dict[str, float] = {}
                for name in variants:
                    if name in failed:
                        continue
                    try:
                        rate, cmds[name] = run(name, url, procs, args.seconds)
                    except Exception as exc:  # a peer that is not installed or broke
                        failed[name] = f"{type(exc).__name__}: {exc}"
                        continue
                    if name == VARIANTS[0]:
                        floor = rate
                    rates[name].append(rate)
                    this_round[name] = rate
                    if floor:
                        ratios[name].append(rate / floor)
                    if this_round.get(PACKED_FLOOR.get(name, "")):
                        packed[name].append(rate / this_round[PACKED_FLOOR[name]])
            for name in variants:
                if name in failed:
                    print(f"{name:42} failed: {failed[name]}")
                    rows.append(
                        {"group": f"procs/{procs}", "name": name, "decisions_per_s": None,
                         "ratio_to_floor": None, "round_trips": None, "error": failed[name]}
                    )  # fmt: skip
                    continue
                rows.append(
                    {
                        "group": f"procs/{procs}",
                        "name": name,
                        "decisions_per_s": statistics.median(rates[name]),
                        "ratio_to_floor": statistics.median(ratios[name]) if ratios[name] else None,
                        "ratio_to_packed": (
                            statistics.median(packed[name]) if packed[name] else None
                        ),
                        "round_trips": cmds[name],
                        "samples": rates[name],
                        "error": None,
                    }
                )
                ratio = f"{statistics.median(ratios[name]):8.0%}" if ratios[name] else "       -"
                vs_packed = f"{statistics.median(packed[name]):9.0%}" if packed[name] else ""
                print(
                    f"{name:42} {statistics.median(rates[name]):12,.0f} {ratio:>9} "
                    f"{cmds[name]:12.2f} {vs_packed:>10}",
                    flush=True,
                )
    finally:
        proc.terminate()  # only the server this script started
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        from ._results import run_info, write_results

        version = subprocess.run(
            [server, "--version"], capture_output=True, text=True, check=False
        ).stdout
        info = run_info(
            peers=("redis", "limits", "pyrate-limiter", "throttled-py"),
            redis_server=next((w[2:] for w in version.split() if w.startswith("v=")), None),
            seconds=args.seconds,
            procs=args.procs,
            rounds=args.rounds,
            only=args.only,
        )
        write_results(args.json, info, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
