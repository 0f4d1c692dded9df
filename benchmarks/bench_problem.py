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

import json
from collections.abc import Callable, MutableMapping
from typing import Any

import rfc9457  # type: ignore[import-not-found, unused-ignore]  # the bench group

from interceptors.asgi._common import send_problem

from ._percall import main as percall_main

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


def cases() -> dict[str, tuple[Callable[[], object], object]]:
    """Each case with the bytes it must produce (rfc9457's)."""
    expected = theirs()
    return {
        "problem body: ours (send_problem)": (ours, expected),
        "problem body: ours (document + json.dumps)": (bare_ours, expected),
        "problem body: rfc9457 (marshal + json.dumps)": (theirs, expected),
    }


def main(argv: list[str] | None = None) -> int:
    return percall_main(argv, doc=__doc__, cases=cases, peers=("rfc9457",))


if __name__ == "__main__":
    raise SystemExit(main())
