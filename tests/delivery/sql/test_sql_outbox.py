"""The transactional outbox (``Outbox.sql``) on SQLite and on a PostgreSQL server of its own:
a put rides the caller's transaction, the relay moves each committed row into the outbox once."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import resilience as rs
from resilience.delivery import DuplicateDeliveryError, Outbox, SqlOutbox
from resilience.delivery._ops import PutOp
from resilience.delivery._outbox import MAX_PAYLOAD
from resilience.delivery._sql import digest
from resilience.testing import FakeClock

from ...pg_server import require_postgres
from .conftest import Db, deliver_all


class Flaky(Exception):
    pass


def test_a_committed_put_is_relayed_once_and_delivered_once(db: Db) -> None:
    with db.engine.begin() as connection:
        db.order(connection, "42")
        db.sql.put(connection, "charge-42", {"event": "charge.succeeded", "amount": 4200})
        db.sql.put(connection, "receipt-42", b"\x00\xffbinary")
        db.sql.put(connection, "note-42", "text \u00e9\ud800")  # a lone surrogate survives
        assert db.outbox.status("charge-42") is None  # nothing before the commit
    assert db.sql.backlog() == 3
    assert db.sql.relay_once() == 3
    assert db.sql.backlog() == 0
    assert db.sql.relay_once() == 0
    assert sorted(db.store.puts) == [("charge-42", True), ("note-42", True), ("receipt-42", True)]
    assert deliver_all(db.outbox) == [
        ("charge-42", {"event": "charge.succeeded", "amount": 4200}),
        ("note-42", "text \u00e9\ud800"),
        ("receipt-42", b"\x00\xffbinary"),
    ]
    assert deliver_all(db.outbox) == []


def test_a_rolled_back_transaction_leaves_no_row_and_no_delivery(db: Db) -> None:
    def charge() -> None:
        with db.engine.begin() as connection:
            db.order(connection, "43")
            db.sql.put(connection, "charge-43", {"amount": 1})
            raise Flaky("the charge failed after the put")

    with pytest.raises(Flaky):
        charge()
    assert db.orders_in_db() == []
    assert db.sql.backlog() == 0
    assert db.sql.relay_once() == 0
    assert db.store.puts == []
    assert db.outbox.status("charge-43") is None


def test_an_orm_session_puts_in_its_own_transaction(db: Db) -> None:
    with Session(db.engine) as session:
        with session.begin():
            db.order(session, "44")
            db.sql.put(session, "charge-44", [1, 2, 3])
        with session.begin():
            db.order(session, "45")
            db.sql.put(session, "charge-45", [4])
            session.rollback()
    assert db.orders_in_db() == ["44"]
    assert db.sql.relay_once() == 1
    assert deliver_all(db.outbox) == [("charge-44", [1, 2, 3])]


def test_an_uncommitted_row_is_not_relayed_until_its_commit(db: Db) -> None:
    with db.engine.connect() as business:
        transaction = business.begin()
        db.sql.put(business, "charge-46", "x")
        if db.engine.dialect.name == "postgresql":
            assert db.sql.relay_once() == 0  # another connection: the row is not visible
        else:  # SQLite: the business transaction holds the write lock the relay needs
            quick = db.another_engine(connect_args={"timeout": 0.05})
            relay = db.outbox.sql(quick, table=db.sql.table.name, metadata=db.metadata)
            with pytest.raises(rs.StoreError, match="locked"):
                relay.relay_once()
        assert db.store.puts == []
        transaction.commit()
    assert db.sql.relay_once() == 1
    assert db.store.puts == [("charge-46", True)]


def test_a_key_waiting_in_the_table_is_a_clear_error_and_the_transaction_goes_on(db: Db) -> None:
    with db.engine.begin() as connection:
        db.sql.put(connection, "charge-47", "first")
    with db.engine.begin() as connection:
        with pytest.raises(DuplicateDeliveryError, match="charge-47") as caught:
            db.sql.put(connection, "charge-47", "second")
        assert (caught.value.key, caught.value.outbox) == ("charge-47", "webhooks")
        db.order(connection, "47")  # the transaction is still usable: the order commits
    assert db.orders_in_db() == ["47"]
    assert db.sql.relay_once() == 1
    assert deliver_all(db.outbox) == [("charge-47", "first")]
    # once relayed, the outbox's own rule: the key is kept, a row put again is a no-op
    with db.engine.begin() as connection:
        db.sql.put(connection, "charge-47", "third")
    assert db.sql.relay_once() == 1
    assert db.store.puts == [("charge-47", True), ("charge-47", False)]
    assert deliver_all(db.outbox) == []


def test_two_outboxes_share_a_table_without_taking_each_others_rows(db: Db) -> None:
    other = Outbox("emails", clock=FakeClock())
    other_sql = other.sql(db.engine, table=db.sql.table.name, metadata=db.metadata)
    assert other_sql.table is db.sql.table
    with db.engine.begin() as connection:
        db.sql.put(connection, "same-key", "webhook")
        other_sql.put(connection, "same-key", "email")  # one row per key per outbox
    assert db.sql.relay_once() == 1
    assert other_sql.backlog() == 1
    assert other_sql.relay_once() == 1
    assert deliver_all(other) == [("same-key", "email")]
    assert deliver_all(db.outbox) == [("same-key", "webhook")]


def test_big_payloads_go_through_and_too_big_ones_are_refused_before_the_insert(db: Db) -> None:
    big = bytes(range(256)) * (MAX_PAYLOAD // 256)  # exactly the limit
    with db.engine.begin() as connection:
        db.sql.put(connection, "big", big)
        with pytest.raises(rs.ConfigurationError, match="more than"):
            db.sql.put(connection, "too-big", big + b"!")
        with pytest.raises(TypeError):
            db.sql.put(connection, "odd", {1, 2})  # type: ignore[arg-type]
        with pytest.raises(rs.ConfigurationError, match="key"):
            db.sql.put(connection, "k" * 1025, "x")
        for unstorable in ("nul\x00", "lone \ud800"):  # no text column holds these
            with pytest.raises(rs.ConfigurationError, match="a key must"):
                db.sql.put(connection, unstorable, "x")
    assert db.sql.backlog() == 1
    assert db.sql.relay_once() == 1
    ((key, payload),) = deliver_all(db.outbox)
    assert key == "big"
    assert payload == big


def test_a_long_non_ascii_key_is_one_row(db: Db) -> None:
    key = "\U0001f600" * 1024  # 4 KiB of UTF-8: more than an index entry may hold
    with db.engine.begin() as connection:
        db.sql.put(connection, key, "x")
    with db.engine.begin() as connection, pytest.raises(DuplicateDeliveryError):
        db.sql.put(connection, key, "y")
    assert db.sql.relay_once() == 1
    assert deliver_all(db.outbox) == [(key, "x")]


def test_batches_move_everything_each_in_its_transaction(db: Db) -> None:
    with db.engine.begin() as connection:
        for i in range(25):
            db.sql.put(connection, f"k{i:02}", i)
    assert db.sql.relay_once(batch=10) == 25
    assert [key for key, _ in db.store.puts] == [f"k{i:02}" for i in range(25)]  # in order


def test_a_store_failure_keeps_the_rows_not_yet_put_and_deletes_the_others(db: Db) -> None:
    with db.engine.begin() as connection:
        for i in range(4):
            db.sql.put(connection, f"k{i}", i)

    def fail_third(op: PutOp) -> None:
        if op.dkey == "k2":
            raise rs.StoreError("redis down")

    db.store.before_put = fail_third
    with pytest.raises(rs.StoreError, match="redis down"):
        db.sql.relay_once()
    assert db.sql.backlog() == 2  # k0 and k1 were put and deleted; k2 and k3 wait
    db.store.before_put = None
    assert db.sql.relay_once() == 2
    assert [key for key, _ in db.store.puts] == ["k0", "k1", "k2", "k3"]


def test_a_relay_interrupted_between_put_and_delete_re_relays_as_a_no_op(db: Db) -> None:
    with db.engine.begin() as connection:
        db.sql.put(connection, "charge-48", "once")

    def interrupted_after(op: PutOp) -> None:
        db.store.before_put = None
        db.store.inner.apply(op)  # the put lands in the store...
        raise KeyboardInterrupt  # ... and the relay dies before its delete commits

    db.store.before_put = interrupted_after
    with pytest.raises(KeyboardInterrupt):
        db.sql.relay_once()
    assert db.sql.backlog() == 1  # the row is still there (rolled back)
    assert db.sql.relay_once() == 1
    assert db.store.puts == [("charge-48", False)]  # the re-relay's put changed nothing
    assert deliver_all(db.outbox) == [("charge-48", "once")]


def test_a_row_the_outbox_refuses_is_marked_and_does_not_stall_the_relay(db: Db) -> None:
    rows = [
        {"key": "bad-json", "payload": b"{nope", "kind": "j"},
        {"key": "bad-kind", "payload": b"x", "kind": "z"},
        {"key": "", "payload": b"x", "kind": "s"},
        {"key": "good", "payload": b'{"ok":true}', "kind": "j"},
    ]
    with db.engine.begin() as connection:  # written by some other program
        connection.execute(
            db.sql.table.insert(),
            [{"outbox": "webhooks", "digest": digest(str(r["key"])), **r} for r in rows],
        )
    assert db.sql.relay_once(batch=2) == 4
    assert db.sql.backlog() == 0
    refused = db.sql.refused()
    assert [key for key, _ in refused] == ["bad-json", "bad-kind", ""]
    assert "JSONDecodeError" in refused[0][1]
    assert "kind" in refused[1][1]
    assert "ConfigurationError" in refused[2][1]
    assert deliver_all(db.outbox) == [("good", {"ok": True})]
    assert db.sql.relay_once() == 0  # refused rows stay out of the way


def test_an_unreachable_database_is_a_store_error(clock: FakeClock, tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'missing' / 'app.db'}")
    sql = Outbox("o", clock=clock).sql(engine)
    with pytest.raises(rs.StoreError, match="failed") as caught:
        sql.relay_once()
    assert isinstance(caught.value.__cause__, sa.exc.OperationalError)
    engine.dispose()


def test_bad_configuration_is_refused(clock: FakeClock) -> None:
    engine = sa.create_engine("sqlite://")
    outbox = Outbox("o", clock=clock)
    with pytest.raises(rs.ConfigurationError, match="Outbox"):
        SqlOutbox(object(), engine)  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError, match="Engine"):
        outbox.sql("sqlite://")  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError, match="table"):
        outbox.sql(engine, table="")
    with pytest.raises(rs.ConfigurationError, match="MetaData"):
        outbox.sql(engine, metadata={})  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError, match="200"):
        Outbox("n" * 201, clock=clock).sql(engine)
    with pytest.raises(rs.ConfigurationError, match="NUL"):
        Outbox("n\x00", clock=clock).sql(engine)
    metadata = sa.MetaData()
    sa.Table("taken", metadata, sa.Column("id", sa.Integer, primary_key=True))
    with pytest.raises(rs.ConfigurationError, match="not an outbox table"):
        outbox.sql(engine, table="taken", metadata=metadata)
    sql = outbox.sql(engine)
    for bad in (0, -1, 10_001, 1.5):
        with pytest.raises(rs.ConfigurationError, match="batch"):
            sql.relay_once(batch=bad)  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError, match="backoff"):
        sql.run(backoff=object())  # type: ignore[arg-type]
    assert repr(sql) == "SqlOutbox('o', table='resilience_outbox')"
    engine.dispose()


def test_without_postgresql_the_tests_skip_but_fail_under_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PG_BIN", str(tmp_path))  # no initdb there
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y postgresql"):
        require_postgres()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_postgres()
