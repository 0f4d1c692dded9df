"""httpx transports: attempt timeouts from the remaining deadline, clamping, expired and real
deadlines.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import resilience as rs
from interceptors.httpx import (
    AsyncResilientTransport,
    http_retry,
)
from resilience.testing import FakeClock

from .httpx_support import (
    Reply,
    Tracking,
    fetch,
    retry,
    run_transport,
)

# -- deadlines ---------------------------------------------------------------------------------


def test_attempt_timeouts_come_from_the_remaining_deadline(mode: str, clock: FakeClock) -> None:
    inner = Tracking([503, 200])
    seen: list[dict[str, Any]] = []

    class Spy(Tracking):
        def _next(self, request: httpx.Request) -> httpx.Response:
            seen.append(dict(request.extensions["timeout"]))
            return inner._next(request)

    timeout = {"connect": 1.0, "read": 9.0, "write": 9.0, "pool": None}
    policy = retry(clock, backoff=rs.backoff.constant(0.5))

    def run() -> Any:
        return run_transport(mode, policy, Spy([]), extensions={"timeout": timeout})

    with rs.deadline_scope(3.0, clock=clock):
        if mode == "sync":
            assert run().status_code == 200
        else:

            async def go() -> Any:
                transport = AsyncResilientTransport(policy, transport=Spy([]))
                return await transport.handle_async_request(
                    httpx.Request("GET", "http://svc.local/", extensions={"timeout": timeout})
                )

            assert asyncio.run(go()).status_code == 200
    assert seen == [
        {"connect": 1.0, "read": 3.0, "write": 3.0, "pool": 3.0},
        {"connect": 1.0, "read": 2.5, "write": 2.5, "pool": 2.5},
    ]


def test_far_off_deadline_is_clamped_to_what_the_socket_accepts(mode: str, script: Any) -> None:
    s = script(Reply(200))
    seen: list[dict[str, Any]] = []

    class Spy(Tracking):
        def _next(self, request: httpx.Request) -> httpx.Response:
            seen.append(dict(request.extensions["timeout"]))
            return super()._next(request)

    with rs.deadline_scope(1e12):  # e.g. what an absurd inbound Request-Timeout publishes
        assert fetch(mode, http_retry(), "GET", s.url).status_code == 200  # no OverflowError
        assert run_transport(mode, http_retry(), Spy([200])).status_code == 200
    assert seen == [{"connect": 1e8, "read": 1e8, "write": 1e8, "pool": 1e8}]


def test_expired_deadline_sends_nothing(mode: str, clock: FakeClock) -> None:
    inner = Tracking([200])
    with rs.deadline_scope(1.0, clock=clock):
        clock.advance(1.0)
        with pytest.raises(rs.TimeoutExceededError):
            run_transport(mode, retry(clock), inner)
    assert inner.requests == []


def test_real_deadline_bounds_a_slow_server(mode: str, script: Any) -> None:
    s = script(Reply(200, delay=5.0))
    # a deadline long enough to connect and send on a loaded machine, far shorter than the reply
    with rs.deadline_scope(1.5), pytest.raises(httpx.ReadTimeout):
        fetch(mode, http_retry(attempts=1), "GET", s.url)


def test_timeout_policy_publishes_the_deadline(mode: str, script: Any, clock: FakeClock) -> None:
    s = script(Reply(503), Reply(200))
    pipeline = rs.Pipeline(rs.Timeout(5, clock=clock), retry(clock))
    assert fetch(mode, pipeline, "GET", s.url).status_code == 200
