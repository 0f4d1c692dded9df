"""The idempotency record state machine as pure operations, and the RPC flow of IdempotencyRecords
(run / arun).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import resilience as rs
from resilience.idempotency import (
    ClaimOp,
    CompleteOp,
    IdempotencyRecords,
    ReleaseOp,
    RenewOp,
    record_key,
)
from resilience.testing import FakeClock

from ..helpers import Boom


# -- pure operations ---------------------------------------------------------------------------
def test_state_machine_is_pure_and_json_representable() -> None:
    claim = ClaimOp("k", "fp", "a", lease=60.0, ttl=100.0)
    state, result, ttl = claim.apply(None, 0.0)
    assert result == ("claimed", 1, 0)
    assert ttl == 160.0
    assert json.loads(json.dumps(state)) == state
    # the same input gives the same output (no hidden state)
    assert claim.apply(None, 0.0) == (state, result, ttl)
    renewed: Any
    taken: Any
    renewed, held, _ = RenewOp("k", "a", 1, lease=60.0, ttl=100.0).apply(state, 50.0)
    assert held
    assert renewed["lu"] == 110_000_000
    # takeover after the lease, with a new fence
    taken, res, _ = ClaimOp("k", "fp", "b", lease=60.0, ttl=100.0).apply(renewed, 111.0)
    assert res == ("claimed", 2, 1)
    assert taken["o"] == "b"
    # the zombie (fence 1) can neither renew, complete nor release
    assert RenewOp("k", "a", 1, lease=60.0, ttl=100.0).apply(taken, 112.0)[:2] == (taken, False)
    assert CompleteOp("k", "a", 1, payload="x", ttl=100.0).apply(taken, 112.0)[:2] == (
        taken,
        False,
    )
    assert ReleaseOp("k", "a", 1).apply(taken, 112.0)[:2] == (taken, False)
    done, ok, ttl2 = CompleteOp("k", "b", 2, payload="y", ttl=100.0).apply(taken, 113.0)
    assert ok
    assert ttl2 == 100.0
    assert json.loads(json.dumps(done)) == done
    assert ClaimOp("k", "fp", "c", lease=60.0, ttl=100.0).apply(done, 114.0)[1] == (
        "replay",
        2,
        "y",
    )
    assert ClaimOp("k", "zz", "c", lease=60.0, ttl=100.0).apply(done, 114.0)[1][0] == "reused"
    assert ClaimOp("k", "fp", "c", lease=60.0, ttl=100.0).apply({"v": 99}, 0.0)[1][0] == "corrupt"


def test_record_keys_are_fixed_length_and_unambiguous() -> None:
    a = record_key("ns", "ab", "c")
    assert a != record_key("ns", "a", "bc")
    assert len(record_key("ns", "x" * 100_000)) == len(a)


# -- the RPC flow (used by the gRPC server interceptor) ---------------------------------------
def test_records_run_for_rpc(clock: FakeClock) -> None:
    records = IdempotencyRecords(clock=clock)
    calls: list[int] = []

    def handler() -> bytes:
        calls.append(1)
        return b"\x00resp"

    args: dict[str, Any] = {"method": "/svc.A/B", "key": "k", "fingerprint": b"req"}
    assert records.run(principal="alice", handler=handler, **args) == (b"\x00resp", False)
    assert records.run(principal="alice", handler=handler, **args) == (b"\x00resp", True)
    assert records.run(principal="bob", handler=handler, **args) == (b"\x00resp", False)
    assert len(calls) == 2
    with pytest.raises(rs.IdempotencyKeyReusedError):
        records.run(principal="alice", handler=handler, **{**args, "fingerprint": b"other"})

    def failing() -> bytes:
        raise Boom

    with pytest.raises(Boom):
        records.run(principal="carol", handler=failing, **args)
    assert records.run(principal="carol", handler=handler, **args) == (b"\x00resp", False)


async def test_records_arun_for_rpc(clock: FakeClock) -> None:
    records = IdempotencyRecords(clock=clock)
    calls: list[int] = []

    async def handler() -> bytes:
        calls.append(1)
        return b"resp"

    args: dict[str, Any] = {"principal": "a", "method": "/m", "key": "k", "fingerprint": b""}
    assert await records.arun(handler=handler, **args) == (b"resp", False)
    assert await records.arun(handler=handler, **args) == (b"resp", True)
    assert len(calls) == 1
