"""httpx transports: retried status codes and server-directed delays (Retry-After and friends), for
http_retry() and any Retry.
"""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

import pytest

import resilience as rs
from resilience.events import RetryScheduled
from resilience.testing import FakeClock, RecordingListener

from .httpx_support import (
    Reply,
    fetch,
    plain_retry,
    retry,
)

# -- status codes and server-directed delays -------------------------------------------------


def test_retries_503_honouring_retry_after(mode: str, script: Any, clock: FakeClock) -> None:
    s = script(Reply(503, {"Retry-After": "2"}), Reply(503, {"Retry-After": "1"}), Reply(200))
    response = fetch(mode, retry(clock, attempts=3), "GET", s.url)
    assert (response.status_code, response.text) == (200, "ok")
    assert len(s.seen) == 3
    assert clock.sleeps == [2.0, 1.0]


def test_exhausted_returns_the_last_response(mode: str, script: Any, clock: FakeClock) -> None:
    s = script(Reply(503, body=b"first"), Reply(502, body=b"last"))
    response = fetch(mode, retry(clock, attempts=3), "GET", s.url)
    assert (response.status_code, response.text) == (502, "last")
    assert len(s.seen) == 3
    assert clock.sleeps == [0.5, 0.5]


def test_retry_after_http_date(mode: str, script: Any) -> None:
    clock = FakeClock(epoch=1_700_000_000.0)
    s = script(Reply(429, {"Retry-After": formatdate(1_700_000_007, usegmt=True)}), Reply(200))
    assert fetch(mode, retry(clock), "GET", s.url).status_code == 200
    assert clock.sleeps == [7.0]


@pytest.mark.parametrize(
    ("headers", "sleeps"),
    [
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, []),  # in the past: retry at once
        ({"Retry-After": "soon"}, [0.5]),  # malformed: backoff
        ({"Retry-After": "-3"}, [0.5]),
        ({"Retry-After": "1.5"}, [0.5]),  # delay-seconds are integers
        ({"RateLimit": '"default";r=0;t=4'}, [4.0]),
        ({"RateLimit": '"a";r=5;t=1, "b";r=0;t=9'}, [9.0]),
        ({"RateLimit": '"default";r=0;t=4', "Retry-After": "2"}, [2.0]),  # Retry-After wins
        ({"RateLimit": "garbage;;;=,"}, [0.5]),
    ],
)
def test_server_delay_forms(
    mode: str, script: Any, clock: FakeClock, headers: dict[str, str], sleeps: list[float]
) -> None:
    s = script(Reply(429, headers), Reply(200))
    assert fetch(mode, retry(clock), "GET", s.url).status_code == 200
    assert clock.sleeps == sleeps
    assert len(s.seen) == 2


def test_retry_after_beyond_the_cap_gives_up(mode: str, script: Any, clock: FakeClock) -> None:
    s = script(Reply(503, {"Retry-After": "3600"}), Reply(200))
    response = fetch(mode, retry(clock, max_retry_after=60), "GET", s.url)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3600"
    assert len(s.seen) == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("headers", "sleeps"),
    [
        ({"Retry-After": "1"}, [1.0]),
        ({"RateLimit": '"default";r=0;t=4'}, [4.0]),
        ({"Retry-After": "soon"}, [0.01]),  # garbage: ignored, the backoff decides
        ({"Retry-After": "-3"}, [0.01]),
        ({}, [0.01]),
    ],
)
def test_plain_retry_honours_the_server_hint(
    mode: str, script: Any, clock: FakeClock, headers: dict[str, str], sleeps: list[float]
) -> None:
    s = script(Reply(503, headers), Reply(200))
    rec = RecordingListener()
    response = fetch(mode, plain_retry(clock, listeners=[rec]), "GET", s.url)
    assert response.status_code == 200
    assert clock.sleeps == sleeps
    (scheduled,) = rec.of(RetryScheduled)
    assert scheduled.delay == sleeps[0]
    assert scheduled.server_directed is (sleeps != [0.01])


def test_plain_retry_hint_from_an_http_date_uses_the_transport_clock(
    mode: str, script: Any
) -> None:
    clock = FakeClock(epoch=1_700_000_000.0)
    s = script(Reply(503, {"Retry-After": formatdate(1_700_000_003, usegmt=True)}), Reply(200))
    response = fetch(mode, plain_retry(clock), "GET", s.url, transport_kw={"clock": clock})
    assert response.status_code == 200
    assert clock.sleeps == [3.0]


def test_plain_retry_hint_is_capped_by_the_deadline(
    mode: str, script: Any, clock: FakeClock
) -> None:
    s = script(Reply(503, {"Retry-After": "5"}), Reply(200))
    rec = RecordingListener()
    with rs.deadline_scope(2.0, clock=clock):
        response = fetch(mode, plain_retry(clock, listeners=[rec]), "GET", s.url)
    assert response.status_code == 503  # waiting 5 s would cross the deadline: stop now
    assert len(s.seen) == 1
    assert clock.sleeps == []
    assert [e.reason for e in rec.of(rs.events.RetriesExhausted)] == ["deadline"]


def test_a_retry_after_hook_given_to_the_retry_wins(
    mode: str, script: Any, clock: FakeClock
) -> None:
    s = script(Reply(503, {"Retry-After": "1"}), Reply(200))
    policy = plain_retry(clock, retry_after=lambda outcome: 0.25)
    assert fetch(mode, policy, "GET", s.url).status_code == 200
    assert clock.sleeps == [0.25]
    s = script(Reply(503, {"Retry-After": "1"}), Reply(200))
    clock.sleeps.clear()
    assert fetch(mode, plain_retry(clock, retry_after=None), "GET", s.url).status_code == 200
    assert clock.sleeps == [0.01]  # retry_after=None: server hints off


def test_statuses_outside_the_list_are_not_retried(
    mode: str, script: Any, clock: FakeClock
) -> None:
    s = script(Reply(500), Reply(200))
    assert fetch(mode, retry(clock), "GET", s.url).status_code == 500
    assert len(s.seen) == 1
