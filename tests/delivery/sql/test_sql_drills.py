"""The SQL outbox's relay under attack: two relays at once, a relay killed (``kill -9``) between
its put into Redis and its commit, the database stopped (and stopped mid-relay), the loop."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

import resilience as rs
from resilience.delivery import DuplicateDeliveryError, Outbox
from resilience.delivery._ops import PutOp
from resilience.stores.redis import RedisStore
from resilience.testing import FakeClock

from ...pg_server import PostgresServer
from ...redis_servers import RedisServer
from .conftest import CountingStore, Db, Steps, deliver_all

ROOT = Path(__file__).resolve().parents[3]


def test_two_relays_at_once_put_each_row_once(db: Db) -> None:
    """PostgreSQL: the second relay skips the rows the first has locked (SKIP LOCKED) and
    moves the others without waiting; SQLite: the second waits for the write lock, in vain."""
    db.put_committed(*(f"k{i}" for i in range(6)))
    holding, release = threading.Event(), threading.Event()
    held_until_released: list[bool] = []

    def hold_first_relay(op: PutOp) -> None:
        if threading.current_thread().name == "relay-a" and not holding.is_set():
            holding.set()
            held_until_released.append(release.wait(30))

    db.store.before_put = hold_first_relay
    moved_by_a: list[int] = []
    relay_a = threading.Thread(
        target=lambda: moved_by_a.append(db.sql.relay_once(batch=3)), name="relay-a"
    )
    relay_a.start()
    try:
        assert holding.wait(30)
        if db.dialect == "postgresql":  # a relay that waited for a lock would fail
            impatient = db.another_engine(connect_args={"options": "-c lock_timeout=2000"})
            other = db.outbox.sql(impatient, table=db.sql.table.name, metadata=db.metadata)
            assert other.relay_once() == 3  # k3..k5: k0..k2 are locked by relay A
        else:
            quick = db.another_engine(connect_args={"timeout": 0.05})
            other = db.outbox.sql(quick, table=db.sql.table.name, metadata=db.metadata)
            with pytest.raises(rs.StoreError, match="locked"):
                other.relay_once()
    finally:
        release.set()
        relay_a.join(30)
    assert held_until_released == [True]  # relay B was done while relay A held its rows
    assert moved_by_a == ([3] if db.dialect == "postgresql" else [6])
    assert sorted(db.store.puts) == [(f"k{i}", True) for i in range(6)]  # once each
    assert db.sql.backlog() == 0
    assert len(deliver_all(db.outbox)) == 6


#: a relay that dies between its put into Redis and its commit: it says "put", then hangs
_KILLED_RELAY = """
import sys, threading
import sqlalchemy as sa
import resilience as rs

url, redis_url, prefix, table = sys.argv[1:5]


class Hang:
    def __init__(self, inner):
        self.inner = inner

    def apply(self, op):
        result = self.inner.apply(op)
        if type(op).__name__ == "PutOp":
            print("put", flush=True)
            threading.Event().wait()
        return result


