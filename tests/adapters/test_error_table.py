"""One error table: every resilience error answers the same through ASGI and gRPC.

The expected wire values are written out here (not read from the table), so a change to the
table is a visible change to this file; each adapter is checked against a real server.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

import interceptors.errors
import resilience as rs
from interceptors.asgi import IdempotencyMiddleware, RateLimitMiddleware, ResilienceMiddleware
from interceptors.errors import ERROR_TABLE, PROBLEM_BASE, UNMAPPED, classify, retry_delay
from interceptors.grpc import (
    AsyncResilienceServerInterceptor,
    ResilienceServerInterceptor,
    status_for,
)
from resilience.stores import StoreFullError

from .._asgi_apps import FakeLimiter, Reject, TestApp
from .._server import serve
from ..grpc_fixtures import UU, Script, start_aio_server, start_sync_server
from ..helpers import BrokenStore

DOCS = Path(__file__).resolve().parent.parent.parent / "docs" / "adapters"

#: error instance (retry_after=2.5 where the class takes one), HTTP status, problem type,
#: gRPC status, whether the delay is sent (Retry-After: 3 / grpc-retry-pushback-ms: 2500).
WIRE: list[tuple[Exception, int, str, str, bool]] = [
    (rs.RateLimitedError("slow", retry_after=2.5), 429, "rate-limited", "RESOURCE_EXHAUSTED", True),
    (rs.CircuitOpenError("open", retry_after=2.5), 503, "circuit-open", "UNAVAILABLE", True),
    (rs.BulkheadFullError("full", retry_after=2.5), 503, "bulkhead-full", "UNAVAILABLE", True),
    (rs.ThrottledError("throttled", retry_after=2.5), 503, "throttled", "UNAVAILABLE", True),
    (
        rs.IdempotencyInProgressError("busy", retry_after=2.5),
        409,
        "idempotency#in-progress",
        "ABORTED",
        True,
    ),
    (
        rs.IdempotencyKeyReusedError("reused", retry_after=2.5),
        422,
        "idempotency#key-reused",
        "FAILED_PRECONDITION",
        False,
    ),
    (
        rs.IdempotencyConflictError("conflict", retry_after=2.5),
        409,
        "idempotency#conflict",
        "ABORTED",
        False,
    ),
    (rs.LockHeldError("held", retry_after=2.5), 409, "lock-held", "ABORTED", True),
    (rs.RejectedError("refused", retry_after=2.5), 503, "rejected", "UNAVAILABLE", True),
    (rs.TimeoutExceededError("late", timeout=1), 504, "timeout", "DEADLINE_EXCEEDED", False),
    (rs.StoreError("redis down"), 503, "store-unavailable", "UNAVAILABLE", False),
]
IDS = [type(case[0]).__name__ for case in WIRE]


def exported_errors() -> list[type[rs.ResilienceError]]:
    out = []
    for name in rs.__all__:
        obj = getattr(rs, name)
        if (
            inspect.isclass(obj)
            and issubclass(obj, rs.ResilienceError)
            and obj is not rs.ResilienceError
        ):
            out.append(obj)
    return out


# -- the table itself ----------------------------------------------------------------------


def test_every_exported_resilience_error_has_its_own_row_or_is_deliberately_unmapped() -> None:
    rows = {row.error for row in ERROR_TABLE}
    assert len(rows) == len(ERROR_TABLE)  # one row per class
    for cls in exported_errors():
        if cls in UNMAPPED:
            assert classify(cls) is None, cls
        else:
            assert cls in rows, f"{cls.__name__} has no row in interceptors.errors.ERROR_TABLE"
    assert set(UNMAPPED) == {rs.ConfigurationError, rs.IdempotencyOutcomeUnrecordedError}
    assert rows == {type(case[0]) for case in WIRE}  # this test covers every row
    # an error defined elsewhere in the package gets its base's row (a full store is down)
    assert classify(StoreFullError) is classify(rs.StoreError)


def test_rows_are_ordered_subclasses_first() -> None:
    for i, earlier in enumerate(ERROR_TABLE):
        for later in ERROR_TABLE[i + 1 :]:
            assert not issubclass(later.error, earlier.error), (later.error, earlier.error)


def test_one_problem_type_and_title_per_status_everywhere() -> None:
    types = [row.problem_type for row in ERROR_TABLE]
    assert len(set(types)) == len(types)
    assert all(t.startswith(PROBLEM_BASE) for t in types)
    titles = {row.http_status: row.title for row in ERROR_TABLE}
    for row in ERROR_TABLE:  # a status has one title (its reason phrase)
        assert row.title == titles[row.http_status]


@pytest.mark.parametrize(("error", "status", "slug", "code", "delay"), WIRE, ids=IDS)
def test_table_rows(error: Exception, status: int, slug: str, code: str, delay: bool) -> None:
    row = classify(error)
    assert row is not None
    assert row.error is type(error)
    assert (row.http_status, row.problem_type, row.grpc_status) == (
        status,
        PROBLEM_BASE + slug,
        code,
    )
    assert retry_delay(row, error) == (2.5 if delay else None)


def test_a_subclass_of_our_own_errors_gets_its_bases_row() -> None:
    class Shed(rs.BulkheadFullError):
        pass

    class Custom(rs.RejectedError):
        pass

    assert classify(Shed()) is classify(rs.BulkheadFullError)
    assert classify(Custom()) is classify(rs.RejectedError)


def test_forced_open_breaker_sends_no_delay_and_says_so() -> None:
    breaker = rs.CircuitBreaker("upstream", failure_count=1)
    breaker.open()
    with pytest.raises(rs.CircuitOpenError) as info:
        breaker.call(print)
    row = classify(info.value)
    assert row is not None
    assert row.http_status == 503
    assert retry_delay(row, info.value) is None
    assert "forced open" in str(info.value)


@pytest.mark.parametrize("bad", [float("nan"), -1.0, True, "3"])
def test_a_malformed_retry_after_sends_no_delay(bad: Any) -> None:
    err = rs.RateLimitedError()
    err.retry_after = bad
    row = classify(err)
    assert row is not None
    assert retry_delay(row, err) is None


def test_the_module_docstring_table_is_the_table() -> None:
    doc = interceptors.errors.__doc__ or ""
    lines = [line for line in doc.splitlines() if re.match(r"``\w+Error``", line)]
    assert len(lines) == len(ERROR_TABLE)
    for line, row in zip(lines, ERROR_TABLE, strict=True):
        cells = re.findall(r"``([^`]+)``|\b(\d{3})\b|\b(yes)\b", line)
        flat = [next(c for c in cell if c) for cell in cells]
        assert flat[0] == row.error.__name__
        assert flat[1] == str(row.http_status)
        assert PROBLEM_BASE + flat[2] == row.problem_type
        assert flat[3] == row.grpc_status
        assert ("yes" in flat[4:]) == row.retry_delay, line


# -- ASGI: a real uvicorn server -------------------------------------------------------------


class Router:
    """``/<ErrorName>`` → a ResilienceMiddleware whose pipeline raises that error."""

    def __init__(self, errors: list[Exception]) -> None:
        self.routes = {
            "/" + type(e).__name__: ResilienceMiddleware(TestApp(), pipeline=Reject(e))
            for e in errors
        }

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.routes[scope["path"]](scope, receive, send)


@pytest.fixture(scope="module")
def asgi_url() -> Iterator[str]:
    extra: list[Exception] = [rs.ConfigurationError("bug"), rs.IdempotencyOutcomeUnrecordedError()]
    with serve(Router([case[0] for case in WIRE] + extra)) as url:
        yield url


@pytest.mark.parametrize(("error", "status", "slug", "code", "delay"), WIRE, ids=IDS)
def test_resilience_middleware_answers_every_error_per_the_table(
    asgi_url: str, error: Exception, status: int, slug: str, code: str, delay: bool
) -> None:
    response = httpx.get(f"{asgi_url}/{type(error).__name__}", timeout=10)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers.get("retry-after") == ("3" if delay else None)
    doc = response.json()
    assert doc["type"] == PROBLEM_BASE + slug
    assert doc["status"] == status
    assert doc["title"] == classify(error).title  # type: ignore[union-attr]
    assert doc["detail"] == str(error)


@pytest.mark.parametrize("name", ["ConfigurationError", "IdempotencyOutcomeUnrecordedError"])
def test_unmapped_errors_propagate_as_the_servers_500(asgi_url: str, name: str) -> None:
    response = httpx.get(f"{asgi_url}/{name}", timeout=10)
    assert response.status_code == 500
    assert response.headers.get("content-type") != "application/problem+json"


async def _orders(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"created"})


def test_the_other_middlewares_send_the_same_problem_types() -> None:
    """IdempotencyMiddleware and RateLimitMiddleware answer them like ResilienceMiddleware."""
    by_type = {type(case[0]): (case[1], PROBLEM_BASE + case[2]) for case in WIRE}
    idem = IdempotencyMiddleware(_orders)
    down = IdempotencyMiddleware(_orders, store=BrokenStore("down", error=ConnectionError))
    limited = RateLimitMiddleware(_orders, limiter=FakeLimiter(rate=0))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        routes: dict[str, Any] = {"/idem": idem, "/down": down, "/limited": limited}
        target = routes[scope["path"]]
        await target(scope, receive, send)

    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as c:
        c.post("/idem", content=b"pay 5", headers={"Idempotency-Key": "k"})
        reused = c.post("/idem", content=b"pay 500", headers={"Idempotency-Key": "k"})
        store = c.post("/down", content=b"x", headers={"Idempotency-Key": "k"})
        rate = c.get("/limited")
    for response, cls in [
        (reused, rs.IdempotencyKeyReusedError),
        (store, rs.StoreError),
        (rate, rs.RateLimitedError),
    ]:
        status, type_ = by_type[cls]
        assert response.status_code == status, cls
        assert response.json()["type"] == type_, cls
        assert response.json()["title"] == classify(cls).title, cls  # type: ignore[union-attr]


# -- gRPC: status_for and real servers -------------------------------------------------------


@pytest.mark.parametrize(("error", "status", "slug", "code", "delay"), WIRE, ids=IDS)
def test_status_for_answers_every_error_per_the_table(
    error: Exception, status: int, slug: str, code: str, delay: bool
) -> None:
    mapped = status_for(error)
    assert mapped is not None
    assert mapped[0].name == code
    assert mapped[1] == ((("grpc-retry-pushback-ms", "2500"),) if delay else ())


@pytest.mark.parametrize(
    "error", [rs.ConfigurationError("bug"), rs.IdempotencyOutcomeUnrecordedError()]
)
def test_status_for_leaves_unmapped_errors_alone(error: Exception) -> None:
    assert status_for(error) is None


#: A few rows through real servers (status_for above covers the rest): the ones the ASGI table
#: used to miss, and one with a pushback.
GRPC_CASES = [
    case
    for case in WIRE
    if type(case[0])
    in {rs.StoreError, rs.IdempotencyConflictError, rs.IdempotencyKeyReusedError, rs.RejectedError}
]


def _unary(port: int) -> Any:
    with (
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        channel.unary_unary(UU, request_serializer=None, response_deserializer=None)(
            b"a", timeout=10
        )
    return info.value


@pytest.mark.parametrize("kind", ["sync", "aio"])
@pytest.mark.parametrize(
    ("error", "status", "slug", "code", "delay"),
    GRPC_CASES,
    ids=[type(case[0]).__name__ for case in GRPC_CASES],
)
def test_grpc_servers_answer_per_the_table(
    kind: str, error: Exception, status: int, slug: str, code: str, delay: bool
) -> None:
    script = Script()
    if kind == "sync":
        server, port = start_sync_server(
            script, (ResilienceServerInterceptor(pipeline=Reject(error)),)
        )
        try:
            failure = _unary(port)
        finally:
            server.stop(None)
    else:

        async def main() -> Any:
            interceptor = AsyncResilienceServerInterceptor(pipeline=Reject(error))
            aserver, aport = await start_aio_server(script, (interceptor,))
            try:
                return await asyncio.to_thread(_unary, aport)
            finally:
                await aserver.stop(None)

        failure = asyncio.run(main())
    assert failure.code().name == code
    trailing = dict(failure.trailing_metadata() or ())
    assert trailing.get("grpc-retry-pushback-ms") == ("2500" if delay else None)
    assert failure.details() == str(error)
    assert script.calls == 0


# -- the docs tables are the table -----------------------------------------------------------


def _doc_rows(page: str, start: str) -> list[list[str]]:
    text = (DOCS / page).read_text()
    section = text[text.index(start) :]
    return [
        line.split("|")[1:-1] for line in section.splitlines() if re.match(r"\| `\w+Error`", line)
    ]


def test_the_asgi_docs_table_is_the_table() -> None:
    seen = set()
    for errors_cell, status_cell, type_cell, delay_cell in _doc_rows("asgi.md", "## Refusals"):
        (status,) = re.findall(r"\b(\d{3})\b", status_cell)
        (type_,) = re.findall(r"`(urn:[^`]+)`", type_cell)
        for name in re.findall(r"`(\w+Error)`", errors_cell):
            row = classify(getattr(rs, name))
            assert row is not None, name
            assert (int(status), type_) == (row.http_status, row.problem_type), name
            assert row.title in status_cell, name
            assert ("yes" in delay_cell) == row.retry_delay, name
            seen.add(getattr(rs, name))
    assert seen == {row.error for row in ERROR_TABLE}


def test_the_grpc_docs_table_names_every_row() -> None:
    seen = set()
    for errors_cell, status_cell, trailer_cell in _doc_rows("grpc.md", "## Server"):
        (code,) = re.findall(r"`([A-Z_]+)`", status_cell)
        for name in re.findall(r"`(\w+Error)`", errors_cell):
            row = classify(getattr(rs, name))
            assert row is not None, name
            assert row.grpc_status == code, name
            assert ("pushback" in trailer_cell) == row.retry_delay, name
            seen.add(getattr(rs, name))
    assert seen == {row.error for row in ERROR_TABLE}


def test_doctests() -> None:
    import doctest

    result = doctest.testmod(interceptors.errors)
    assert result.attempted > 0
    assert result.failed == 0
