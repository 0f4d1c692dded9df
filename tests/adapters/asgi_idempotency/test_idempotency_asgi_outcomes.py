"""IdempotencyMiddleware when an outcome cannot be recorded: told by a header, responses wait for
their record, streams only logged.
"""

from __future__ import annotations

from typing import Any

import pytest

import resilience as rs
from interceptors.asgi import IdempotencyMiddleware
from resilience.stores import StoreOp
from resilience.testing import FakeClock

from .idempotency_app import App, client


# -- an outcome that could not be recorded is told (issue 12 item 3) ---------------------------
class FailingCompletions:
    """A memory store whose completions fail (the first ``failures`` of them, or all)."""

    def __init__(self, clock: FakeClock, failures: int | None = None) -> None:
        self.inner = rs.MemoryStore(clock=clock)
        self.failures = failures
        self.log: list[str] = []

    def apply(self, op: StoreOp[Any]) -> Any:
        if type(op).__name__ == "CompleteOp":
            if self.failures is None or self.failures > 0:
                if self.failures is not None:
                    self.failures -= 1
                self.log.append("complete failed")
                raise ConnectionError("store unreachable")
            self.log.append("complete stored")
        return self.inner.apply(op)


async def test_an_unrecorded_outcome_is_told_by_a_header(app: App) -> None:
    clock = FakeClock()
    events: list[Any] = []
    mw = IdempotencyMiddleware(
        app.app, store=FailingCompletions(clock), clock=clock, listeners=[events.append]
    )
    async with client(mw) as c:
        h = {"Idempotency-Key": "k-1"}
        first = await c.post("/orders", content=b"pay 5", headers=h)
        again = await c.post("/orders", content=b"pay 5", headers=h)
    assert first.status_code == 201  # the response the app produced, intact
    assert first.json() == {"run": 1, "echo": "pay 5"}
    assert first.headers["idempotency-outcome"] == "unrecorded"
    assert first.headers["location"] == "/orders/1"
    assert 0 < clock.monotonic() <= 60  # the completion was retried while the lease was held
    assert again.status_code == 409  # the record stays in progress until its lease expires
    failed, conflict = events
    assert (failed.kind, failed.decision, failed.error_type, failed.policy) == (
        "store_error",
        "unrecorded",
        "ConnectionError",
        "http",
    )
    assert (conflict.kind, conflict.reason) == ("rejected", "idempotency_conflict")  # the 409


async def test_a_response_waits_for_its_record(app: App) -> None:
    """The start of a retained response is sent once the outcome is stored (after a blip
    here), and carries no marker then."""
    clock = FakeClock()
    store = FailingCompletions(clock, failures=2)
    mw = IdempotencyMiddleware(app.app, store=store, clock=clock)
    sent: list[Any] = []
    request = [{"type": "http.request", "body": b"pay 5", "more_body": False}]

    async def receive() -> Any:
        return request.pop() if request else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        store.log.append(message["type"])
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/orders",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"idempotency-key", b"k-2")],
        "client": ("10.0.0.1", 5000),
    }
    await mw(scope, receive, send)
    assert store.log == [
        "complete failed",
        "complete failed",
        "complete stored",
        "http.response.start",  # was sent before the record was even attempted
        "http.response.body",
    ]
    assert sent[0]["status"] == 201
    assert b"idempotency-outcome" not in dict(sent[0]["headers"])


async def test_a_streamed_unrecorded_outcome_is_only_logged_and_an_event(app: App) -> None:
    clock = FakeClock()
    events: list[Any] = []
    mw = IdempotencyMiddleware(
        app.app,
        store=FailingCompletions(clock),
        max_body=2500,
        clock=clock,
        listeners=[events.append],
    )
    async with client(mw) as c:
        r = await c.post("/big", headers={"Idempotency-Key": "k-3"})
    assert r.status_code == 200
    assert len(r.content) == 4000  # streamed through as before
    assert "idempotency-outcome" not in r.headers  # its start went out long before
    assert [e.decision for e in events] == ["unrecorded"]


async def test_released_responses_are_not_held(app: App) -> None:
    clock = FakeClock()
    mw = IdempotencyMiddleware(app.app, store=FailingCompletions(clock), clock=clock)
    async with client(mw) as c:
        r = await c.post("/status/503", headers={"Idempotency-Key": "k-4"})
        again = await c.post("/status/503", headers={"Idempotency-Key": "k-4"})
    assert r.status_code == again.status_code == 503
    assert "idempotency-outcome" not in r.headers  # released (not a stored outcome)
    assert app.runs == 2


def test_listeners_are_validated(app: App) -> None:
    with pytest.raises(rs.ConfigurationError):
        IdempotencyMiddleware(app.app, listeners=[42])  # type: ignore[list-item]
    with pytest.raises(rs.ConfigurationError):
        IdempotencyMiddleware(app.app, listeners="print")  # type: ignore[arg-type]
