"""One stored-outcome format for every idempotency adapter, and the dialects before it.

Every adapter writes one versioned JSON envelope (``{"v":1,"kind":...}``); records written by
an earlier version in its own dialect (the policy's ``r``/``e`` prefixes, the ASGI middleware's
``{"s","h","b"}``, the gRPC server's ``b`` + base64) are still replayed after an upgrade.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import resilience as rs
from interceptors.asgi import IdempotencyMiddleware
from resilience.idempotency import CompleteOp, StoredOutcome
from resilience.stores import StoreOp
from resilience.testing import FakeClock

from .._server import serve
from ..helpers import RawBytes


class Writer(rs.MemoryStore):
    """A memory store that remembers every stored outcome and may rewrite it first (to play
    a process of an earlier version writing its own dialect)."""

    def __init__(self, rewrite: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self.rewrite = rewrite
        self.stored: list[str | None] = []

    def apply(self, op: StoreOp[Any], /) -> Any:
        if isinstance(op, CompleteOp):
            if op.payload is not None and self.rewrite is not None:
                op = CompleteOp(op.key, op.owner, op.fence, self.rewrite(op.payload), op.ttl)
            self.stored.append(op.payload)
        return super().apply(op)


class Upper:
    def encode(self, value: str) -> str:
        return value.upper()

    def decode(self, data: str | bytes) -> str:
        return data.lower() if isinstance(data, str) else data.decode().lower()


class Declined(Exception):
    pass


def run(records: rs.IdempotencyRecords, response: bytes) -> tuple[bytes, bool]:
    """One gRPC-style request through the records (as the server interceptor makes it)."""
    return records.run(
        principal="p",
        method="/shop.Orders/Create",
        key="k",
        fingerprint=b"req",
        handler=lambda: response,
    )


def _json(payload: str | None) -> dict[str, Any]:
    assert payload is not None
    data: dict[str, Any] = json.loads(payload)
    return data


# -- the one format ----------------------------------------------------------------------------
def test_every_kind_is_one_versioned_envelope() -> None:
    store = Writer()
    clock = FakeClock()
    runs: list[int] = []

    @rs.Idempotent(key=lambda k: k, store=store, clock=clock)
    def as_json(k: str) -> dict[str, Any]:
        runs.append(1)
        return {"id": 7, "tags": ["a"]}

    @rs.Idempotent(key=lambda k: k, store=store, clock=clock, codec=RawBytes())
    def as_bytes(k: str) -> bytes:
        runs.append(1)
        return b"\x00raw"

    @rs.Idempotent(key=lambda k: k, store=store, clock=clock, codec=Upper())
    def as_text(k: str) -> str:
        runs.append(1)
        return 'say "hi"'

    @rs.Idempotent(key=lambda k: k, store=store, clock=clock, store_errors=(Declined,))
    def declines(k: str) -> None:
        runs.append(1)
        raise Declined("card declined", 402)

    for _ in range(2):  # the second round replays what the first stored
        assert as_json("j") == {"id": 7, "tags": ["a"]}
        assert as_bytes("b") == b"\x00raw"
        assert as_text("t") == 'say "hi"'
        with pytest.raises(Declined) as info:
            declines("e")
        assert info.value.args == ("card declined", 402)
    assert len(runs) == 4
    records = rs.IdempotencyRecords(store=store, clock=clock)
    assert run(records, b"\x01resp") == (b"\x01resp", False)
    assert run(records, b"other") == (b"\x01resp", True)

    j, b, t, e, g = (_json(p) for p in store.stored)
    assert j == {"v": 1, "kind": "result", "json": {"id": 7, "tags": ["a"]}}
    assert b == {"v": 1, "kind": "result", "b64": base64.b64encode(b"\x00raw").decode()}
    assert t == {"v": 1, "kind": "result", "text": 'SAY "HI"'}
    assert e == {
        "v": 1,
        "kind": "error",
        "type": f"{__name__}.Declined",
        "args": ["card declined", 402],
        "raised": f"{__name__}.Declined",
    }
    assert g == {"v": 1, "kind": "grpc", "b64": base64.b64encode(b"\x01resp").decode()}
    assert [list(d)[:2] for d in (j, b, t, e, g)] == [["v", "kind"]] * 5  # always first


async def test_http_responses_use_the_envelope_too() -> None:
    store = Writer()

    async def create(request: Request) -> Response:
        return JSONResponse({"ok": True}, status_code=201)

    app = Starlette(routes=[Route("/orders", create, methods=["POST"])])
    mw = IdempotencyMiddleware(app, store=store, clock=FakeClock())
    transport = httpx.ASGITransport(app=mw)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        first = await c.post("/orders", headers={"Idempotency-Key": "k"})
        again = await c.post("/orders", headers={"Idempotency-Key": "k"})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["idempotent-replayed"] == "true"
    stored = _json(store.stored[0])
    assert (stored["v"], stored["kind"], stored["status"]) == (1, "http", 201)
    assert ["content-type", "application/json"] in stored["headers"]
    assert base64.b64decode(stored["b64"]) == first.content


# -- the dialects before it: read old, write new --------------------------------------------------
def _old_result(payload: str) -> str:
    """The policy's result dialect: ``r`` + ``s``/``b`` packed codec data."""
    body = StoredOutcome.decode(payload)
    if body.body is None:
        return "rs" + json.dumps(body.value, separators=(",", ":"))
    if isinstance(body.body, bytes):
        return "rb" + base64.b64encode(body.body).decode()
    return "rs" + body.body


