"""Requests/s of a hello-world Starlette app under uvicorn, with and without middlewares.

Usage::

    python -m benchmarks.http_load [--seconds 5] [--rounds 3] [--connections 32] [--json FILE]
    python -m benchmarks.http_load serve <variant> <port>      # (internal) one server

Each variant runs in its own uvicorn process (one worker, h11, no access log) on 127.0.0.1; the
load generator is ``wrk`` (one thread, keep-alive connections) in another process. Rounds are
interleaved across variants, and we report the median requests/s per variant and its ratio to
the bare app measured in the same run. Because the loopback machine is usually shared, we also
report the server process's CPU time per request (``/proc/<pid>/stat`` user + system, divided by
the requests wrk completed) and the requests/s one core would give at that cost: this is the
robust number when other processes compete for the CPU. Limits are set so that no request is
ever rejected: the numbers are the cost of the checks on the success path. ``--json FILE`` also
writes one result per variant (``benchmarks/results/http_load.json`` feeds the ASGI table of
``docs/benchmarks.md``; ``ratio`` is the median of the per-round ratios to bare).

Variants:

* ``bare``: the app alone.
* ``resilience``: ``ResilienceMiddleware`` with ``Pipeline(Timeout(10), Bulkhead(1000))``
  (Bulkhead only when ``rs.Bulkhead`` exists).
* ``ratelimit``: ``RateLimitMiddleware`` with a per-client-IP ``rs.RateLimiter`` (or, before it
  exists, a trivial in-module limiter, reported as such).
* ``ours``: both of ours stacked.
* ``slowapi-asgi`` / ``slowapi``: slowapi's pure-ASGI and ``BaseHTTPMiddleware`` middlewares with
  a per-IP default limit (the peer).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

VARIANTS = ["bare", "resilience", "ratelimit", "ours", "slowapi-asgi", "slowapi"]


class _Allow:
    """A stand-in limiter (always allows) for runs before ``rs.RateLimiter`` exists."""

    name = "bench"

    class _D:
        allowed = True
        retry_after = 0.0
        remaining = 999
        limit = 1000

    def try_acquire(self, *, key: str, cost: int = 1) -> Any:
        return self._D


def build(variant: str) -> tuple[Any, str]:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    import resilience as rs
    from interceptors.asgi import RateLimitMiddleware, ResilienceMiddleware

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello, world")

    app: Any = Starlette(routes=[Route("/", hello)])
    note = ""
    if variant in ("resilience", "ours"):
        policies: list[rs.Policy] = [rs.Timeout(10)]
        bulkhead = getattr(rs, "Bulkhead", None)
        if bulkhead is not None:
            policies.append(bulkhead("bench", max_concurrent=1000))
        note += "pipeline=" + "+".join(type(p).__name__ for p in policies) + " "
        app = ResilienceMiddleware(app, pipeline=rs.Pipeline(*policies))
    if variant in ("ratelimit", "ours"):
        limiter_cls = getattr(rs, "RateLimiter", None)
        limiter: Any = (
            limiter_cls("bench", rate=1_000_000, per=1.0) if limiter_cls is not None else _Allow()
        )
        note += f"limiter={type(limiter).__name__} "
        app = RateLimitMiddleware(app, limiter=limiter)
    if variant.startswith("slowapi"):
        from slowapi import Limiter, _rate_limit_exceeded_handler
        from slowapi.errors import RateLimitExceeded
        from slowapi.middleware import SlowAPIASGIMiddleware, SlowAPIMiddleware
        from slowapi.util import get_remote_address

        limiter = Limiter(key_func=get_remote_address, default_limits=["1000000/second"])
        app.state.limiter = limiter
        app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
        mw = SlowAPIASGIMiddleware if variant == "slowapi-asgi" else SlowAPIMiddleware
        app.add_middleware(mw)
        note += f"{mw.__name__}, limits MemoryStorage, 1000000/second per IP"
    return app, note.strip()


def serve(variant: str, port: int) -> None:
    import uvicorn

    app, _ = build(variant)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, http="h11")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(port: int, seconds: float, connections: int) -> tuple[float, int]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: `make bench-http` installs it (apt-get install -y wrk)")
    out = subprocess.run(
        [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"Requests/sec:\s*([0-9.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m is None or n is None:
        raise RuntimeError(out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} non-2xx responses: a limit was hit\n{out}")
    return float(m.group(1)), int(n.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", help="also write the results to this file (benchmarks.report)")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    variants = args.variants.split(",")
    results: dict[str, list[float]] = {v: [] for v in variants}
    cpu_us: dict[str, list[float]] = {v: [] for v in variants}
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    for _ in range(args.rounds):
        for v in variants:
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.http_load", "serve", v, str(port)], env=env
            )
            try:
                wait_port(port)
                load(port, 1, args.connections)  # warm-up
                before = cpu_seconds(proc.pid)
                rps, count = load(port, args.seconds, args.connections)
                used = cpu_seconds(proc.pid) - before
                results[v].append(rps)
                cpu_us[v].append(used / count * 1e6)
            finally:
                proc.terminate()
                proc.wait(10)
    base = statistics.median(results["bare"]) if "bare" in results else None
    # each round's ratio to that round's bare run, so that load from other processes cancels
    paired = {
        v: statistics.median(r / b for r, b in zip(results[v], results["bare"], strict=True))
        for v in variants
        if "bare" in results
    }
    print(
        f"uvicorn (h11, 1 worker) + wrk -t1 -c{args.connections} -d{args.seconds:g}s, "
        f"{args.rounds} rounds, Python {sys.version.split()[0]}"
    )
    print(
        f"{'variant':<14}{'median req/s':>14}{'vs bare':>9}{'paired':>8}"
        f"{'server CPU µs/req':>19}{'CPU req/s':>11}{'vs bare':>9}   runs; config"
    )
    cpu_base = statistics.median(cpu_us["bare"]) if "bare" in cpu_us else None
    for v in variants:
        med = statistics.median(results[v])
        ratio = f"{med / base:.3f}" if base else "-"
        pair = f"{paired[v]:.3f}" if v in paired else "-"
        runs = ", ".join(f"{r:.0f}" for r in results[v])
        cpu = statistics.median(cpu_us[v])
        cpu_ratio = f"{cpu_base / cpu:.3f}" if cpu_base else "-"
        note = build(v)[1]
        print(
            f"{v:<14}{med:>14.0f}{ratio:>9}{pair:>8}{cpu:>19.1f}{1e6 / cpu:>11.0f}{cpu_ratio:>9}"
            f"   [{runs}]; {note}"
        )
        rows.append(
            {
                "name": v,
                "requests_per_s": med,
                "ratio": paired.get(v),
                "ratio_of_medians": med / base if base else None,
                "server_cpu_us_per_request": cpu,
                "cpu_ratio": cpu_base / cpu if cpu_base else None,
                "samples": results[v],
                "note": note,
            }
        )
    if args.json:
        from ._results import run_info, write_results

        info = run_info(
            peers=("uvicorn", "starlette", "slowapi", "limits"),
            wrk=_wrk_version(),
            seconds=args.seconds,
            rounds=args.rounds,
            connections=args.connections,
            variants=args.variants,
        )
        write_results(args.json, info, rows)


def _wrk_version() -> str | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    words = (out.stdout + out.stderr).split()
    return words[1] if len(words) > 1 else None


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        main()