args = {"application_name": "rs-killed-relay"} if url.startswith("postgresql") else {}
engine = sa.create_engine(url, connect_args=args)
store = Hang(rs.RedisStore.from_url(redis_url, prefix=prefix))
rs.delivery.Outbox("webhooks", store=store).sql(engine, table=table).relay_once()
"""


def _wait_backend_gone(engine: sa.Engine) -> None:
    """PostgreSQL ends a dead client's session (and its transaction) when it sees the socket
    close: wait for that rather than for a fixed time."""
    query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            if connection.execute(query, {"name": "rs-killed-relay"}).scalar_one() == 0:
                return
        time.sleep(0.02)
    raise AssertionError("the killed relay's session did not end")


def test_a_relay_killed_between_its_put_and_its_commit(
    db: Db, redis_server: RedisServer, clock: FakeClock
) -> None:
    prefix = f"sqlob{uuid.uuid4().hex[:8]}"
    redis = RedisStore.from_url(redis_server.url, prefix=prefix, socket_timeout=5.0)
    store = CountingStore(clock, redis)
    outbox = Outbox("webhooks", store=store)
    sql = outbox.sql(db.engine, table=db.sql.table.name, metadata=db.metadata)
    with db.engine.begin() as connection:
        db.order(connection, "49")
        sql.put(connection, "charge-49", {"amount": 4900})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", _KILLED_RELAY, db.url, redis_server.url, prefix]
    with subprocess.Popen([*args, sql.table.name], stdout=subprocess.PIPE, env=env) as relay:
        try:
            assert relay.stdout is not None
            assert relay.stdout.readline() == b"put\n"  # in Redis, and its row not deleted
        finally:
            os.kill(relay.pid, signal.SIGKILL)
            relay.wait()
    status = outbox.status("charge-49")
    assert status is not None
    assert (status.state, status.attempts) == ("pending", 0)
    if db.dialect == "postgresql":
        _wait_backend_gone(db.engine)
    assert sql.backlog() == 1  # its delete never committed
    assert sql.relay_once() == 1
    assert store.puts == [("charge-49", False)]  # the second put changed nothing
    delivered: list[object] = []
    assert outbox.run_once(lambda d: delivered.append(d.payload)) == 1
    assert outbox.run_once(lambda d: delivered.append(d.payload)) == 0
    assert delivered == [{"amount": 4900}]
    assert sql.backlog() == 0
    redis.close()


def test_the_database_down_the_relay_backs_off_and_loses_nothing(
    own_postgres_server: PostgresServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    server = own_postgres_server
    engine = sa.create_engine(server.url, connect_args={"connect_timeout": 5})
    store = CountingStore(clock)
    outbox = Outbox("webhooks", store=store, clock=clock)
    sql = outbox.sql(engine)
    sql.create_table()
    with engine.begin() as connection:
        for key in ("a", "b", "c"):
            sql.put(connection, key, key)
    server.stop()
    steps = Steps(lambda: None, lambda: None, lambda: None, server.restart)
    pauses = rs.backoff.exponential(initial=1, maximum=4, jitter="none")
    with caplog.at_level(logging.WARNING, "resilience"):
        sql.run(stop=steps, poll=0.5, backoff=pauses)
    # four failed passes, each pause longer up to the cap, then one pass moving everything
    assert steps.pauses == [1.0, 2.0, 4.0, 4.0, 0.5]
    warnings = [r.getMessage() for r in caplog.records if r.name == "resilience"]
    assert len(warnings) == 4
    assert all("could not relay" in w for w in warnings)
    assert sorted(store.puts) == [("a", True), ("b", True), ("c", True)]
    assert sql.backlog() == 0

    # stopped mid-relay: after the puts, before the delete commits
    with engine.begin() as connection:
        sql.put(connection, "d", "d")

    def stop_database(op: PutOp) -> None:
        store.before_put = None
        server.stop()

    store.before_put = stop_database
    with pytest.raises(rs.StoreError, match="failed"):
        sql.relay_once()
    server.restart()
    assert sql.backlog() == 1  # the row came back with the rolled-back transaction
    assert sql.relay_once() == 1
    assert store.puts[3:] == [("d", True), ("d", False)]  # put again: a no-op
    assert [key for key, _ in deliver_all(outbox)] == ["a", "b", "c", "d"]
    engine.dispose()


def test_run_relays_then_polls_until_stopped(db: Db) -> None:
    steps = Steps(lambda: db.put_committed("late"))
    db.put_committed("early")
    db.sql.run(stop=steps, poll=0.25)
    assert steps.pauses == [0.25, 0.25]  # idle after "early", idle after "late", stopped
    assert [key for key, _ in db.store.puts] == ["early", "late"]


def test_importing_resilience_does_not_import_sqlalchemy() -> None:
    code = "import sys, resilience; print('sqlalchemy' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("url", ["postgresql"], indirect=True)  # SQLite: one writer at a time
@pytest.mark.parametrize("first", ["commit", "rollback"])
def test_two_transactions_putting_one_key_at_once(db: Db, first: str) -> None:
    """The second insert waits for the first transaction; then it is a duplicate (the first
    committed) or the row (the first rolled back)."""
    outcome: list[BaseException | None] = []

    def second() -> None:
        try:
            with db.engine.begin() as connection:
                db.sql.put(connection, "double-submit", "second")
            outcome.append(None)
        except DuplicateDeliveryError as exc:
            outcome.append(exc)

    waiting = sa.text(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
    )
    with db.engine.connect() as connection:
        transaction = connection.begin()
        db.sql.put(connection, "double-submit", "first")
        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 30
        with db.engine.connect() as watcher:
            while watcher.execute(waiting).scalar_one() == 0:  # the second insert waits
                assert time.monotonic() < deadline, "the second insert did not wait"
                time.sleep(0.01)
        transaction.commit() if first == "commit" else transaction.rollback()
    thread.join(30)
    assert db.sql.relay_once() == 1
    if first == "commit":
        assert isinstance(outcome[0], DuplicateDeliveryError)
        assert deliver_all(db.outbox) == [("double-submit", "first")]
    else:
        assert outcome == [None]
        assert deliver_all(db.outbox) == [("double-submit", "second")]
