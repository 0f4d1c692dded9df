"""gRPC server interceptors (sync and aio servers): policy errors as statuses, what the pipeline
sees, the idempotency hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

import resilience as rs
from interceptors.grpc import (
    StatusError,
    idempotency_key,
)
from resilience import Emitter

from ...grpc_fixtures import Code, Fail, Script
from .grpc_support import EXPECTED, SHAPES, Gate, Served, trailer


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("error", "code", "pushback"),
    [
        (rs.RateLimitedError("slow down", retry_after=0.25), Code.RESOURCE_EXHAUSTED, "250"),
        (rs.CircuitOpenError("open", retry_after=3.0), Code.UNAVAILABLE, "3000"),
        (rs.BulkheadFullError("full"), Code.UNAVAILABLE, None),
        (rs.TimeoutExceededError("late"), Code.DEADLINE_EXCEEDED, None),
        (rs.IdempotencyInProgressError("busy"), Code.ABORTED, None),
    ],
    ids=["limiter", "breaker", "bulkhead", "timeout", "idempotency"],
)
def test_server_maps_policy_errors_to_statuses(
    served: Served,
    script: Script,
    shape: str,
    error: Exception,
    code: grpc.StatusCode,
    pushback: str | None,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        served.run(script, {"pipeline": Gate(reject=error)}, shape)
    assert info.value.code() == code
    assert trailer(info.value).get("grpc-retry-pushback-ms") == pushback
    assert script.calls == 0


@pytest.mark.parametrize("shape", SHAPES)
def test_server_says_forced_open_in_status_details(
    served: Served, script: Script, shape: str
) -> None:
    breaker = rs.CircuitBreaker("upstream", failure_count=1)
    breaker.open()
    with pytest.raises(grpc.RpcError) as info:
        served.run(script, {"pipeline": rs.Pipeline(breaker)}, shape)
    assert info.value.code() == Code.UNAVAILABLE
    assert "forced open" in (info.value.details() or "")
    assert "grpc-retry-pushback-ms" not in trailer(info.value)
    assert script.calls == 0


@pytest.mark.parametrize("shape", SHAPES)
def test_server_pipeline_sees_aborts_as_status_errors(
    served: Served, script: Script, shape: str
) -> None:
    gate = Gate()
    script.plan = [Fail(Code.UNAVAILABLE, pushback="10")]
    with pytest.raises(grpc.RpcError) as info:
        served.run(script, {"pipeline": gate}, shape)
    assert info.value.code() == Code.UNAVAILABLE
    assert info.value.details() == "scripted"
    assert trailer(info.value).get("grpc-retry-pushback-ms") == "10"
    (outcome,) = gate.outcomes
    assert isinstance(outcome, StatusError)
    assert outcome.code() == Code.UNAVAILABLE


def test_server_pipeline_sees_set_code_as_failure(served: Served, script: Script) -> None:
    gate = Gate()
    script.plan = [Fail(Code.INTERNAL, set_code=True)]
    with pytest.raises(grpc.RpcError) as info:
        served.run(script, {"pipeline": gate}, "unary_unary")
    assert info.value.code() == Code.INTERNAL
    assert [o.code() for o in gate.outcomes] == [Code.INTERNAL]


@pytest.mark.parametrize("shape", SHAPES)
def test_server_success_and_deadline_per_shape(served: Served, script: Script, shape: str) -> None:
    gate = Gate()
    assert served.run(script, {"pipeline": gate}, shape, timeout=5.0) == EXPECTED[shape]
    assert gate.outcomes == ["ok"]
    (left,) = script.remaining
    assert left is not None
    assert 3.0 < left <= 5.1


def test_server_unmapped_exception_is_unknown(served: Served, script: Script) -> None:
    with pytest.raises(grpc.RpcError) as info:
        served.run(script, {"pipeline": Gate(reject=KeyError("x"))}, "unary_unary")
    assert info.value.code() == Code.UNKNOWN


def test_server_idempotency_hook(served: Served, script: Script) -> None:
    seen: list[str | None] = []

    class KeyProbe(Gate):
        def wrap_sync(self, fn: Callable[..., Any], em: Emitter) -> Callable[..., Any]:
            def probe(*args: Any) -> Any:
                seen.append(idempotency_key())
                return fn(*args)

            return probe

        def wrap_async(self, fn: Callable[..., Any], em: Emitter) -> Callable[..., Any]:
            async def probe(*args: Any) -> Any:
                seen.append(idempotency_key())
                return await fn(*args)

            return probe

    kw = {"pipeline": None, "idempotency": KeyProbe(), "idempotency_required": True}
    md = (("idempotency-key", "k-1"),)
    assert served.run(script, kw, "unary_unary", metadata=md) == b"re:a"
    assert seen == ["k-1"]
    for bad in [(), (("idempotency-key", "has space"),)]:
        with pytest.raises(grpc.RpcError) as info:
            served.run(script, kw, "unary_unary", metadata=bad)
        assert info.value.code() == Code.INVALID_ARGUMENT
    assert script.calls == 1
