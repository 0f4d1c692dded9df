"""Structured fields on the hot path: our hand-written code against the ``http-sf`` library.

Per-call cost, in interleaved rounds (the median of ``--rounds``, each of ``--calls`` calls):

* *parse Idempotency-Key*: one field value to the key, or ``None`` when it is malformed, for an
  sf-string (``"8e03978e-…"``) and a bare token (``order-8e03978e``). Ours is
  ``interceptors.asgi._idempotency_request.parse_idempotency_key``; the http-sf case is
  ``http_sf.parse(raw, tltype="item")`` followed by the same checks on what it returns (a
  string or token without parameters, 1-255 visible ASCII characters), and, as a lower bound,
  the parse alone.
* *serialize RateLimit*: the ``RateLimit`` field of an admitted request,
  ``"<limiter>";r=<n>;t=<s>``, as bytes. Ours is the statements ``RateLimitMiddleware`` runs
  per request (the limiter's name is serialized once, at construction); http-sf serializes
  the list of one item (``http_sf.ser([(name, {"r": r, "t": t})]).encode()``). Both fields
  of a response (``RateLimit-Policy`` and ``RateLimit``) through ``RateLimitMiddleware._fields``
  are timed too, against two ``http_sf.ser`` calls.

``--json FILE`` writes the medians (``benchmarks/results/sf.json``).

Usage::

    python -m benchmarks.bench_sf [--calls 20000] [--rounds 7] [--json FILE]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import http_sf
from http_sf.types import ListType, ParamsType, Token

from interceptors._ratelimit_fields import _SF_MAX, _SF_MAX_BYTES
from interceptors.asgi import RateLimitMiddleware
from interceptors.asgi._idempotency_request import parse_idempotency_key

from ._percall import main as percall_main

QUOTED = b'"8e03978e-40d5-4c8d-a4b1-9c2f0b9d1e21"'
BARE = b"order-8e03978e-40d5"
NAME = "per-ip"


def http_sf_key(raw: bytes) -> str | None:
    """The key through http-sf, with the checks ``parse_idempotency_key`` makes."""
    try:
        item: Any = http_sf.parse(raw, tltype="item")
    except (http_sf.StructuredFieldError, ValueError):
        return None
    value, params = item
    if params or not isinstance(value, str | Token):
        return None
    key = str(value)
    # http-sf admits only 0x20-0x7E in a String (and visible ones in a Token): a key has no space
    if not 0 < len(key) <= 255 or " " in key:
        return None
    return key


def http_sf_parse_only(raw: bytes) -> Any:
    """The parse alone (a lower bound of any use of http-sf for the key)."""
    return http_sf.parse(raw, tltype="item")


class _Limiter:
    name = NAME
    rate = 100.0
    per = 60.0

    def try_acquire(self, key: str | None = None, cost: float = 1) -> Any:  # pragma: no cover
        raise NotImplementedError


class _Decision:
    allowed = True
    retry_after = None
    limit = 100
    remaining = 42
    reset_after = 35.2


def cases() -> dict[str, tuple[Callable[[], object], object]]:
    """Each case: a zero-argument callable and the value it must return."""
    middleware = RateLimitMiddleware(lambda s, r, w: None, limiter=_Limiter())  # type: ignore[arg-type, return-value]
    name_sf = middleware._format.name
    r, t = 42, b"36"
    decision = _Decision()
    fields = middleware._fields
    expected_fields = [
        (b"ratelimit-policy", b'"per-ip";q=100;w=60'),
        (b"ratelimit", b'"per-ip";r=42;t=36'),
    ]

    def ours_ratelimit() -> bytes:  # the statements of RateLimitMiddleware._fields
        n = r
        if n < 0:
            n = 0
        elif n > _SF_MAX:
            n = _SF_MAX
        clamped = t if len(t) <= 15 else _SF_MAX_BYTES
        return name_sf + b";r=%d;t=" % n + clamped

    def http_sf_ratelimit() -> bytes:
        params: ParamsType = {"r": r, "t": 36}
        field: ListType = [(NAME, params)]
        return http_sf.ser(field).encode("ascii")

    def http_sf_fields() -> list[tuple[bytes, bytes]]:
        quota: ParamsType = {"q": 100, "w": 60}
        now: ParamsType = {"r": 42, "t": math.ceil(decision.reset_after)}
        policy: ListType = [(NAME, quota)]
        state: ListType = [(NAME, now)]
        return [
            (b"ratelimit-policy", http_sf.ser(policy).encode("ascii")),
            (b"ratelimit", http_sf.ser(state).encode("ascii")),
        ]

    key = "8e03978e-40d5-4c8d-a4b1-9c2f0b9d1e21"
    return {
        "parse Idempotency-Key sf-string: ours": (lambda: parse_idempotency_key(QUOTED), key),
        "parse Idempotency-Key sf-string: http-sf": (lambda: http_sf_key(QUOTED), key),
        "parse Idempotency-Key sf-string: http-sf parse only": (
            lambda: http_sf_parse_only(QUOTED),
            (key, {}),
        ),
        "parse Idempotency-Key token: ours": (lambda: parse_idempotency_key(BARE), BARE.decode()),
        "parse Idempotency-Key token: http-sf": (lambda: http_sf_key(BARE), BARE.decode()),
        "serialize RateLimit: ours": (ours_ratelimit, b'"per-ip";r=42;t=36'),
        "serialize RateLimit: http-sf": (http_sf_ratelimit, b'"per-ip";r=42;t=36'),
        "serialize RateLimit-Policy + RateLimit: ours (_fields)": (
            lambda: fields(decision, None),
            expected_fields,
        ),
        "serialize RateLimit-Policy + RateLimit: http-sf": (http_sf_fields, expected_fields),
    }


def main(argv: list[str] | None = None) -> int:
    return percall_main(argv, doc=__doc__, cases=cases, peers=("http-sf",))


if __name__ == "__main__":
    raise SystemExit(main())
