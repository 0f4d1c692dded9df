"""Unary gRPC calls per second with and without the resilience interceptors (sync, loopback).

Run: ``python -m benchmarks.bench_grpc [--calls N] [--rounds R]``. Each configuration starts a
real ``grpc.server`` on 127.0.0.1 (port 0) and makes ``N`` sequential unary-unary calls over
raw bytes from one client; rounds alternate between configurations and the median is reported.

Configurations:

* ``bare``: no interceptors;
* ``noop``: a pass-through client interceptor (what ``grpc.intercept_channel`` itself costs);
* ``client``: :class:`ResilienceClientInterceptor` with ``Timeout(5) + grpc_retry()``;
* ``server``: :class:`ResilienceServerInterceptor` with ``Timeout(5)``;
* ``both``: both of the above (the target: at most 10 % fewer calls/s than ``bare``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent import futures
from typing import Any

import grpc

import resilience as rs
from interceptors.grpc import ResilienceClientInterceptor, ResilienceServerInterceptor, grpc_retry

METHOD = "/bench.Svc/Echo"


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


def run_once(config: str, calls: int) -> float:
    """Calls per second for one configuration."""
    server, port = _server(config in ("server", "both"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as raw:
            channel: Any = raw
            if config in ("client", "both"):
                pipeline = rs.Pipeline(rs.Timeout(5.0), grpc_retry(attempts=3))
                channel = grpc.intercept_channel(
                    raw, ResilienceClientInterceptor(pipeline=pipeline)
                )
            if config == "noop":
                channel = grpc.intercept_channel(raw, _Noop())
            stub = channel.unary_unary(METHOD)
            for _ in range(200):  # warm up the connection
                stub(b"x")
            start = time.perf_counter()
            for _ in range(calls):
                stub(b"x")
            return calls / (time.perf_counter() - start)
    finally:
        server.stop(None)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark and print medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    configs = ["bare", "noop", "client", "server", "both"]
    results: dict[str, list[float]] = {c: [] for c in configs}
    for _ in range(args.rounds):
        for c in configs:
            results[c].append(run_once(c, args.calls))
    medians = {c: statistics.median(v) for c, v in results.items()}
    bare = medians["bare"]
    print(f"unary gRPC calls/s, {args.calls} calls x {args.rounds} rounds (median)")
    for c in configs:
        m = medians[c]
        print(f"  {c:7s} {m:9.0f} calls/s   {m / bare:6.3f} x bare   ({1e6 / m:6.1f} us/call)")
    return medians


if __name__ == "__main__":
    main()
