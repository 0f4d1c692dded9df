"""``listeners=`` on the httpx transports, against a real uvicorn server: the events of the
pipeline's and the per-host policies reach the transport's listeners, tagged "METHOD host"."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

import resilience as rs
from interceptors.httpx import AsyncResilientTransport, ResilientTransport, http_retry
from resilience.events import CallCompleted, RateLimitWaited, RetryScheduled
from resilience.testing import FakeClock, RecordingListener

from .httpx_support import Reply, Script


class CallEvents(RecordingListener):
    call_events = True  # also asks for one CallCompleted per request


def test_the_transports_hand_their_policies_events_to_their_listeners(
    script: Callable[..., Script], mode: str, clock: FakeClock
) -> None:
    s = script(Reply(503), Reply(503), Reply(200))
    mine = CallEvents()
    limiters: list[rs.RateLimiter] = []

    def per_host(host: str) -> rs.Policy:  # one attempt a second: the retries wait for theirs
        limiters.append(rs.RateLimiter(f"host {host}", rate=1, max_wait=5, clock=clock))
        return limiters[-1]

    retry = http_retry(attempts=3, backoff=rs.backoff.constant(0.25), clock=clock)
    kw = {"per_host": per_host, "listeners": [mine]}
    if mode == "sync":
        with httpx.Client(transport=ResilientTransport(retry, **kw)) as http:  # type: ignore[arg-type]
            status = http.get(s.url).status_code
    else:

        async def main() -> int:
            transport = AsyncResilientTransport(retry, **kw)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport) as http:
                return (await http.get(s.url)).status_code

        status = asyncio.run(main())
    assert status == 200
    assert len(s.seen) == 3
    host = httpx.URL(s.url).netloc.decode()
    retries = mine.of(RetryScheduled)
    assert [(e.policy, e.operation, e.delay) for e in retries] == [
        ("http_retry", f"GET {host}", 0.25),
        ("http_retry", f"GET {host}", 0.25),
    ]
    # the per-host limiter's waits (1 s apart, less the 0.25 s backoff) came through too
    assert [(e.policy, e.wait) for e in mine.of(RateLimitWaited)] == [
        (f"host {host}", 0.75),
        (f"host {host}", 0.75),
    ]
    (done,) = mine.of(CallCompleted)
    assert (done.operation, done.outcome) == (f"GET {host}", "success")
    assert retry.listeners == ()
    assert limiters[0].listeners == ()
