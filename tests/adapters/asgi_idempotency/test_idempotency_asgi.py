"""IdempotencyMiddleware in process: replays, key validation, principals and scopes, which statuses
and exceptions are stored.
"""

from __future__ import annotations

from typing import Any

import pytest

from interceptors.asgi import IdempotencyMiddleware
from interceptors.asgi._idempotency import parse_idempotency_key
from resilience.testing import FakeClock

from .idempotency_app import App, client


async def test_replay_is_identical_and_marked(app: App) -> None:
    mw = IdempotencyMiddleware(app.app, clock=FakeClock())
    async with client(mw) as c:
        first = await c.post("/orders", content=b"pay 5", headers={"Idempotency-Key": '"k-1"'})
        again = await c.post("/orders", content=b"pay 5", headers={"Idempotency-Key": "k-1"})
    assert app.runs == 1
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["location"] == "/orders/1"
    assert again.headers["content-type"] == "application/json"
    assert "set-cookie" in first.headers
    assert "set-cookie" not in again.headers


async def test_key_reuse_with_a_different_body_is_422(app: App) -> None:
    mw = IdempotencyMiddleware(app.app)
    async with client(mw) as c:
        await c.post("/orders", content=b"pay 5", headers={"Idempotency-Key": "k"})
        r = await c.post("/orders", content=b"pay 500", headers={"Idempotency-Key": "k"})
        q = await c.post("/orders?x=1", content=b"pay 5", headers={"Idempotency-Key": "k"})
        ok = await c.post("/orders", content=b"pay 5", headers={"Idempotency-Key": "k"})
    assert r.status_code == q.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 422
    assert ok.headers["idempotent-replayed"] == "true"
    assert app.runs == 1


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b'""',
        b"a b",
        b"x" * 256,
        b'"' + b"x" * 256 + b'"',
        b"caf\xc3\xa9",
        b"a\x00b",
        b'"abc',
        b'"a"b"',
        b"a,b",
        b'"a\\qb"',
        b"\tab\x7f",
    ],
)
async def test_malformed_keys_are_400_and_not_stored(app: App, value: bytes) -> None:
    mw = IdempotencyMiddleware(app.app)
    async with client(mw) as c:
        r = await c.post("/orders", content=b"x", headers=[(b"Idempotency-Key", value)])
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert app.runs == 0
    assert len(mw.records.store) == 0


async def test_two_key_fields_are_400(app: App) -> None:
    mw = IdempotencyMiddleware(app.app)
    async with client(mw) as c:
        r = await c.post(
            "/orders",
            content=b"x",
            headers=[(b"Idempotency-Key", b"a"), (b"Idempotency-Key", b"a")],
        )
    assert r.status_code == 400
    assert app.runs == 0


def test_key_parser_accepts_both_forms_and_escapes() -> None:
    assert parse_idempotency_key(b'"a\\"b"') == 'a"b'
    assert parse_idempotency_key(b"  k-1  ") == "k-1"
    assert parse_idempotency_key(b"x" * 255) == "x" * 255
    assert parse_idempotency_key(b"x" * 100_000) is None


async def test_required_and_optional_keys(app: App) -> None:
    required = IdempotencyMiddleware(app.app, required=True)
    optional = IdempotencyMiddleware(app.app)
    async with client(required) as c:
        r = await c.post("/orders", content=b"x")
        g = await c.get("/orders")  # GET is not in methods: passes through
    assert r.status_code == 400
    assert g.status_code == 201
    async with client(optional) as c:
        assert (await c.post("/orders", content=b"x")).status_code == 201
        assert (await c.post("/orders", content=b"x")).status_code == 201
    assert app.runs == 3


async def test_principals_are_isolated(app: App) -> None:
    mw = IdempotencyMiddleware(app.app)
    async with client(mw) as c:
        h = {"Idempotency-Key": "same"}
        a = await c.post("/orders", content=b"x", headers={**h, "Authorization": "Bearer alice"})
        b = await c.post("/orders", content=b"x", headers={**h, "Authorization": "Bearer bob"})
        a2 = await c.post("/orders", content=b"x", headers={**h, "Authorization": "Bearer alice"})
        other_path = await c.post(
            "/status/200", content=b"x", headers={**h, "Authorization": "Bearer alice"}
        )
    assert a.json()["run"] == 1
    assert b.json()["run"] == 2  # never alice's response
    assert a2.json()["run"] == 1
    assert "idempotent-replayed" not in b.headers
    assert other_path.text == "run 3"  # keys are scoped by method + path too


async def test_custom_scope_none_passes_through(app: App) -> None:
    mw = IdempotencyMiddleware(app.app, scope=lambda s: None)
    async with client(mw) as c:
        for _ in range(2):
            await c.post("/orders", content=b"x", headers={"Idempotency-Key": "k"})
    assert app.runs == 2


@pytest.mark.parametrize(
    ("code", "stored"),
    [(200, True), (400, True), (404, True), (500, True), (502, True), (429, False), (503, False)],
)
async def test_status_storage_policy(app: App, code: int, stored: bool) -> None:
    mw = IdempotencyMiddleware(app.app)
    async with client(mw) as c:
        h = {"Idempotency-Key": "k"}
        r1 = await c.post(f"/status/{code}", headers=h)
        r2 = await c.post(f"/status/{code}", headers=h)
    assert r1.status_code == r2.status_code == code
    assert app.runs == (1 if stored else 2)
    assert (r2.headers.get("idempotent-replayed") == "true") is stored


async def test_release_statuses_and_never_mode(app: App) -> None:
    mw = IdempotencyMiddleware(app.app, release_statuses={404}, store_errors="never")
    async with client(mw) as c:
        h = {"Idempotency-Key": "k"}
        for code in (404, 404, 500, 500):
            await c.post(f"/status/{code}", headers=h)
    assert app.runs == 4


async def test_exception_is_stored_as_500_problem(app: App) -> None:
    mw = IdempotencyMiddleware(app.app)
    async with client(mw) as c:
        h = {"Idempotency-Key": "k"}
        r1 = await c.post("/crash", headers=h)
        r2 = await c.post("/crash", headers=h)
    assert r1.status_code == 500  # Starlette's error middleware answered, then re-raised
    assert r2.status_code == 500
    assert r2.content == r1.content
    assert r2.headers["idempotent-replayed"] == "true"
    assert app.runs == 1


async def test_raw_app_exception_is_stored_as_500_problem() -> None:
    runs: list[int] = []

    async def raw_app(scope: Any, receive: Any, send: Any) -> None:
        runs.append(1)
        raise RuntimeError("bug")

    mw = IdempotencyMiddleware(raw_app)
    async with client(mw) as c:
        h = {"Idempotency-Key": "k"}
        await c.post("/x", headers=h)
        r2 = await c.post("/x", headers=h)
    assert r2.status_code == 500
    assert r2.headers["content-type"] == "application/problem+json"
    assert r2.headers["idempotent-replayed"] == "true"
    assert len(runs) == 1
