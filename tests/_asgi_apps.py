"""Small raw ASGI apps and test policies for the middleware tests."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import resilience as rs
from interceptors.asgi._common import Receive, Scope, Send
from resilience._policy import Emitter


async def respond(send: Send, status: int, body: bytes, headers: list[Any] | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


class TestApp:
    """Routes: /hello /stream /forever /boom /boom-after-start /echo /deadline /status/<n> /slow."""

    __test__ = False

    def __init__(self) -> None:
        self.release = threading.Event()
        self.state: dict[str, Any] = {}
        self.lifespan: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    self.lifespan.append("startup")
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    self.lifespan.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["type"] == "http"
        path: str = scope["path"]
        if path == "/hello" or path == "/health":
            await respond(send, 200, b"hello")
        elif path == "/stream":
            self.state["stream_done"] = False
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            for _ in range(1000):  # at most 5 s, waiting for the test to have read "first"
                if self.release.is_set():
                    break
                await asyncio.sleep(0.005)
            await send({"type": "http.response.body", "body": b"second"})
            self.state["stream_done"] = True
        elif path == "/forever":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for _ in range(1000):
                await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
                try:
                    msg = await asyncio.wait_for(receive(), 0.01)
                except TimeoutError:
                    continue
                if msg["type"] == "http.disconnect":
                    self.state["disconnected"] = True
                    return
        elif path == "/boom":
            raise RuntimeError("boom")
        elif path == "/boom-after-start":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            raise RuntimeError("boom after start")
        elif path == "/echo":
            chunks = []
            while True:
                msg = await receive()
                chunks.append(msg.get("body", b""))
                if not msg.get("more_body"):
                    break
            self.state["echo_chunks"] = len(chunks)
            await respond(send, 200, b"".join(chunks))
        elif path == "/deadline":
            await respond(send, 200, json.dumps(rs.remaining()).encode())
        elif path.startswith("/status/"):
            await respond(send, int(path.rsplit("/", 1)[1]), b"status")
        elif path == "/slow":
            await asyncio.sleep(5)  # long enough to be cut short by the timeout under test
            await respond(send, 200, b"late")
        else:
            await respond(send, 404, b"not found")


class Permits(rs.Policy):
    """A bulkhead-like test policy: counts calls in flight and records every outcome."""

    kind = "test_permits"

    def __init__(self) -> None:
        super().__init__(name="permits")
        self.in_flight = 0
        self.outcomes: list[str] = []
        self.operations: list[str] = []

    def wrap_async(
        self, fn: Callable[..., Awaitable[Any]], em: Emitter
    ) -> Callable[..., Awaitable[Any]]:
        async def permits(*args: Any, **kwargs: Any) -> Any:
            self.in_flight += 1
            self.operations.append(em.operation)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                self.outcomes.append(type(exc).__name__)
                raise
            finally:
                self.in_flight -= 1
            self.outcomes.append("ok")
            return result

        return permits


class Reject(rs.Policy):
    """Raises ``error`` instead of calling through."""

    kind = "test_reject"

    def __init__(self, error: BaseException) -> None:
        super().__init__(name="reject")
        self.error = error

    def wrap_async(
        self, fn: Callable[..., Awaitable[Any]], em: Emitter
    ) -> Callable[..., Awaitable[Any]]:
        async def reject(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return reject

    def wrap_sync(self, fn: Callable[..., Any], em: Emitter) -> Callable[..., Any]:
        def reject(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return reject


@dataclass
class Decision:
    allowed: bool
    retry_after: float | None
    remaining: int
    limit: int


@dataclass
class FakeLimiter:
    """A fixed per-key quota (no refill): enough to check the middleware's side."""

    name: str = "api"
    rate: float = 2
    per: float = 1.0
    keys: list[str] = field(default_factory=list)
    used: dict[str, int] = field(default_factory=dict)

    def try_acquire(self, *, key: str, cost: int = 1) -> Decision:
        self.keys.append(key)
        used = self.used.get(key, 0)
        limit = int(self.rate)
        if used + cost > limit:
            return Decision(False, 0.4, 0, limit)
        self.used[key] = used + cost
        return Decision(True, None, limit - used - cost, limit)
