"""``Outbox.sql(engine)``: the transactional outbox (a local message table) on SQLAlchemy 2.

``put(connection, key, payload)`` inserts a row in the caller's transaction; a relay moves the
committed rows into the :class:`~resilience.delivery.Outbox` (whose ``put`` is once per key)
and deletes them in one database transaction per batch.
"""

from __future__ import annotations

import hashlib
import logging
import random as _random
from typing import TYPE_CHECKING, Any

from .._types import Duration, positive_int, seconds
from ..backoff import Backoff, exponential
from ..errors import ConfigurationError, ResilienceError, StoreError
from ._outbox import MAX_KEY, MAX_PAYLOAD, Outbox, Payload, _decode, _describe, _encode

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, MetaData, Table
    from sqlalchemy.orm import Session

__all__ = ["DuplicateDeliveryError", "SqlOutbox"]

_log = logging.getLogger("resilience")

#: the longest outbox name the table's ``outbox`` column holds
MAX_NAME = 200
#: the most rows one relay transaction moves
MAX_BATCH = 10_000
_KINDS = frozenset("bsj")
_COLUMNS = frozenset({"id", "outbox", "key", "digest", "payload", "kind", "created", "error"})
#: dialects whose ``INSERT ... ON CONFLICT DO NOTHING`` keeps the caller's transaction usable
_ON_CONFLICT = ("postgresql", "sqlite")


class DuplicateDeliveryError(ResilienceError):
    """:meth:`SqlOutbox.put` of a key whose row is still waiting in the outbox table.

    Raised in the caller's transaction, which stays usable on PostgreSQL and SQLite (the row
    is not inserted): catch it to commit the business change without a second delivery, or
    let it roll the transaction back. ``key`` and ``outbox`` (the outbox's name) say which.
    """

    def __init__(self, message: str, *, key: str, outbox: str) -> None:
        super().__init__(message)
        self.key = key
        self.outbox = outbox


def _sqlalchemy() -> Any:
    try:
        import sqlalchemy
    except ImportError:  # pragma: no cover - the extra is installed in development
        raise ConfigurationError(
            "the SQL outbox needs SQLAlchemy 2: pip install 'resilience-policies[sql]'"
        ) from None
    if not sqlalchemy.__version__.startswith("2."):  # pragma: no cover
        raise ConfigurationError(f"the SQL outbox needs SQLAlchemy 2, got {sqlalchemy.__version__}")
    return sqlalchemy