def _old_error(payload: str) -> str:
    """The policy's error dialect: ``e`` + ``{"t": type, "a": args, "n": raised}``."""
    out = StoredOutcome.decode(payload)
    return "e" + json.dumps({"t": out.error_type, "a": list(out.error_args), "n": out.raised})


def _old_http(payload: str) -> str:
    """The ASGI middleware's dialect: ``{"s": status, "h": headers, "b": base64 body}``."""
    out = StoredOutcome.decode(payload)
    body = base64.b64encode(out.body if isinstance(out.body, bytes) else b"").decode()
    return json.dumps({"s": out.status, "h": [list(h) for h in out.headers], "b": body})


def _old_grpc(payload: str) -> str:
    """The gRPC server's (``IdempotencyRecords.run``) dialect: ``b`` + base64."""
    out = StoredOutcome.decode(payload)
    return "b" + base64.b64encode(out.body if isinstance(out.body, bytes) else b"").decode()


@pytest.mark.parametrize("codec", [None, RawBytes(), Upper()], ids=["json", "bytes", "text"])
def test_a_result_stored_in_the_old_policy_dialect_replays(codec: Any) -> None:
    store = Writer(_old_result)
    runs: list[int] = []
    value: Any = (
        {"n": [1, 2]} if codec is None else b"\xffraw" if isinstance(codec, RawBytes) else "x"
    )

    @rs.Idempotent(key=lambda k: k, store=store, clock=FakeClock(), codec=codec)
    def op(k: str) -> Any:
        runs.append(1)
        return value

    assert op("k") == value
    assert store.stored[0] is not None
    assert store.stored[0][:1] == "r"  # the old dialect
    assert op("k") == value  # replayed from it
    assert runs == [1]


def test_an_error_stored_in_the_old_policy_dialect_replays() -> None:
    store = Writer(_old_error)
    runs: list[int] = []

    @rs.Idempotent(key=lambda k: k, store=store, clock=FakeClock(), store_errors=(Declined,))
    def op(k: str) -> None:
        runs.append(1)
        raise Declined("no funds")

    for _ in range(2):
        with pytest.raises(Declined, match="no funds"):
            op("k")
    assert store.stored[0] is not None
    assert store.stored[0][:2] == "e{"
    assert runs == [1]


def test_a_response_stored_in_the_old_grpc_dialect_replays() -> None:
    store = Writer(_old_grpc)
    records = rs.IdempotencyRecords(store=store, clock=FakeClock())
    assert run(records, b"\x00resp") == (b"\x00resp", False)
    assert store.stored[0] is not None
    assert store.stored[0][:1] == "b"
    assert run(records, b"again") == (b"\x00resp", True)


def test_a_response_stored_in_the_old_asgi_dialect_replays_over_a_real_server() -> None:
    store = Writer(_old_http)
    runs: list[int] = []

    async def create(request: Request) -> Response:
        runs.append(1)
        return JSONResponse({"run": len(runs)}, status_code=201, headers={"location": "/o/1"})

    app = Starlette(routes=[Route("/orders", create, methods=["POST"])])
    with serve(IdempotencyMiddleware(app, store=store)) as url:
        first = httpx.post(f"{url}/orders", headers={"Idempotency-Key": "k"})
        again = httpx.post(f"{url}/orders", headers={"Idempotency-Key": "k"})
    assert store.stored[0] is not None
    assert store.stored[0][:5] == '{"s":'
    assert runs == [1]
    assert (again.status_code, again.content) == (201, first.content)
    assert again.headers["location"] == "/o/1"
    assert again.headers["idempotent-replayed"] == "true"


# -- what cannot be read fails closed ----------------------------------------------------------
@pytest.mark.parametrize(
    "payload",
    [
        '{"v":2,"kind":"result","json":1}',  # a future version
        '{"v":1,"kind":"telepathy"}',  # an unknown kind
        '{"v":1,"kind":"http","status":200,"headers":[],"b64":"b2s="}',  # another adapter's
        "x-garbage",
    ],
)
def test_an_unreadable_or_foreign_outcome_is_a_store_error(payload: str) -> None:
    store = Writer(lambda _: payload)
    runs: list[int] = []

    @rs.Idempotent(key=lambda k: k, store=store, clock=FakeClock())
    def op(k: str) -> int:
        runs.append(1)
        return 1

    assert op("k") == 1
    with pytest.raises(rs.StoreError, match="idempotency record"):
        op("k")
    records = rs.IdempotencyRecords(store=Writer(lambda _: payload), clock=FakeClock())
    run(records, b"resp")
    with pytest.raises(rs.StoreError, match="idempotency record"):
        run(records, b"resp")
    assert runs == [1]


def test_the_decoder_refuses_malformed_envelopes() -> None:
    for bad in (
        "[1]",
        '{"v":1,"kind":"http","status":"200","headers":[],"b64":""}',
        '{"v":1,"kind":"http","status":200,"headers":[[1,2]],"b64":""}',
        '{"v":1,"kind":"grpc","b64":"not base64!"}',
        '{"v":1,"kind":"error","type":"E","args":"x","raised":"E"}',
        "",
    ):
        with pytest.raises(ValueError, match="unreadable stored outcome"):
            StoredOutcome.decode(bad)


def test_a_v1_result_with_fields_after_the_value_is_read_whole() -> None:
    """The replay's fast path reads only the value; a v1 envelope carrying more falls back."""
    store = Writer(lambda _: '{"v":1,"kind":"result","json":{"a":[1]},"later":true}')

    @rs.Idempotent(key=lambda k: k, store=store, clock=FakeClock())
    def op(k: str) -> dict[str, Any]:
        return {"first": True}

    assert op("k") == {"first": True}
    assert op("k") == {"a": [1]}
