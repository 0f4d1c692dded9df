"""httpx transports: which requests may be sent again (methods, idempotency keys, streaming bodies,
transport errors).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

import resilience as rs
from interceptors.httpx import (
    may_resend,
)
from resilience.testing import FakeClock

from .httpx_support import (
    Failing,
    Reply,
    fetch,
    retry,
    run_transport,
)

# -- which requests may be sent again ---------------------------------------------------------


def test_post_without_key_is_not_retried(mode: str, script: Any, clock: FakeClock) -> None:
    s = script(Reply(503), Reply(200))
    assert fetch(mode, retry(clock), "POST", s.url, content=b"{}").status_code == 503
    assert len(s.seen) == 1


def test_post_with_key_is_retried_with_the_same_key(
    mode: str, script: Any, clock: FakeClock
) -> None:
    s = script(Reply(503), Reply(200))
    headers = {"Idempotency-Key": "order-17"}
    response = fetch(mode, retry(clock), "POST", s.url, content=b"{}", headers=headers)
    assert response.status_code == 200
    assert [r["headers"]["idempotency-key"] for r in s.seen] == ["order-17", "order-17"]
    assert [r["body"] for r in s.seen] == [b"{}", b"{}"]


def test_automatic_idempotency_key_is_stable_across_attempts(
    mode: str, script: Any, clock: FakeClock
) -> None:
    s = script(Reply(503), Reply(502), Reply(200))
    response = fetch(
        mode,
        retry(clock),
        "PATCH",
        s.url,
        json={"a": 1},
        transport_kw={"idempotency_key": True},
    )
    assert response.status_code == 200
    keys = {r["headers"]["idempotency-key"] for r in s.seen}
    assert len(s.seen) == 3
    assert len(keys) == 1
    assert uuid.UUID(keys.pop()).version == 4


def test_streaming_body_is_never_replayed(mode: str, script: Any, clock: FakeClock) -> None:
    s = script(Reply(503), Reply(200))
    careless = rs.Retry(  # ignores may_resend: the transport's own guard must hold
        on=httpx.TransportError,
        on_result=lambda r: r.status_code == 503,
        backoff=rs.backoff.constant(0),
        clock=clock,
    )
    headers = {"Idempotency-Key": "k"}
    if mode == "sync":
        content: Any = iter([b"a", b"b"])
    else:

        async def agen() -> Any:
            yield b"a"
            yield b"b"

        content = agen()
    response = fetch(mode, careless, "PUT", s.url, content=content, headers=headers)
    assert response.status_code == 503
    assert [r["body"] for r in s.seen] == [b"ab"]


def test_careless_retry_of_unkeyed_post_returns_the_first_response(
    mode: str, script: Any, clock: FakeClock
) -> None:
    s = script(Reply(503, body=b"only"), Reply(200))
    careless = rs.Retry(on=Exception, on_result=lambda r: r.status_code == 503, clock=clock)
    response = fetch(mode, careless, "POST", s.url, content=b"x")
    assert (response.status_code, response.text) == (503, "only")
    assert len(s.seen) == 1


def test_may_resend_rules() -> None:
    get = httpx.Request("GET", "http://h/")
    post = httpx.Request("POST", "http://h/", content=b"x")
    assert may_resend(get)
    assert not may_resend(post)
    assert not may_resend(post, httpx.ReadError("reset"))
    assert may_resend(post, httpx.ConnectError("refused"))  # nothing was sent
    assert may_resend(post, methods={"POST"})
    assert not may_resend(httpx.Request("GET", "http://h/", content=iter([b"x"])))
    streamed = httpx.Request("PUT", "http://h/", content=iter([b"x"]))
    streamed.read()  # read into memory: now replayable
    assert may_resend(streamed)


def test_connect_errors_are_retried_even_for_post(mode: str, clock: FakeClock) -> None:
    inner = Failing([httpx.ConnectError("refused"), None])
    response = run_transport(mode, retry(clock), inner, method="POST", content=b"x")
    assert response.status_code == 200
    assert len(inner.requests) == 2


def test_read_errors_are_not_retried_for_unkeyed_post(mode: str, clock: FakeClock) -> None:
    inner = Failing([httpx.ReadError("reset"), None])
    with pytest.raises(httpx.ReadError):
        run_transport(mode, retry(clock), inner, method="POST", content=b"x")
    assert len(inner.requests) == 1


def test_read_errors_are_retried_for_get(mode: str, clock: FakeClock) -> None:
    inner = Failing([httpx.ReadError("reset"), httpx.RemoteProtocolError("eof"), None])
    assert run_transport(mode, retry(clock), inner).status_code == 200
    assert clock.sleeps == [0.5, 0.5]


def test_careless_retry_of_unkeyed_post_after_error_reraises_it(
    mode: str, clock: FakeClock
) -> None:
    error = httpx.ReadError("reset")
    inner = Failing([error, None])
    careless = rs.Retry(on=Exception, backoff=rs.backoff.constant(0), clock=clock)
    with pytest.raises(httpx.ReadError) as info:
        run_transport(mode, careless, inner, method="POST", content=b"x")
    assert info.value is error
    assert len(inner.requests) == 1