def _text(value: str, what: str) -> str:
    """``value`` if a text column can hold it: valid Unicode (no lone surrogate), no NUL."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(
            f"{what} must be valid Unicode to be stored in the table, got {value!r:.80}"
        ) from None
    if "\x00" in value:
        raise ConfigurationError(f"{what} must not contain NUL characters, got {value!r:.80}")
    return value


def digest(key: str) -> str:
    """The ``digest`` column of ``key``'s row (SHA-256 hex of its UTF-8): the table's unique
    ``(outbox, digest)`` makes a key one row, whatever its length (an index on the key itself
    could outgrow an index entry)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _table(sa: Any, metadata: MetaData, name: str, schema: str | None) -> Table:
    existing = metadata.tables.get(f"{schema}.{name}" if schema else name)
    if existing is not None:
        missing = _COLUMNS - set(existing.c.keys())
        if missing:
            raise ConfigurationError(
                f"table {name!r} of the metadata is not an outbox table: no {sorted(missing)}"
            )
        table: Table = existing
        return table
    return sa.Table(  # type: ignore[no-any-return]
        name,
        metadata,
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("outbox", sa.String(MAX_NAME), nullable=False),
        sa.Column("key", sa.String(MAX_KEY), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("payload", sa.LargeBinary(MAX_PAYLOAD), nullable=False),
        sa.Column("kind", sa.String(1), nullable=False),
        sa.Column(
            "created", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.UniqueConstraint("outbox", "digest", name=f"{name}_once"),
        schema=schema,
    )


class SqlOutbox:
    """The transactional outbox of an :class:`~resilience.delivery.Outbox` on SQLAlchemy 2
    (``outbox.sql(engine)``): a delivery written in the same database transaction as the
    business change, moved into the outbox once that transaction has committed.

    ``put(connection, key, payload)`` inserts one row into the outbox table through the
    caller's ``Connection`` or ``Session``, inside the caller's transaction: a rollback leaves
    no row and no delivery. A relay (:meth:`relay_once`, or the loop :meth:`run`) reads the
    committed rows, puts each into the outbox and deletes them, in one database transaction
    per batch; the outbox's put is once per key, so a relay that dies between its puts and its
    commit leaves the rows to the next pass, whose puts change nothing: one delivery per row.
    On PostgreSQL (and MySQL 8) relays lock the rows they take with ``FOR UPDATE SKIP
    LOCKED``, so several relays share the work; on SQLite a relay takes the database's write
    lock first, so relays take turns.

    Args:
        outbox: the outbox the rows are relayed into.
        engine: the SQLAlchemy ``Engine`` the relay connects with.
        table: the outbox table's name (several outboxes can share one: a row carries its
            outbox's name).
        metadata: a ``MetaData`` to define the table in (yours, so that your migrations see
            it; a table of that name already in it is used as is), default a new one.
        schema: the table's schema, default the connection's.

    Example:
        >>> import sqlalchemy as sa, resilience as rs
        >>> outbox = rs.delivery.Outbox("mail", clock=rs.testing.FakeClock())
        >>> engine = sa.create_engine("sqlite://")
        >>> sql = outbox.sql(engine)
        >>> sql.create_table()
        >>> with engine.begin() as connection:  # the business change's transaction
        ...     sql.put(connection, "order-7", {"to": "ada@example.com"})
        >>> sql.relay_once()
        1
        >>> outbox.status("order-7").state
        'pending'
    """

    def __init__(
        self,
        outbox: Outbox,
        engine: Engine,
        *,
        table: str = "resilience_outbox",
        metadata: MetaData | None = None,
        schema: str | None = None,
    ) -> None:
        sa = _sqlalchemy()
        if not isinstance(outbox, Outbox):
            raise ConfigurationError(f"outbox must be an rs.delivery.Outbox, got {outbox!r}")
        _text(outbox.name, "an SQL outbox's name")
        if len(outbox.name) > MAX_NAME:
            raise ConfigurationError(
                f"an SQL outbox's name has at most {MAX_NAME} characters, got {len(outbox.name)}"
            )
        if not isinstance(engine, sa.Engine):
            raise ConfigurationError(f"engine must be an sqlalchemy.Engine, got {engine!r}")
        name: object = table
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"table must be a non-empty string, got {table!r}")
        if metadata is not None and not isinstance(metadata, sa.MetaData):
            raise ConfigurationError(f"metadata must be an sqlalchemy.MetaData, got {metadata!r}")
        self.outbox = outbox
        self.engine = engine
        self.table = _table(sa, sa.MetaData() if metadata is None else metadata, table, schema)
        self._sa = sa
        self._random: _random.Random = outbox._random
        self._clock = outbox._clock
        c = self.table.c
        mine = (c.outbox == outbox.name) & c.error.is_(None)
        self._select = (
            sa.select(c.id, c.key, c.payload, c.kind)
            .where(mine)
            .order_by(c.id)
            .with_for_update(skip_locked=True)
        )
        self._count = sa.select(sa.func.count()).select_from(self.table).where(mine)
        # a write that changes nothing: on SQLite it takes the database's write lock
        self._lock = sa.update(self.table).where(sa.false()).values(error=c.error)
        self._inserts: dict[str, tuple[Any, bool]] = {}

    def __repr__(self) -> str:
        return f"SqlOutbox({self.outbox.name!r}, table={self.table.fullname!r})"

    def create_table(self) -> None:
        """Create the outbox table (and its unique index) unless it exists."""
        self.table.create(self.engine, checkfirst=True)

    def _insert(self, dialect: Any) -> tuple[Any, bool]:
        """The dialect's insert, and whether it returns the new row's id (no row: a conflict)."""
        found = self._inserts.get(dialect.name)
        if found is None:
            if dialect.name in _ON_CONFLICT:
                module = __import__(f"sqlalchemy.dialects.{dialect.name}", fromlist=["insert"])
                statement = module.insert(self.table).on_conflict_do_nothing(
                    index_elements=["outbox", "digest"]
                )
                returning = bool(dialect.insert_returning)
                if returning:  # the driver's rowcount is -1 under RETURNING
                    statement = statement.returning(self.table.c.id)
            else:
                statement, returning = self._sa.insert(self.table), False
            found = self._inserts[dialect.name] = (statement, returning)
        return found

    def put(self, connection: Connection | Session, key: str, payload: Payload) -> None:
        """Insert the delivery of ``payload`` for ``key`` in the transaction of ``connection``
        (a SQLAlchemy ``Connection`` or ``Session``): it is relayed once that transaction
        commits, and never if it rolls back.

        ``key`` and ``payload`` are checked here as :meth:`Outbox.put` checks them
        (:class:`~resilience.ConfigurationError`, :class:`TypeError`), so that no row can be
        refused later; a key must also fit a text column (valid Unicode, no NUL). A key whose
        row is still waiting in the table raises :class:`DuplicateDeliveryError` (after the
        relay, the outbox's own once-per-key rule applies: a row put again is relayed as a
        no-op).
        """
        key = _text(self.outbox._check_key(key), "a key")
        data, kind = _encode(payload)
        if len(data) > MAX_PAYLOAD:
            raise ConfigurationError(f"payload is {len(data)} bytes, more than {MAX_PAYLOAD}")
        bind: Any = connection if hasattr(connection, "dialect") else connection.get_bind()
        statement, returning = self._insert(bind.dialect)
        row = {
            "outbox": self.outbox.name,
            "key": key,
            "digest": digest(key),
            "payload": data,
            "kind": kind,
        }
        try:
            result: Any = connection.execute(statement, row)
        except self._sa.exc.IntegrityError as exc:  # dialects without ON CONFLICT
            raise self._duplicate(key) from exc
        if (result.first() is None) if returning else (result.rowcount == 0):
            raise self._duplicate(key)

    def _duplicate(self, key: str) -> DuplicateDeliveryError:
        return DuplicateDeliveryError(
            f"outbox {self.outbox.name!r} already has a row for key {key!r:.80} waiting in "
            f"{self.table.fullname!r} (one row per key until it is relayed)",
            key=key,
            outbox=self.outbox.name,
        )

    def relay_once(self, *, batch: int = 100) -> int:
        """Move every committed row into the outbox, ``batch`` rows per database transaction;
        return how many rows were moved (or refused).

        A row the outbox refuses (a key or payload it rejects: only rows written to the table
        by other means) is marked with the error and left in the table (:meth:`refused`).
        Raises :class:`~resilience.StoreError` when the database or the outbox's store fails
        (the rows already put in that batch are deleted when the database still answers; the
        others stay for the next pass).
        """
        size = positive_int(batch, "batch", maximum=MAX_BATCH)
        total = 0
        while True:
            moved, full = self._relay_batch(size)
            total += moved
            if not full:
                return total

    def _relay_batch(self, size: int) -> tuple[int, bool]:
        sa = self._sa
        table = self.table
        failure: StoreError | None = None
        try:
            with self.engine.begin() as connection:
                if connection.dialect.name == "sqlite":
                    connection.execute(self._lock)  # one relay at a time
                rows = connection.execute(self._select.limit(size)).all()
                done: list[int] = []
                refused = 0
                for row in rows:
                    try:
                        self.outbox.put(row.key, self._payload(row.payload, row.kind))
                    except StoreError as exc:
                        failure = exc
                        break
                    except (TypeError, ValueError) as exc:  # incl. ConfigurationError
                        _log.error(
                            "resilience: outbox %r refused row %s of %s: %s",
                            self.outbox.name,
                            row.id,
                            table.fullname,
                            exc,
                        )
                        error = _describe(exc)
                        connection.execute(
                            sa.update(table).where(table.c.id == row.id).values(error=error)
                        )
                        refused += 1
                        continue
                    done.append(row.id)
                if done:
                    connection.execute(sa.delete(table).where(table.c.id.in_(done)))
        except sa.exc.DBAPIError as exc:
            raise StoreError(
                f"outbox {self.outbox.name!r}: the table {table.fullname!r} failed: {exc}"
            ) from exc
        if failure is not None:
            raise failure
        return len(done) + refused, len(rows) == size

    @staticmethod
    def _payload(data: bytes, kind: str) -> Any:
        if kind not in _KINDS:
            raise ValueError(f"unknown payload kind {kind!r} (one of 'b', 's', 'j')")
        return _decode(bytes(data), kind)

    def backlog(self) -> int:
        """How many committed rows wait for the relay (refused rows not counted)."""
        with self.engine.connect() as connection:
            count: int = connection.execute(self._count).scalar_one()
        return count

    def refused(self) -> list[tuple[str, str]]:
        """The rows the outbox refused, as ``(key, error)``, oldest first: fix a row and set
        its ``error`` to NULL to relay it again, or delete it."""
        c = self.table.c
        query = (
            self._sa.select(c.key, c.error)
            .where((c.outbox == self.outbox.name) & c.error.is_not(None))
            .order_by(c.id)
        )
        with self.engine.connect() as connection:
            return [(row.key, row.error) for row in connection.execute(query)]

    def run(
        self,
        *,
        stop: Any = None,
        poll: Duration = 0.5,
        batch: int = 100,
        backoff: Backoff | None = None,
    ) -> None:
        """Relay until ``stop`` (a ``threading.Event``) is set: a :meth:`relay_once`, then, if
        nothing was moved, a pause of ``poll`` seconds (cut short by ``stop``). A failure (the
        database or the store down) is logged and followed by a pause from ``backoff``
        (default exponential from one second to 30, with jitter), longer each time until a
        pass succeeds; nothing is lost meanwhile (the rows wait in the table)."""
        interval = seconds(poll, "poll", allow_zero=False)
        size = positive_int(batch, "batch", maximum=MAX_BATCH)
        pauses = backoff or exponential(initial=1.0, maximum=30.0, jitter="equal")
        if not callable(getattr(pauses, "delay", None)):
            raise ConfigurationError(
                f"backoff must be a resilience.backoff schedule, got {backoff!r}"
            )
        failures = 0
        while stop is None or not stop.is_set():
            try:
                moved = self.relay_once(batch=size)
            except StoreError as exc:
                failures += 1
                delay = pauses.delay(failures, None, self._random)
                _log.warning(
                    "resilience: outbox %r could not relay (failure %d, next try in %.3g s): %s",
                    self.outbox.name,
                    failures,
                    delay,
                    exc,
                )
                self._pause(stop, delay)
                continue
            failures = 0
            if not moved:
                self._pause(stop, interval)

    def _pause(self, stop: Any, interval: float) -> None:
        if stop is None:
            self._clock.sleep(interval)
        else:
            stop.wait(interval)
