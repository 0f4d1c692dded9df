"""Idempotent policy, first call and replay: runs once, duplicates replay, fingerprints, stored
exceptions, codecs, keys and configuration (sync and async).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import resilience as rs
from resilience.events import IdempotentReplay
from resilience.testing import FakeClock, RecordingListener

from ..conftest import Runner
from ..helpers import Boom
from .support import Counter, by_first_arg, policy


def test_first_call_runs_duplicates_replay(runner: Runner, clock: FakeClock) -> None:
    rec = RecordingListener()
    p = policy(clock, listeners=[rec])
    c = Counter(runner)
    assert runner.run(p, c.fn, "k1") == {"run": 1}
    assert runner.run(p, c.fn, "k1") == {"run": 1}
    assert runner.run(p, c.fn, "k2") == {"run": 2}
    assert c.n == 2
    assert len(rec.of(IdempotentReplay)) == 1


def test_same_key_different_arguments_is_refused(runner: Runner, clock: FakeClock) -> None:
    p = policy(clock)
    c = Counter(runner)
    runner.run(p, c.fn, "k", 1)
    with pytest.raises(rs.IdempotencyKeyReusedError):
        runner.run(p, c.fn, "k", 2)
    assert runner.run(p, c.fn, "k", 1) == {"run": 1}  # the original record is untouched
    assert c.n == 1


def test_record_expires_after_ttl_from_completion(runner: Runner, clock: FakeClock) -> None:
    p = policy(clock, ttl=100)
    c = Counter(runner)
    runner.run(p, c.fn, "k")
    clock.advance(99.9)
    assert runner.run(p, c.fn, "k") == {"run": 1}
    clock.advance(0.2)
    assert runner.run(p, c.fn, "k") == {"run": 2}


def test_exceptions_release_by_default(runner: Runner, clock: FakeClock) -> None:
    p = policy(clock)
    c = Counter(runner, Boom("no"))
    with pytest.raises(Boom):
        runner.run(p, c.fn, "k")
    c.outcome = None
    assert runner.run(p, c.fn, "k") == {"run": 2}


def test_listed_exceptions_are_stored_and_replayed(runner: Runner, clock: FakeClock) -> None:
    p = policy(clock, store_errors=(Boom,))
    c = Counter(runner, Boom("payment timed out", 7))
    with pytest.raises(Boom):
        runner.run(p, c.fn, "k")
    with pytest.raises(Boom) as info:
        runner.run(p, c.fn, "k")
    assert info.value.args == ("payment timed out", 7)
    assert any("replayed" in n for n in info.value.__notes__)
    assert c.n == 1
    # unlisted exceptions still release
    c2 = Counter(runner, KeyError("x"))
    with pytest.raises(KeyError):
        runner.run(p, c2.fn, "k2")
    with pytest.raises(KeyError):
        runner.run(p, c2.fn, "k2")
    assert c2.n == 2


def test_unencodable_result_is_returned_once_then_refused(runner: Runner, clock: FakeClock) -> None:
    p = policy(clock)
    marker = object()
    c = Counter(runner, marker)
    assert runner.run(p, c.fn, "k") is marker
    with pytest.raises(rs.IdempotencyConflictError, match="could not be stored"):
        runner.run(p, c.fn, "k")
    assert c.n == 1


def test_fingerprint_options(runner: Runner, clock: FakeClock) -> None:
    c = Counter(runner)
    with pytest.raises(rs.ConfigurationError, match="fingerprint="):
        runner.run(policy(clock), c.fn, "k", object())
    loose = policy(clock, fingerprint=None)
    assert runner.run(loose, c.fn, "k", 1) == runner.run(loose, c.fn, "k", 2)
    custom = policy(clock, fingerprint=lambda k, body: body["amount"].to_bytes(4, "big"))
    runner.run(custom, c.fn, "k", {"amount": 1, "noise": 1})
    assert runner.run(custom, c.fn, "k", {"amount": 1, "noise": 2}) == {"run": 2}
    with pytest.raises(rs.IdempotencyKeyReusedError):
        runner.run(custom, c.fn, "k", {"amount": 2})


def test_none_key_runs_unprotected_and_bad_keys_are_refused(
    runner: Runner, clock: FakeClock
) -> None:
    c = Counter(runner)
    p = rs.Idempotent(key=lambda *a: None, clock=clock)
    runner.run(p, c.fn)
    runner.run(p, c.fn)
    assert c.n == 2
    with pytest.raises(rs.ConfigurationError):
        runner.run(rs.Idempotent(key=lambda *a: "", clock=clock), c.fn)
    with pytest.raises(rs.ConfigurationError):
        runner.run(rs.Idempotent(key=lambda *a: 42, clock=clock), c.fn)  # type: ignore[arg-type]


def test_message_consumer_redeliveries_do_not_repeat_side_effects(
    runner: Runner, clock: FakeClock
) -> None:
    """The consumer pattern: key = message id, fingerprint = message body."""
    sent: list[str] = []
    consume = rs.Idempotent(
        key=lambda msg: msg["id"],
        fingerprint=lambda msg: msg["body"].encode(),
        ttl=7 * 86400,
        clock=clock,
    )

    def side_effect(msg: dict[str, str]) -> str:
        sent.append(msg["body"])
        return "acked"

    handler = runner.wrap(lambda: None)  # unused, keeps the sync/async symmetry
    del handler
    if runner.is_async:

        async def ahandle(msg: dict[str, str]) -> str:
            return side_effect(msg)

        wrapped: Any = consume(ahandle)
    else:
        wrapped = consume(side_effect)
    stream = [
        {"id": "m1", "body": "email alice"},
        {"id": "m2", "body": "email bob"},
        {"id": "m1", "body": "email alice"},  # redelivered (consumer crashed before acking)
        {"id": "m2", "body": "email bob"},
        {"id": "m1", "body": "email alice"},
    ]
    acks = [asyncio.run(wrapped(m)) if runner.is_async else wrapped(m) for m in stream]
    assert acks == ["acked"] * 5
    assert sent == ["email alice", "email bob"]


def test_configuration_errors(clock: FakeClock) -> None:
    with pytest.raises(rs.ConfigurationError, match="key"):
        rs.Idempotent(key="order_id")  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError, match="lease"):
        rs.Idempotent(key=by_first_arg, lease=0)
    with pytest.raises(rs.ConfigurationError, match="store_errors"):
        rs.Idempotent(key=by_first_arg, store_errors=("x",))  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError, match="on_store_error"):
        rs.Idempotent(key=by_first_arg, on_store_error="maybe")  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError, match="store"):
        rs.Idempotent(key=by_first_arg, store=object())
    with pytest.raises(rs.ConfigurationError, match="codec"):
        rs.Idempotent(key=by_first_arg, codec=object())  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError, match="fingerprint"):
        rs.Idempotent(key=by_first_arg, fingerprint="body")  # type: ignore[arg-type]
    assert rs.Idempotent(key=by_first_arg).describe()["store_errors"] == "never"


def test_custom_codec_with_bytes(runner: Runner, clock: FakeClock) -> None:
    class TupleCodec:
        def encode(self, value: Any) -> bytes:
            return repr(value).encode()

        def decode(self, data: str | bytes) -> Any:
            assert isinstance(data, bytes)
            return tuple(int(x) for x in data.decode().strip("()").split(",") if x.strip())

    p = policy(clock, codec=TupleCodec())
    c = Counter(runner, (1, 2))
    runner.run(p, c.fn, "k")
    assert runner.run(p, c.fn, "k") == (1, 2)
