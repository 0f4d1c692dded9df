"""The outbox's state machine: one pure :class:`~resilience.stores.StoreOp` per transition.

An outbox is one store entity (``outbox:<name>``). In a memory store its state is a
:class:`Book`, mutated in place by each op's ``apply``; on Redis it is a sorted set of due
deliveries (``KEYS[1]``, scored by when each is due in µs: its next attempt, or the end of its
claim's lease), a sorted set of dead letters (``KEYS[2]``, scored by when each died) and one hash
per delivery, all under the same hash tag; each op's ``LUA`` (``outbox.lua`` followed by the
op's own file) is the Redis twin of ``apply``, decided on the same clock in whole microseconds.

A delivery's record is ``{st, a, g, n, p, t, e, x}``: state (``p`` pending, ``f`` in flight,
``d`` delivered, ``x`` dead), attempts, fence, due time, payload, payload type, last error and,
once final, its expiry. Due work is found without scanning: the due set's lowest scores.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..stores._lua import script
from ..stores.base import ttl_us

__all__ = [
    "Book",
    "ClaimOp",
    "DeadOp",
    "PutOp",
    "RequeueOp",
    "SettleOp",
    "StatusOp",
    "Wire",
]

#: a delivery as a store reports it: (state, attempts, fence, due µs, last error)
Wire = tuple[str, int, int, int, str]
#: a claimed delivery: (key, fence, attempt, payload, payload type)
Claimed = tuple[str, int, int, bytes, str]
SUFFIXES = ("q", "x")


def _lua(name: str) -> str:
    return script(__package__, "outbox.lua") + script(__package__, name)


def _b(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def _s(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogatepass")
    return str(value)


def _us(now: float) -> int:
    return round(now * 1_000_000)


@dataclass(slots=True)
class Book:
    """An outbox in a memory store: the records, the due heap (``(due µs, key)``; an entry is
    stale unless the record is pending or in flight with that due time), the dead letters
    (key -> when it died) and the expiry heap of final records."""

    recs: dict[str, dict[str, Any]] = field(default_factory=dict)
    due: list[tuple[int, str]] = field(default_factory=list)
    dead: dict[str, int] = field(default_factory=dict)
    expiry: list[tuple[int, str]] = field(default_factory=list)

    def purge(self, now: int) -> None:
        """Drop the final records whose time is up."""
        exp = self.expiry
        while exp and exp[0][0] <= now:
            x, key = heapq.heappop(exp)
            rec = self.recs.get(key)
            if rec is not None and rec.get("x") == x:
                del self.recs[key]
                self.dead.pop(key, None)

    def schedule(self, key: str, rec: dict[str, Any], due: int) -> None:
        rec["n"] = due
        heapq.heappush(self.due, (due, key))

    def final(self, key: str, rec: dict[str, Any], now: int, keep: int) -> None:
        rec["x"] = now + keep
        heapq.heappush(self.expiry, (now + keep, key))

    def bury(self, key: str, rec: dict[str, Any], now: int, keep: int, error: str) -> None:
        rec["st"], rec["e"] = "x", error
        self.final(key, rec, now, keep)
        self.dead[key] = now


def _book(state: Any, now: float) -> tuple[Book, int]:
    book = state if isinstance(state, Book) else Book()
    now_us = _us(now)
    book.purge(now_us)
    return book, now_us


def _wire(rec: dict[str, Any]) -> Wire:
    return rec["st"], rec["a"], rec["g"], rec["n"], rec["e"]


def _parse_wire(reply: Any) -> Wire:
    st, a, g, n, e = reply
    return _s(st), int(a), int(g), int(n), _s(e)


@dataclass(slots=True)
class PutOp:
    """Enqueue ``dkey`` due now unless it has a delivery; result ``(created, wire)``.

    Example:
        >>> book, (created, wire), _ = PutOp("outbox:o", "k1", b"{}", "j").apply(None, 1.0)
        >>> created, wire
        (True, ('p', 0, 0, 1000000, ''))
        >>> PutOp("outbox:o", "k1", b"other", "b").apply(book, 2.0)[1]
        (False, ('p', 0, 0, 1000000, ''))
    """

    key: str
    dkey: str
    payload: bytes
    kind: str

    KEY_SUFFIXES: ClassVar[tuple[str, ...]] = SUFFIXES
    RAW_REPLY: ClassVar[bool] = True
    DURABLE: ClassVar[bool] = True  # RedisStore(wait_replicas=N) waits for replicas
    LUA: ClassVar[str] = _lua("put.lua")

    def apply(self, state: Any | None, now: float, /) -> tuple[Book, tuple[bool, Wire], None]:
        """Pure next-state function (the book is updated in place)."""
        book, now_us = _book(state, now)
        rec = book.recs.get(self.dkey)
        if rec is not None:
            return book, (False, _wire(rec)), None
        rec = {"st": "p", "a": 0, "g": 0, "p": self.payload, "t": self.kind, "e": ""}
        book.recs[self.dkey] = rec
        book.schedule(self.dkey, rec, now_us)
        return book, (True, _wire(rec)), None

    def lua_args(self) -> tuple[bytes, bytes, bytes]:
        """Key, payload, payload type."""
        return _b(self.dkey), self.payload, _b(self.kind)

    def parse(self, reply: Any) -> tuple[bool, Wire]:
        """``(created, wire)``."""
        return bool(int(reply[0])), _parse_wire(reply[1:])


@dataclass(slots=True)
class ClaimOp:
    """Claim up to ``limit`` deliveries due by ``cutoff`` µs (``None``: now); result
    ``(now µs, claimed, dead-lettered keys)``. An in-flight delivery whose lease ended is
    claimed again, unless it used every attempt: it is then dead-lettered (``lease expired``).

    Example:
        >>> book = PutOp("outbox:o", "k1", b"hi", "s").apply(None, 0.0)[0]
        >>> op = ClaimOp("outbox:o", None, limit=10, lease=30.0, max_attempts=3, keep=60.0)
        >>> op.apply(book, 1.0)[1]
        (1000000, [('k1', 1, 1, b'hi', 's')], [])
        >>> op.apply(book, 2.0)[1]  # in flight: its lease runs until 31 s
        (2000000, [], [])
        >>> op.apply(book, 31.0)[1]  # the lease ended: claimed again, fenced above
        (31000000, [('k1', 2, 2, b'hi', 's')], [])
    """

    key: str
    cutoff: int | None
    limit: int
    lease: float
    max_attempts: int
    keep: float

    KEY_SUFFIXES: ClassVar[tuple[str, ...]] = SUFFIXES
    RAW_REPLY: ClassVar[bool] = True
    LUA: ClassVar[str] = _lua("claim.lua")

    def apply(
        self, state: Any | None, now: float, /
    ) -> tuple[Book, tuple[int, list[Claimed], list[str]], None]:
        """Pure next-state function (the book is updated in place)."""
        book, now_us = _book(state, now)
        cutoff = now_us if self.cutoff is None else self.cutoff
        lease, keep = ttl_us(self.lease), ttl_us(self.keep)
        claimed: list[Claimed] = []
        dead: list[str] = []
        due = book.due
        while due and due[0][0] <= cutoff and len(claimed) + len(dead) < self.limit:
            n, key = heapq.heappop(due)
            rec = book.recs.get(key)
            if rec is None or rec["st"] not in ("p", "f") or rec["n"] != n:
                continue  # a stale heap entry
            if rec["st"] == "f" and rec["a"] >= self.max_attempts:
                book.bury(key, rec, now_us, keep, "lease expired")
                dead.append(key)
                continue
            rec["st"], rec["a"], rec["g"] = "f", rec["a"] + 1, rec["g"] + 1
            book.schedule(key, rec, now_us + lease)
            claimed.append((key, rec["g"], rec["a"], rec["p"], rec["t"]))
        return book, (now_us, claimed, dead), None

    def lua_args(self) -> tuple[bytes | int, ...]:
        """Cutoff, limit, lease, max attempts and keep (µs)."""
        cutoff: bytes | int = b"" if self.cutoff is None else self.cutoff
        return cutoff, self.limit, ttl_us(self.lease), self.max_attempts, ttl_us(self.keep)

    def parse(self, reply: Any) -> tuple[int, list[Claimed], list[str]]:
        """``(now µs, claimed, dead-lettered keys)``."""
        n = int(reply[1])
        claimed: list[Claimed] = []
        for i in range(2, 2 + 5 * n, 5):
            key, fence, attempt, payload, kind = reply[i : i + 5]
            claimed.append((_s(key), int(fence), int(attempt), bytes(payload), _s(kind)))
        return int(reply[0]), claimed, [_s(k) for k in reply[2 + 5 * n :]]


@dataclass(slots=True)
class SettleOp:
    """End the claim ``(dkey, fence)`` if it is still the delivery's; result: whether it was.

    ``mode``: ``"d"`` delivered, ``"r"`` rescheduled ``delay`` µs later (at least 1), ``"x"``
    dead-lettered with ``error``, ``"l"`` released (due now, the attempt given back).

    Example:
        >>> book = PutOp("outbox:o", "k1", b"hi", "s").apply(None, 0.0)[0]
        >>> _ = ClaimOp("outbox:o", None, 10, 30.0, 3, 60.0).apply(book, 0.0)
        >>> SettleOp("outbox:o", "k1", 7, "d", 0, "", keep=60.0).apply(book, 1.0)[1]  # zombie
        False
        >>> SettleOp("outbox:o", "k1", 1, "d", 0, "", keep=60.0).apply(book, 1.0)[1]
        True
    """

    key: str
    dkey: str
    fence: int
    mode: str
    delay: int
    error: str
    keep: float

    KEY_SUFFIXES: ClassVar[tuple[str, ...]] = SUFFIXES
    DURABLE: ClassVar[bool] = True  # RedisStore(wait_replicas=N) waits for replicas
    LUA: ClassVar[str] = _lua("settle.lua")

    def apply(self, state: Any | None, now: float, /) -> tuple[Book, bool, None]:
        """Pure next-state function (the book is updated in place)."""
        book, now_us = _book(state, now)
        rec = book.recs.get(self.dkey)
        if rec is None or rec["st"] != "f" or rec["g"] != self.fence:
            return book, False, None
        keep = ttl_us(self.keep)
        if self.mode == "d":
            rec["st"], rec["n"] = "d", 0
            book.final(self.dkey, rec, now_us, keep)
        elif self.mode == "x":
            book.bury(self.dkey, rec, now_us, keep, self.error)
        elif self.mode == "r":
            rec["st"], rec["e"] = "p", self.error
            book.schedule(self.dkey, rec, now_us + max(1, self.delay))
        else:
            rec["st"], rec["a"] = "p", max(0, rec["a"] - 1)
            book.schedule(self.dkey, rec, now_us)
        return book, True, None

    def lua_args(self) -> tuple[bytes | int, ...]:
        """Key, fence, mode, delay µs, error, keep µs."""
        return (
            _b(self.dkey),
            self.fence,
            _b(self.mode),
            self.delay,
            _b(self.error),
            ttl_us(self.keep),
        )

    def parse(self, reply: Any) -> bool:
        """Whether the claim was still the delivery's."""
        return bool(int(reply))


