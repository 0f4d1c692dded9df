"""Decision latency while Redis stalls, and how fast the store is used again when it is back.

Starts its own ``redis-server`` on a free loopback port (stopped at the end). A shared
``RateLimiter`` (``on_store_error="open"``, a ``RedisStore.from_url`` store with its defaults)
takes decisions in a closed loop from ``--tasks`` asyncio tasks and ``--threads`` threads. Each
scenario runs healthy for a moment, then:

* ``stall``: ``SIGSTOP`` for ``--outage`` seconds, then ``SIGCONT`` (a hung or CPU-starved
  server: connections stay open, replies stop);
* ``restart``: ``kill -9`` for ``--outage`` seconds, then a new server on the same port;
* ``hiccups``: a healthy but starved server: 150 ms pauses twice a second for ``--outage``
  seconds (here "degraded during the outage" is the cost: none of it was an outage).

Reported per scenario: the latency (p50 / p99 / max) of the decisions that began during the
outage, how many of them were degraded (decided by ``on_store_error``), when the store started
failing fast, and the recovery: from the moment Redis can answer again (``SIGCONT`` sent, or the
restarted server answers ``PING``) to the first decision served by Redis, plus the degraded
decisions taken after that moment. ``--runs N`` repeats every scenario; ``--json FILE`` writes
one result per scenario and run (``benchmarks/results/redis_stall.json`` feeds the measured
failure-mode table of ``docs/redis.md``, ranges over the runs).

Usage::

    python -m benchmarks.redis_stall [--outage 2] [--tasks 32] [--threads 2] [--runs 1]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

_DEGRADED: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("d", default=None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(port: int, workdir: str) -> subprocess.Popen[bytes]:
    server = shutil.which("redis-server")
    if server is None:
        sys.exit("redis-server is not installed")
    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "no", "--dir", workdir]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_ping(port)
    return proc


def _wait_ping(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.001)
    raise RuntimeError("redis-server did not start")


def _listener(event: Any) -> None:
    mark = _DEGRADED.get()
    if mark is not None and type(event).__name__ == "StoreFailed":
        mark.append(1)


Sample = tuple[float, float, bool]  # (start, latency, degraded)


def _decide_sync(limiter: Any, samples: list[Sample]) -> None:
    mark: list[int] = []
    _DEGRADED.set(mark)
    t0 = time.monotonic()
    limiter.try_acquire("user")
    samples.append((t0, time.monotonic() - t0, bool(mark)))


async def _decide_async(limiter: Any, samples: list[Sample]) -> None:
    mark: list[int] = []
    _DEGRADED.set(mark)
    t0 = time.monotonic()
    await limiter.atry_acquire("user")
    samples.append((t0, time.monotonic() - t0, bool(mark)))


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run(scenario: str, outage: float, tasks: int, threads: int) -> dict[str, Any]:
    import resilience as rs

    workdir = tempfile.mkdtemp(prefix="rs-stall-")
    port = _free_port()
    proc = _start(port, workdir)
    store = rs.RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix=uuid.uuid4().hex[:8])
    limiter = rs.RateLimiter("stall", rate=1_000_000, store=store, listeners=[_listener])
    samples: list[Sample] = []
    stop = threading.Event()
    marks: dict[str, float] = {}

    def thread_loop() -> None:
        while not stop.is_set():
            _decide_sync(limiter, samples)
            time.sleep(0.0005)

    async def task_loop() -> None:
        while not stop.is_set():
            await _decide_async(limiter, samples)
            await asyncio.sleep(0.0005)

    async def main() -> None:
        workers = [asyncio.create_task(task_loop()) for _ in range(tasks)]
        await asyncio.to_thread(stop.wait)
        await asyncio.gather(*workers)
        await store.aclose()

    def chaos() -> None:
        nonlocal proc
        time.sleep(0.5)
        marks["down"] = time.monotonic()
        if scenario == "hiccups":  # a healthy but starved server: 150 ms pauses, twice a second
            for _ in range(int(outage * 2)):
                os.kill(proc.pid, signal.SIGSTOP)
                time.sleep(0.15)
                os.kill(proc.pid, signal.SIGCONT)
                time.sleep(0.35)
            marks["back"] = time.monotonic()
        elif scenario == "stall":
            os.kill(proc.pid, signal.SIGSTOP)
            time.sleep(outage)
            os.kill(proc.pid, signal.SIGCONT)
            marks["back"] = time.monotonic()
        else:
            proc.kill()
            proc.wait()
            time.sleep(outage)
            proc = _start(port, workdir)
            marks["back"] = time.monotonic()
        time.sleep(1.0)
        stop.set()

    ts = [threading.Thread(target=thread_loop) for _ in range(threads)]
    ts.append(threading.Thread(target=chaos))
    for t in ts:
        t.start()
    asyncio.run(main())
    for t in ts:
        t.join()
    store.close()
    proc.kill()
    proc.wait()
    shutil.rmtree(workdir, ignore_errors=True)

    down, back = marks["down"], marks["back"]
    during = [s for s in samples if down <= s[0] < back]
    lat = [s[1] for s in during]
    fast = [s[0] + s[1] for s in during if s[2] and s[1] < 0.005]
    served_after = sorted(s[0] + s[1] for s in samples if s[0] + s[1] >= back and not s[2])
    degraded_after = sum(1 for s in samples if s[0] >= back and s[2])
    return {
        "name": scenario,
        "decisions_during_outage": len(during),
        "degraded_during_outage": sum(1 for s in during if s[2]),
        "p50_ms": round(statistics.median(lat) * 1000, 3) if lat else None,
        "p99_ms": round(_pct(lat, 0.99) * 1000, 3) if lat else None,
        "max_ms": round(max(lat) * 1000, 3) if lat else None,
        "waited_over_50_ms": sum(1 for x in lat if x > 0.05),
        "fail_fast_after_ms": round((min(fast) - down) * 1000) if fast else None,
        "recovery_ms": round((served_after[0] - back) * 1000, 3) if served_after else None,
        "degraded_after_back": degraded_after,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=2.0)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scenarios", default="stall,restart,hiccups")
    parser.add_argument("--runs", type=int, default=1, help="run every scenario this many times")
    parser.add_argument("--json", help="also write one result per scenario and run to this file")
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("resilience").setLevel(logging.ERROR)  # the degraded-decision warnings
    rows: list[dict[str, Any]] = []
    for i in range(args.runs):
        for scenario in args.scenarios.split(","):
            result = {"run": i + 1, **run(scenario, args.outage, args.tasks, args.threads)}
            rows.append(result)
            print("  ".join(f"{k}: {v}" for k, v in result.items()), flush=True)
    if args.json:
        from ._results import run_info, write_results

        info = run_info(
            peers=("redis",),
            redis_server=_server_version(),
            outage=args.outage,
            tasks=args.tasks,
            threads=args.threads,
            runs=args.runs,
        )
        write_results(args.json, info, rows)


def _server_version() -> str | None:
    server = shutil.which("redis-server")
    if server is None:
        return None
    out = subprocess.run([server, "--version"], capture_output=True, text=True, check=False).stdout
    return next((w[2:] for w in out.split() if w.startswith("v=")), None)


if __name__ == "__main__":
    main()
