"""problem+json bodies: what ``send_problem`` sends against the ``rfc9457`` library.

Per-call cost of the body of a 429 (``type``, ``title``, ``status``, ``detail``), in interleaved
rounds (the median of ``--rounds``, each of ``--calls`` calls). Ours is the body of
``interceptors.asgi._common.send_problem`` (one response driven through it with a ``send`` that
keeps the body); rfc9457's is ``Problem(...).marshal()`` serialized the same way (it builds the
document, the serialization is the caller's). Both give the same bytes (checked first).

``--json FILE`` writes the medians (``benchmarks/results/problem.json``).

Usage::

    python -m benchmarks.bench_problem [--calls 20000] [--rounds 7] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import rfc9457  # type: ignore[import-not-found, unused-ignore]  # the bench group

from interceptors.asgi._common import send_problem

from ._results import run_info, write_results

TYPE = "urn:resilience:problem:rate-limited"
TITLE = "Too Many Requests"
DETAIL = "the client's request quota is exhausted"


def ours() -> bytes:
    """The body ``send_problem`` sends (its coroutine driven to the end: ``send`` never waits)."""
    body: list[bytes] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body":
            body.append(message["body"])

    coro = send_problem(send, 429, TITLE, type_=TYPE, detail=DETAIL)
    try:
        coro.send(None)
    except StopIteration:
        pass
    return body[0]


def theirs() -> bytes:
    """The same document from rfc9457, serialized as ``send_problem`` does."""
    problem = rfc9457.Problem(TITLE, type_=TYPE, detail=DETAIL, status=429)
    return json.dumps(problem.marshal(), separators=(",", ":")).encode()


def bare_ours() -> bytes:
    """The document and its serialization alone (no ASGI messages): the part rfc9457 covers."""
    doc: dict[str, Any] = {"type": TYPE, "title": TITLE, "status": 429}
    doc["detail"] = DETAIL
    return json.dumps(doc, separators=(",", ":")).encode()


def run(calls: int, rounds: int) -> dict[str, float]:
    """The median seconds per call of every case, the cases interleaved round by round."""
    todo: dict[str, Callable[[], bytes]] = {
        "problem body: ours (send_problem)": ours,
        "problem body: ours (document + json.dumps)": bare_ours,
        "problem body: rfc9457 (marshal + json.dumps)": theirs,
    }
    expected = theirs()
    for name, fn in todo.items():
        if fn() != expected:
            raise AssertionError(f"{name}: {fn()!r} != {expected!r}")
    samples: dict[str, list[float]] = {name: [] for name in todo}
    for _ in range(rounds):
        for name, fn in todo.items():
            loop = range(calls)
            t0 = time.perf_counter()
            for _ in loop:
                fn()
            samples[name].append((time.perf_counter() - t0) / calls)
    return {name: statistics.median(v) for name, v in samples.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    medians = run(args.calls, args.rounds)
    width = max(map(len, medians))
    for name, seconds in medians.items():
        print(f"{name:<{width}}  {seconds * 1e9:10.0f} ns/call")
    if args.json:
        rows = [{"name": name, "seconds_per_call": v} for name, v in medians.items()]
        info = run_info(peers=("rfc9457",), calls=args.calls, rounds=args.rounds)
        write_results(args.json, info, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