@dataclass(slots=True)
class StatusOp:
    """The delivery of ``dkey`` as a :data:`Wire`, or ``None``."""

    key: str
    dkey: str

    KEY_SUFFIXES: ClassVar[tuple[str, ...]] = SUFFIXES
    RAW_REPLY: ClassVar[bool] = True
    LUA: ClassVar[str] = _lua("status.lua")

    def apply(self, state: Any | None, now: float, /) -> tuple[Book, Wire | None, None]:
        """Pure next-state function."""
        book, _ = _book(state, now)
        rec = book.recs.get(self.dkey)
        return book, None if rec is None else _wire(rec), None

    def lua_args(self) -> tuple[bytes]:
        """The key."""
        return (_b(self.dkey),)

    def parse(self, reply: Any) -> Wire | None:
        """The wire, or ``None``."""
        return _parse_wire(reply) if reply else None


@dataclass(slots=True)
class DeadOp:
    """Dead letters ``offset`` to ``offset + count`` (oldest first, ties by key) as
    ``(key, attempts, error, died µs)``."""

    key: str
    offset: int
    count: int
    keep: float

    KEY_SUFFIXES: ClassVar[tuple[str, ...]] = SUFFIXES
    RAW_REPLY: ClassVar[bool] = True
    LUA: ClassVar[str] = _lua("dead.lua")

    def apply(
        self, state: Any | None, now: float, /
    ) -> tuple[Book, list[tuple[str, int, str, int]], None]:
        """Pure next-state function."""
        book, _ = _book(state, now)
        order = sorted(book.dead.items(), key=lambda item: (item[1], _b(item[0])))
        page = order[self.offset : self.offset + self.count]
        recs = book.recs
        return book, [(k, recs[k]["a"], recs[k]["e"], t) for k, t in page], None

    def lua_args(self) -> tuple[int, int, int]:
        """Offset, count, keep µs."""
        return self.offset, self.count, ttl_us(self.keep)

    def parse(self, reply: Any) -> list[tuple[str, int, str, int]]:
        """The page."""
        return [
            (_s(reply[i]), int(reply[i + 1]), _s(reply[i + 2]), int(float(reply[i + 3])))
            for i in range(0, len(reply), 4)
        ]


@dataclass(slots=True)
class RequeueOp:
    """Make the dead delivery of ``dkey`` pending again, due now, attempts reset; result:
    whether there was one."""

    key: str
    dkey: str

    KEY_SUFFIXES: ClassVar[tuple[str, ...]] = SUFFIXES
    DURABLE: ClassVar[bool] = True  # RedisStore(wait_replicas=N) waits for replicas
    LUA: ClassVar[str] = _lua("requeue.lua")

    def apply(self, state: Any | None, now: float, /) -> tuple[Book, bool, None]:
        """Pure next-state function (the book is updated in place)."""
        book, now_us = _book(state, now)
        rec = book.recs.get(self.dkey)
        if rec is None or rec["st"] != "x":
            return book, False, None
        rec["st"], rec["a"] = "p", 0
        rec.pop("x", None)
        book.dead.pop(self.dkey, None)
        book.schedule(self.dkey, rec, now_us)
        return book, True, None

    def lua_args(self) -> tuple[bytes]:
        """The key."""
        return (_b(self.dkey),)

    def parse(self, reply: Any) -> bool:
        """Whether it was requeued."""
        return bool(int(reply))
