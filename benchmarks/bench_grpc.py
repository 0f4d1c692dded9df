"""Unary gRPC calls per second with and without the resilience interceptors (sync, loopback).

Run: ``python -m benchmarks.bench_grpc [--calls N] [--rounds R] [--json FILE]``. Two real
``grpc.server`` instances on 127.0.0.1 (port 0) live for the whole run, one plain and one with
our server interceptor, and every configuration keeps its own warmed-up channel. Each round
times a block of ``N`` sequential unary-unary calls (raw bytes) per configuration, in an order
rotated every round so that no configuration always runs first or last; the ratio to ``bare``
is taken *within* each round (both blocks ran seconds apart, under the same machine load) and
the median of those per-round ratios is reported, with its spread. ``--json`` also writes them
(``benchmarks/results/grpc.json`` feeds the gRPC table of ``docs/benchmarks.md``).

Configurations:

* ``bare``: no interceptors;
* ``noop``: a pass-through client interceptor (what ``grpc.intercept_channel`` itself costs);
* ``client``: :class:`ResilienceClientInterceptor` with ``Timeout(5) + grpc_retry()``;
* ``server``: :class:`ResilienceServerInterceptor` with ``Timeout(5)``;
* ``both``: both of the above (the target: at most 10 % fewer calls/s than ``bare``).

The in-process cost of the interceptor code alone (no network) is measured by
``python -m benchmarks --only grpc/`` (``benchmarks/cases_grpc.py``).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc

import resilience as rs
from interceptors.grpc import ResilienceClientInterceptor, ResilienceServerInterceptor, grpc_retry

from ._results import run_info, write_results

METHOD = "/bench.Svc/Echo"
CONFIGS = ("bare", "noop", "client", "server", "both")


def _echo(request: bytes, context: Any) -> bytes:
    return request


def _server(intercept: bool) -> tuple[grpc.Server, int]:
    interceptors: list[Any] = (
        [ResilienceServerInterceptor(pipeline=rs.Timeout(5.0))] if intercept else []
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=interceptors)
    handler = grpc.method_handlers_generic_handler(
        "bench.Svc", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


class _Noop(grpc.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(details, request)


def _stub(config: str, ports: dict[bool, int], channels: list[grpc.Channel]) -> Callable[..., Any]:
    raw = grpc.insecure_channel(f"127.0.0.1:{ports[config in ('server', 'both')]}")
    channels.append(raw)
    channel: Any = raw
    if config in ("client", "both"):
        pipeline = rs.Pipeline(rs.Timeout(5.0), grpc_retry(attempts=3))
        channel = grpc.intercept_channel(raw, ResilienceClientInterceptor(pipeline=pipeline))
    elif config == "noop":
        channel = grpc.intercept_channel(raw, _Noop())
    stub: Callable[..., Any] = channel.unary_unary(METHOD)
    return stub


def _block(stub: Callable[..., Any], calls: int) -> float:
    """Calls per second over one block of sequential calls."""
    gc.collect()
    start = time.perf_counter()
    for _ in range(calls):
        stub(b"x")
    return calls / (time.perf_counter() - start)


def run(calls: int, rounds: int, warmup: int = 300) -> dict[str, list[float]]:
    """Per-configuration calls/s, one sample per round (configurations interleaved)."""
    servers = {flag: _server(flag) for flag in (False, True)}
    ports = {flag: port for flag, (_, port) in servers.items()}
    channels: list[grpc.Channel] = []
    try:
        stubs = {c: _stub(c, ports, channels) for c in CONFIGS}
        for stub in stubs.values():
            for _ in range(warmup):
                stub(b"x")
        samples: dict[str, list[float]] = {c: [] for c in CONFIGS}
        for r in range(rounds):
            shift = r % len(CONFIGS)
            for c in CONFIGS[shift:] + CONFIGS[:shift]:
                samples[c].append(_block(stubs[c], calls))
        return samples
    finally:
        for ch in channels:
            ch.close()
        for server, _ in servers.values():
            server.stop(None)


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark; print median calls/s and the median per-round ratio to ``bare``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=1000, help="calls per block")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--json", help="also write the results to this file (benchmarks.report)")
    args = parser.parse_args(argv)
    samples = run(args.calls, args.rounds)
    bare = samples["bare"]
    print(
        f"unary gRPC calls/s over loopback: {args.calls} calls per block x {args.rounds} rounds, "
        "configurations interleaved; ratio = per-round calls/s / bare, median [quartiles]"
    )
    ratios_out: dict[str, float] = {}
    rows: list[dict[str, object]] = []
    for c in CONFIGS:
        ratios = [s / b for s, b in zip(samples[c], bare, strict=True)]
        ratio = statistics.median(ratios)
        lo, hi = _quartiles(ratios)
        rate = statistics.median(samples[c])
        ratios_out[c] = ratio
        print(
            f"  {c:7s} {rate:8.0f} calls/s ({1e6 / rate:6.1f} us/call)"
            f"   {ratio:6.3f} x bare [{lo:.3f}, {hi:.3f}]"
        )
        rows.append(
            {"config": c, "calls_per_s": rate, "ratio": ratio, "ratio_q1": lo, "ratio_q3": hi}
        )
    if args.json:
        write_results(
            args.json, run_info(peers=("grpcio",), calls=args.calls, rounds=args.rounds), rows
        )
    return ratios_out


if __name__ == "__main__":
    main()
