"""The SQL outbox's tests run each case on SQLite (a file) and on a PostgreSQL server started for
the session (tests/pg_server.py); each test has its own tables."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from resilience.delivery import Outbox, SqlOutbox
from resilience.delivery._ops import PutOp
from resilience.stores.memory import MemoryStore
from resilience.testing import FakeClock

from ...pg_server import PostgresServer, postgres_server, start_postgres

__all__ = [
    "CountingStore",
    "Db",
    "Steps",
    "db",
    "deliver_all",
    "own_postgres_server",
    "postgres_server",
    "url",
]


class CountingStore:
    """A store (memory by default) that records the outbox's puts as ``(key, created)`` and
    runs ``before_put`` before each one (to fail or hold it)."""

    def __init__(self, clock: FakeClock, inner: Any = None) -> None:
        self.inner = MemoryStore(clock=clock) if inner is None else inner
        self.puts: list[tuple[str, bool]] = []
        self.before_put: Callable[[PutOp], None] | None = None
        self._lock = threading.Lock()

    def apply(self, op: Any) -> Any:
        if isinstance(op, PutOp):
            if self.before_put is not None:
                self.before_put(op)
            result = self.inner.apply(op)
            with self._lock:
                self.puts.append((op.dkey, result[0]))
            return result
        return self.inner.apply(op)


class Steps:
    """A ``stop`` for ``SqlOutbox.run``: records each pause's length and runs the next scripted
    action in it; once the actions are done, the next pause sets it (the loop ends)."""

    def __init__(self, *actions: Callable[[], object]) -> None:
        self.pauses: list[float] = []
        self.actions = list(actions)
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        self.pauses.append(timeout)
        if self.actions:
            self.actions.pop(0)()
        else:
            self._set = True
        return self._set


@dataclass
class Db:
    """An engine, an orders table (the business change) and an outbox table beside it."""

    engine: sa.Engine
    metadata: sa.MetaData
    orders: sa.Table
    store: CountingStore
    outbox: Outbox
    sql: SqlOutbox
    url: str
    made: list[sa.Engine] = field(default_factory=list)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def order(self, connection: sa.Connection | Session, order_id: str) -> None:
        connection.execute(self.orders.insert(), {"id": order_id})

    def orders_in_db(self) -> list[str]:
        with self.engine.connect() as connection:
            return sorted(connection.execute(sa.select(self.orders.c.id)).scalars())

    def another_engine(self, **kw: Any) -> sa.Engine:
        engine = sa.create_engine(self.url, **kw)
        self.made.append(engine)
        return engine

    def put_committed(self, *keys: str) -> None:
        with self.engine.begin() as connection:
            for key in keys:
                self.sql.put(connection, key, {"key": key})


def deliver_all(outbox: Outbox) -> list[tuple[str, Any]]:
    """Deliver what is due, as ``(key, payload)`` sorted by key."""
    got: list[tuple[str, Any]] = []
    outbox.run_once(lambda d: got.append((d.key, d.payload)), concurrency=4)
    return sorted(got, key=lambda kv: kv[0])


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.url


@pytest.fixture
def db(url: str, clock: FakeClock) -> Iterator[Db]:
    """Tables with unique names (one PostgreSQL serves every test), dropped afterwards."""
    engine = sa.create_engine(url)
    suffix = uuid.uuid4().hex[:10]
    metadata = sa.MetaData()
    orders = sa.Table(
        f"orders_{suffix}", metadata, sa.Column("id", sa.String(50), primary_key=True)
    )
    store = CountingStore(clock)
    outbox = Outbox("webhooks", store=store, clock=clock)
    sql = outbox.sql(engine, table=f"outbox_{suffix}", metadata=metadata)
    metadata.create_all(engine)
    made = Db(engine, metadata, orders, store, outbox, sql, url)
    try:
        yield made
    finally:
        for other in made.made:
            other.dispose()
        metadata.drop_all(engine)
        engine.dispose()


@pytest.fixture
def own_postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for one test (drills stop and restart it)."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)
