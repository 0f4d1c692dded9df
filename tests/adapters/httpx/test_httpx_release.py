"""httpx transports: every discarded response is closed and the connection pool never runs dry."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import resilience as rs
from interceptors.httpx import (
    AsyncResilientTransport,
    ResilientTransport,
)
from resilience import Emitter
from resilience.testing import FakeClock

from .httpx_support import (
    Reply,
    Tracking,
    retry,
    run_transport,
)

# -- connections and responses are released --------------------------------------------------


def test_retried_responses_are_closed_and_the_pool_does_not_run_dry(
    mode: str, script: Any, clock: FakeClock
) -> None:
    s = script(Reply(503, body=b"x" * 100_000), Reply(503, body=b"y" * 100_000), Reply(200))
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    timeout = httpx.Timeout(5, pool=0.5)
    if mode == "sync":
        inner: Any = httpx.HTTPTransport(limits=limits)
        with httpx.Client(
            transport=ResilientTransport(retry(clock), transport=inner), timeout=timeout
        ) as client:
            statuses = [client.get(s.url).status_code for _ in range(3)]
    else:

        async def go() -> list[int]:
            inner = httpx.AsyncHTTPTransport(limits=limits)
            async with httpx.AsyncClient(
                transport=AsyncResilientTransport(retry(clock), transport=inner), timeout=timeout
            ) as client:
                return [(await client.get(s.url)).status_code for _ in range(3)]

        statuses = asyncio.run(go())
    assert statuses == [200, 200, 200]
    assert len(s.seen) == 5


def test_every_discarded_response_is_closed(mode: str, clock: FakeClock) -> None:
    inner = Tracking([503, 503, 200])
    response = run_transport(mode, retry(clock), inner)
    assert response is inner.responses[-1]
    assert [r.is_closed for r in inner.responses] == [True, True, False]


def test_response_is_closed_when_a_later_policy_fails(mode: str, clock: FakeClock) -> None:
    inner = Tracking([503])
    pipeline = rs.Pipeline(rs.Fallback(on=ZeroDivisionError, value=None), retry(clock))

    class Boom(rs.Policy):
        kind = "boom"

        def wrap_sync(self, fn: Any, em: Emitter) -> Any:
            def w(*a: Any) -> Any:
                fn(*a)
                raise KeyError("after")

            return w

        def wrap_async(self, fn: Any, em: Emitter) -> Any:
            async def w(*a: Any) -> Any:
                await fn(*a)
                raise KeyError("after")

            return w

    with pytest.raises(KeyError):
        run_transport(mode, rs.Pipeline(pipeline, Boom(name="boom")), inner)
    assert [r.is_closed for r in inner.responses] == [True]
