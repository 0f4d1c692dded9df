"""Idempotency keys: the first call for a key runs, duplicates get its stored outcome.

The record of one key lives in a :class:`~resilience.stores.Store` and moves through a small
state machine, one pure :class:`~resilience.stores.StoreOp` per step (the Redis store mirrors
each in one Lua script)::

    absent ──claim──▶ IN_PROGRESS(owner, fence, lease_until) ──complete(owner, fence)──▶ DONE
                         │  ▲ renew(owner, fence): lease_until = now + lease            │
                         │  └ claim after lease_until: takeover, fence + 1             │ ttl
                         └──release(owner, fence)──▶ absent ◀───────────────────────────┘

* **claim** ``(key, fingerprint, owner)``: absent → IN_PROGRESS, ``"claimed"``; IN_PROGRESS
  with a live lease → ``"in_progress"``; IN_PROGRESS whose lease expired (a crashed or hung
  owner) → taken over with the next fencing token, ``"claimed"``; DONE → ``"replay"``; any state
  with a different fingerprint → ``"reused"`` (the record is left untouched).
* **renew** extends the lease while the owner runs (a heartbeat every ``lease / 3``).
* **complete** stores the outcome and starts the ``ttl`` (measured from completion); it succeeds
  only for the current owner *and* fencing token, so a late result from an owner whose lease was
  taken over cannot overwrite the new owner's.
* **release** deletes the claim (the outcome is not stored; a retry runs again).

Records and their payloads are plain JSON-compatible data (strings, numbers); outcomes are
encoded by a codec (JSON by default, never pickle).

Delivery guarantee: exactly-once while the store keeps the record (duplicates never run
concurrently and replay the stored outcome for ``ttl``). A duplicate runs the function again only
after a failure that is not a stored outcome, an owner crash or hang past its lease, an outcome
that could not be recorded (reported by :class:`~resilience.IdempotencyOutcomeUnrecordedError`;
completion is retried while the lease is held), or the loss of the record (``ttl``, early
eviction from a full memory store, loss of the store's data); so functions with external side
effects should still be transactional or idempotent downstream.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import logging
import math
import os
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeGuard

from ._clock import SYSTEM_CLOCK, Clock, resolve_clock
from ._degraded import STORE_LOG
from ._policy import Emitter, Policy, refusal
from ._types import Duration, check_name, positive_int, seconds
from .errors import (
    ConfigurationError,
    IdempotencyConflictError,
    IdempotencyInProgressError,
    IdempotencyKeyReusedError,
    IdempotencyOutcomeUnrecordedError,
    StoreError,
)
from .events import (
    CallRejected,
    IdempotentReplay,
    Listener,
    RecordsEvicted,
    StoreFailed,
    error_type,
)
from .stores.base import StoreOp, ttl_us
from .stores.memory import MemoryStore
from .stores.redis import text

if TYPE_CHECKING:  # pragma: no cover
    import asyncio

__all__ = [
    "MAX_BUFFERED_BYTES",
    "MAX_RESPONSE_BYTES",
    "BufferBudget",
    "CallerScope",
    "ClaimOp",
    "Claim",
    "Codec",
    "CompleteOp",
    "Idempotent",
    "IdempotencyRecords",
    "JSONCodec",
    "ReleaseOp",
    "RenewOp",
    "caller_scope",
    "record_key",
]

_log = logging.getLogger("resilience")

#: Version tag of a record; an unknown version is treated as corrupt (fail closed).
RECORD_VERSION = 1

IN_PROGRESS = "p"
DONE = "d"

ClaimStatus = Literal["claimed", "in_progress", "replay", "reused", "corrupt", "unprotected"]


def _valid(state: object) -> TypeGuard[dict[str, Any]]:
    return (
        isinstance(state, dict)
        and state.get("v") == RECORD_VERSION
        and state.get("st") in (IN_PROGRESS, DONE)
        and isinstance(state.get("fp"), str)
        and isinstance(state.get("o"), str)
        and isinstance(state.get("g"), int)
        and type(state.get("lu")) is int
    )


def _done_by(state: object, owner: str, fence: int) -> bool:
    return _valid(state) and state["st"] == DONE and state["o"] == owner and state["g"] == fence


def _owns(state: object, owner: str, fence: int) -> TypeGuard[dict[str, Any]]:
    return (
        _valid(state) and state["st"] == IN_PROGRESS and state["o"] == owner and state["g"] == fence
    )


# -- the Lua twins (run by RedisStore; see resilience.stores.redis.LUA_NOW for the prelude) -----
# A record is a hash: v (version), st, fp, o (owner), g (fence), lu (lease end, integer µs of the
# script clock), r (payload; absent when not retained) and x (logical expiry, µs).
_LUA_RECORD = """
local function record(key, now)
  local st, r = load(key, now, 'v', 'st', 'fp', 'o', 'g', 'lu', 'r')
  if st ~= 1 then return st end
  if r[1] ~= '1' or (r[2] ~= 'p' and r[2] ~= 'd') or not r[3] or not r[4]
     or not r[5] or not string.match(r[5], '^%-?%d+$') or not tonumber(r[6] or '') then
    return 2
  end
  return 1, r
end
local function owned(r, owner, fence)
  return r[2] == 'p' and r[4] == owner and r[5] == fence
end
"""


def _b(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def _lease_end(now: float, lease: float) -> int:
    """The lease end (integer µs of the store clock) of a claim or renewal at ``now``."""
    return round(now * 1_000_000) + ttl_us(lease)


def _record_ttl(ttl: float, lease: float) -> float:
    """A claimed record's TTL in seconds, whole µs as the Lua twin's ``ttl + lease`` (µs)."""
    return (ttl_us(ttl) + ttl_us(lease)) / 1_000_000


# -- the pure operations ---------------------------------------------------------------------
@dataclass(slots=True)
class ClaimOp:
    """Claim ``key`` for ``owner`` (pure; see the module documentation for the transitions).

    The result is ``(status, fence, extra)``: ``extra`` is the stored payload for ``"replay"``
    (``None`` when the outcome was not retained), the seconds left on the owner's lease for
    ``"in_progress"``, ``1`` for a takeover of an expired claim and ``0`` otherwise.

    The lease is decided in whole microseconds exactly like the Lua twin (and like every store
    decides expiry, see :func:`~resilience.stores.base.ttl_us`): a claim or renewal at ``now``
    holds the lease while the clock reads less than ``round(now * 1e6) + ttl_us(lease)`` µs,
    so both stores agree on the instant a lease ends whatever the float noise of the clock.

    Example:
        >>> op = ClaimOp("k", "fp", "owner-1", lease=60.0, ttl=3600.0)
        >>> state, result, ttl = op.apply(None, 0.0)
        >>> result, state["st"], state["lu"], ttl
        (('claimed', 1, 0), 'p', 60000000, 3660.0)
        >>> ClaimOp("k", "fp", "owner-2", lease=60.0, ttl=3600.0).apply(state, 10.0)[1]
        ('in_progress', 1, 50.0)
        >>> ClaimOp("k", "other", "owner-2", lease=60.0, ttl=3600.0).apply(state, 10.0)[1]
        ('reused', 1, 0)
        >>> ClaimOp("k", "fp", "owner-2", lease=60.0, ttl=3600.0).apply(state, 61.0)[1]
        ('claimed', 2, 1)
    """

    key: str
    fingerprint: str
    owner: str
    lease: float
    ttl: float
    #: completed records a full memory store evicted to make room for this claim (set by it)
    evicted: int = field(default=0, compare=False)
    #: a memory store never evicts a claim early (see :class:`~resilience.MemoryStore`)
    PINS: ClassVar[bool] = True

    DURABLE: ClassVar[bool] = True  # RedisStore(wait_replicas=N) waits for replicas
    LUA: ClassVar[str] = (
        _LUA_RECORD
        + """
local now = now_us()
local lease, ttl, fp, owner = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local st, r = record(KEYS[1], now)
local function claimed(fence)
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'v', '1', 'st', 'p', 'fp', fp, 'o', owner, 'g', us(fence),
             'lu', us(now + lease))
  expire(KEYS[1], now, ttl + lease)
end
if st == 0 then
  claimed(1)
  return {'claimed', 1, 0}
end
if st == 2 then return {'corrupt', 0, 0} end
local fence = tonumber(r[5])
if r[3] ~= fp then return {'reused', fence, 0} end
if r[2] == 'd' then
  if r[7] then return {'replay', fence, r[7]} end
  return {'replay', fence}
end
local lu = tonumber(r[6])
if lu > now then return {'in_progress', fence, lu - now} end
claimed(fence + 1)
return {'claimed', fence + 1, 1}
"""
    )

    def apply(self, state: Any | None, now: float, /) -> tuple[Any | None, Any, float | None]:
        """Pure next-state function."""
        if state is None:
            return self._claimed(1, now), ("claimed", 1, 0), _record_ttl(self.ttl, self.lease)
        if not _valid(state):
            return state, ("corrupt", 0, 0), None
        fence = state["g"]
        if state["fp"] != self.fingerprint:
            return state, ("reused", fence, 0), None
        if state["st"] == DONE:
            return state, ("replay", fence, state.get("r")), None
        now_us = round(now * 1_000_000)
        if state["lu"] > now_us:
            return state, ("in_progress", fence, (state["lu"] - now_us) / 1_000_000), None
        # an orphan: its owner crashed or hung past its lease; take it over with a new fence
        claimed = self._claimed(fence + 1, now)
        return claimed, ("claimed", fence + 1, 1), _record_ttl(self.ttl, self.lease)

    def lua_args(self) -> tuple[int, int, bytes, bytes]:
        """Lease and ttl in µs, fingerprint, owner (the Lua twin's ARGV[2:])."""
        return ttl_us(self.lease), ttl_us(self.ttl), _b(self.fingerprint), _b(self.owner)

    def parse(self, reply: Any) -> tuple[str, int, Any]:
        """The Lua reply as :meth:`apply`'s result."""
        status, fence = text(reply[0]), int(reply[1])
        if status == "replay":
            return status, fence, text(reply[2]) if len(reply) > 2 else None
        if status == "in_progress":
            return status, fence, int(reply[2]) / 1_000_000
        return status, fence, int(reply[2])

    def _claimed(self, fence: int, now: float) -> dict[str, Any]:
        return {
            "v": RECORD_VERSION,
            "st": IN_PROGRESS,
            "fp": self.fingerprint,
            "o": self.owner,
            "g": fence,
            "lu": _lease_end(now, self.lease),
        }


@dataclass(slots=True)
class RenewOp:
    """Extend the lease of the claim held by ``(owner, fence)``; result: whether it is held.

    Example:
        >>> claimed = ClaimOp("k", "fp", "me", lease=60.0, ttl=10.0).apply(None, 0.0)[0]
        >>> state, held, _ = RenewOp("k", "me", 1, lease=60.0, ttl=10.0).apply(claimed, 30.0)
        >>> held, state["lu"]
        (True, 90000000)
        >>> RenewOp("k", "someone-else", 1, lease=60.0, ttl=10.0).apply(claimed, 30.0)[1]
        False
    """

    key: str
    owner: str
    fence: int
    lease: float
    ttl: float
    #: a renewed claim stays pinned in a memory store
    PINS: ClassVar[bool] = True

    DURABLE: ClassVar[bool] = True  # RedisStore(wait_replicas=N) waits for replicas
    LUA: ClassVar[str] = (
        _LUA_RECORD
        + """
local now = now_us()
local lease, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local st, r = record(KEYS[1], now)
if st ~= 1 or not owned(r, ARGV[2], ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'lu', us(now + lease))
expire(KEYS[1], now, ttl + lease)
return 1
"""
    )

    def apply(self, state: Any | None, now: float, /) -> tuple[Any | None, bool, float | None]:
        """Pure next-state function."""
        if not _owns(state, self.owner, self.fence):
            return state, False, None
        renewed = {**state, "lu": _lease_end(now, self.lease)}
        return renewed, True, _record_ttl(self.ttl, self.lease)

    def lua_args(self) -> tuple[bytes, int, int, int]:
        """Owner, fence, lease and ttl in µs."""
        return _b(self.owner), self.fence, ttl_us(self.lease), ttl_us(self.ttl)

    def parse(self, reply: Any) -> bool:
        """Whether the claim is still held."""
        return bool(reply)


@dataclass(slots=True)
class CompleteOp:
    """Store the outcome ``payload`` if ``(owner, fence)`` still holds the claim (fencing).

    ``payload`` ``None`` records a completed call whose outcome was not retained (duplicates
    are refused instead of replayed). The record then lives ``ttl`` seconds.

    Idempotent for its owner: a completion retried after a lost reply finds the record already
    completed by the same ``(owner, fence)`` and reports it stored (the record is unchanged).

    Example:
        >>> claimed = ClaimOp("k", "fp", "me", lease=60.0, ttl=10.0).apply(None, 0.0)[0]
        >>> CompleteOp("k", "zombie", 1, payload="late", ttl=10.0).apply(claimed, 5.0)[1]
        False
        >>> state, stored, ttl = CompleteOp("k", "me", 1, payload="r:42", ttl=10.0).apply(
        ...     claimed, 5.0)
        >>> stored, state["st"], state["r"], ttl
        (True, 'd', 'r:42', 10.0)
        >>> CompleteOp("k", "me", 1, payload="r:42", ttl=10.0).apply(state, 6.0)[1:]
        (True, None)
    """

    key: str
    owner: str
    fence: int
    payload: str | None
    ttl: float

    DURABLE: ClassVar[bool] = True  # RedisStore(wait_replicas=N) waits for replicas
    LUA: ClassVar[str] = (
        _LUA_RECORD
        + """
local now = now_us()
local st, r = record(KEYS[1], now)
if st ~= 1 then return 0 end
if r[2] == 'd' and r[4] == ARGV[2] and r[5] == ARGV[3] then return 1 end
if not owned(r, ARGV[2], ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'st', 'd')
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 'r', ARGV[6])
else
  redis.call('HDEL', KEYS[1], 'r')
end
expire(KEYS[1], now, tonumber(ARGV[4]))
return 1
"""
    )

    def apply(self, state: Any | None, now: float, /) -> tuple[Any | None, bool, float | None]:
        """Pure next-state function."""
        if not _owns(state, self.owner, self.fence):
            if _done_by(state, self.owner, self.fence):
                return state, True, None  # a retried completion: already stored
            return state, False, None
        return {**state, "st": DONE, "r": self.payload}, True, self.ttl

    def lua_args(self) -> tuple[bytes, int, int, int, bytes]:
        """Owner, fence, ttl in µs, whether a payload is stored, the payload."""
        retained = self.payload is not None
        return _b(self.owner), self.fence, ttl_us(self.ttl), int(retained), _b(self.payload or "")

    def parse(self, reply: Any) -> bool:
        """Whether the outcome was stored."""
        return bool(reply)


@dataclass(slots=True)
class ReleaseOp:
    """Delete the claim held by ``(owner, fence)`` (its outcome is not stored).

    Example:
        >>> claimed = ClaimOp("k", "fp", "me", lease=60.0, ttl=10.0).apply(None, 0.0)[0]
        >>> ReleaseOp("k", "me", 1).apply(claimed, 1.0)[:2]
        (None, True)
    """

    key: str
    owner: str
    fence: int

    LUA: ClassVar[str] = (
        _LUA_RECORD
        + """
local now = now_us()
local st, r = record(KEYS[1], now)
if st ~= 1 or not owned(r, ARGV[2], ARGV[3]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""
    )

    def apply(self, state: Any | None, now: float, /) -> tuple[Any | None, bool, float | None]:
        """Pure next-state function."""
        if not _owns(state, self.owner, self.fence):
            return state, False, None
        return None, True, None

    def lua_args(self) -> tuple[bytes, int]:
        """Owner and fence."""
        return _b(self.owner), self.fence

    def parse(self, reply: Any) -> bool:
        """Whether the claim was released."""
        return bool(reply)


# -- keys, owners, codecs --------------------------------------------------------------------
def record_key(namespace: str, *parts: str) -> str:
    """A fixed-length store key for a composite idempotency key (length-prefixed, SHA-256).

    Parts are hashed, so user-controlled values (keys, principals, paths) can never collide by
    concatenation nor inject characters into the store's key space.

    Example:
        >>> k = record_key("idem:http", "user-1", "POST", "/orders", "abc")
        >>> k.startswith("idem:http:"), len(k) - len("idem:http:")
        (True, 32)
        >>> k == record_key("idem:http", "user-1", "POST", "/orders", "abd")
        False
    """
    h = hashlib.sha256()
    for part in parts:
        raw = part.encode("utf-8", "surrogatepass")
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    return f"{namespace}:{h.hexdigest()[:32]}"


_OWNER_PREFIX = os.urandom(6).hex()
_owner_seq = itertools.count(1)


def _new_owner() -> str:
    # unique per process (random prefix) and per claim (counter); next() on count is atomic
    return f"{_OWNER_PREFIX}-{next(_owner_seq)}"


class Codec(Protocol):
    """How outcomes are turned into stored text and back (``codec=``)."""

    def encode(self, value: Any, /) -> str | bytes:
        """Serialize a result (raise ``TypeError`` / ``ValueError`` when it cannot)."""
        ...

    def decode(self, data: str | bytes, /) -> Any:
        """Deserialize what :meth:`encode` produced."""
        ...


class JSONCodec:
    """The default codec: compact JSON (safe to decode; never pickle).

    JSON round-trips ``dict`` (with ``str`` keys), ``list``, ``str``, ``int``, ``float``,
    ``bool`` and ``None``; a tuple is replayed as a list.

    Example:
        >>> codec = JSONCodec()
        >>> codec.decode(codec.encode({"id": 7, "tags": ["a"]}))
        {'id': 7, 'tags': ['a']}
    """

    def encode(self, value: Any, /) -> str:
        """``json.dumps`` without spaces; refuses NaN and infinities."""
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def decode(self, data: str | bytes, /) -> Any:
        """``json.loads``."""
        return json.loads(data)


_JSON = JSONCodec()


def _pack(data: str | bytes) -> str:
    if isinstance(data, bytes):
        return "b" + base64.b64encode(data).decode("ascii")
    return "s" + data


def _unpack(packed: str) -> str | bytes:
    if packed[:1] == "b":
        return base64.b64decode(packed[1:], validate=True)
    return packed[1:]


def _outcome_size(payload: str) -> int:
    """The size of a stored outcome as its codec produced it (bytes packed as base64: decoded)."""
    if payload[1:2] == "b":  # "r" + _pack(bytes): base64 of the codec's bytes
        return (len(payload) - 2) * 3 // 4
    return len(payload)


def args_fingerprint(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The default fingerprint: SHA-256 of the canonical JSON of ``[args, kwargs]``.

    Raises:
        ConfigurationError: an argument is not JSON-serializable (pass ``fingerprint=``).

    Example:
        >>> args_fingerprint((1, "a"), {"b": 2}) == args_fingerprint((1, "a"), {"b": 2})
        True
        >>> args_fingerprint((1,), {}) == args_fingerprint((2,), {})
        False
    """
    try:
        text = json.dumps([args, kwargs], sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            "the default idempotency fingerprint needs JSON-serializable arguments "
            f"({exc}); pass fingerprint=callable(*args, **kwargs) -> str | bytes, "
            "or fingerprint=None to not compare arguments"
        ) from None
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


# -- claims and the record client ------------------------------------------------------------
@dataclass(slots=True)
class Claim:
    """The outcome of a claim attempt.

    Attributes:
        status: ``"claimed"`` (run the operation, then :meth:`IdempotencyRecords.complete` or
            ``release``), ``"replay"`` (``payload`` holds the stored outcome, ``None`` if it was
            not retained), ``"in_progress"``, ``"reused"``, or ``"unprotected"`` (the store
            failed and ``on_store_error="open"``: run without protection).
        key: the store key.
        owner: this claim's owner token.
        fence: the fencing token (increases with every takeover).
        payload: the stored outcome for ``"replay"``.
        retry_after: seconds left on the current owner's lease for ``"in_progress"``.
        takeover: the claim took over an expired one (its owner crashed or hung).
        lease_until: for ``"claimed"``, until when (on the records' clock) the lease is surely
            held: the start of the last successful claim or renewal plus ``lease`` (``-inf``
            once a renewal found the claim lost).
    """

    status: ClaimStatus
    key: str
    owner: str = ""
    fence: int = 0
    payload: str | None = None
    retry_after: float | None = None
    takeover: bool = False
    store: Any = None
    lease_until: float = float("-inf")


class _Beat:
    """One running claim's lease renewal; :meth:`stop` is idempotent and cheap."""

    __slots__ = ("cancel", "claim", "due", "ident", "interval", "records", "stopped")

    def __init__(self, records: IdempotencyRecords, claim: Claim, interval: float) -> None:
        self.records = records
        self.claim = claim
        self.interval = interval
        self.stopped = False
        self.due = 0.0
        self.ident = 0
        self.cancel: Callable[[], object] | None = None

    def stop(self) -> None:
        self.stopped = True
        cancel = self.cancel
        if cancel is not None:
            self.cancel = None
            cancel()


class _NoBeat:
    __slots__ = ()

    def stop(self) -> None:
        return None


_NO_BEAT = _NoBeat()


#: the renewer thread wakes at least this often, so a far (or unrepresentable) due time never
#: blocks it nor overflows the wait
_RENEWER_MAX_WAIT = 60.0


class _Renewer:
    """One daemon thread renewing every running sync claim on a real-time clock.

    Registration and removal are O(1) dict operations (no thread or timer per call); the thread
    sleeps until the earliest due renewal (at most :data:`_RENEWER_MAX_WAIT`).

    The thread is shared by every policy of the process, so no single entry can stop it: an
    entry whose interval cannot be scheduled is refused at registration (logged), an entry
    whose renewal raises is logged and dropped, and the loop itself survives any error (a dead
    thread would also be restarted by the next registration).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._beats: dict[int, _Beat] = {}
        self._thread: threading.Thread | None = None
        self._alive = False
        self._wake_at = float("inf")
        self._seq = itertools.count(1)

    def add(self, beat: _Beat) -> None:
        now = SYSTEM_CLOCK.monotonic()
        interval = beat.interval
        due = now + interval
        if not (interval > 0 and math.isfinite(due)):
            _log.warning(
                "resilience: an idempotency lease renewal every %r s cannot be scheduled; "
                "this claim's lease is not renewed",
                interval,
            )
            return
        beat.due = due
        ident = beat.ident = next(self._seq)
        with self._cond:
            self._beats[ident] = beat
            beat.cancel = lambda: self._remove(ident)
            if not self._alive:
                self._alive = True
                self._thread = threading.Thread(
                    target=self._run, name="resilience-idempotency-renewer", daemon=True
                )
                self._thread.start()
            if due < self._wake_at:
                self._cond.notify()

    def _remove(self, ident: int) -> None:
        with self._cond:
            self._beats.pop(ident, None)

    def _run(self) -> None:  # pragma: no cover - timing dependent; exercised by real-time tests
        try:
            while True:
                try:
                    self._step()
                except Exception:  # never let the thread die: every other lease depends on it
                    _log.exception("resilience: the idempotency lease renewer failed; continuing")
                    with self._cond:
                        self._cond.wait(0.1)
        finally:  # only a BaseException gets here: the next registration starts a new thread
            with self._cond:
                self._alive = False

    def _step(self) -> None:  # pragma: no cover - timing dependent
        with self._cond:
            now = SYSTEM_CLOCK.monotonic()
            due = [b for b in self._beats.values() if b.due <= now]
            if not due:
                self._wake_at = min((b.due for b in self._beats.values()), default=now + 60)
                delay = self._wake_at - now
                if not delay < _RENEWER_MAX_WAIT:  # also catches inf and nan
                    delay = _RENEWER_MAX_WAIT
                self._cond.wait(max(delay, 0.0))
                self._wake_at = float("inf")
                return
            for b in due:
                b.due = now + b.interval
        for b in due:
            if b.stopped:
                continue
            try:
                b.records._renew_quietly(b.claim)
            except Exception:  # one entry's failure is that entry's: drop it, keep the others
                _log.exception(
                    "resilience: renewing an idempotency lease raised; that claim's lease is "
                    "no longer renewed"
                )
                self._remove(b.ident)


_RENEWER = _Renewer()


# -- what adapters share: the caller's scope and the memory bounds ---------------------------
#: Largest outcome (serialized response, encoded result) an idempotency record retains, in
#: bytes; a larger one is recorded as *not retained* (duplicates are refused, not replayed).
MAX_RESPONSE_BYTES = 1 << 20
#: Default bound on request bytes buffered for fingerprinting, summed over in-flight requests.
MAX_BUFFERED_BYTES = 64 << 20


@dataclass(slots=True)
class CallerScope:
    """The caller an adapter is serving: idempotency records claimed meanwhile are its own.

    Attributes:
        principal: who is calling (a hash of a credential, a tenant id; never a constant).
        replayed: set when a record claimed in this scope was replayed (adapters turn it into
            their replay marker, e.g. ``idempotent-replayed: true`` gRPC trailing metadata).
    """

    principal: str
    replayed: bool = False


_CALLER: ContextVar[CallerScope | None] = ContextVar("resilience_idempotency_caller", default=None)


@contextmanager
def caller_scope(principal: str) -> Iterator[CallerScope]:
    """Scope the idempotency records claimed inside the block to ``principal``.

    While it is active, :meth:`IdempotencyRecords.key` (and so every :class:`Idempotent`
    policy) includes ``principal`` in the store key: the same idempotency key sent by two
    callers names two records, and one caller's stored outcome is never replayed to another.
    The gRPC server interceptor enters it around its ``idempotency=`` policy; use it in your
    own adapters (a queue consumer serving several tenants, an RPC framework).

    Example:
        >>> import resilience as rs
        >>> runs = []
        >>> pay = rs.Idempotent(key=lambda k: k, clock=rs.testing.FakeClock())(
        ...     lambda k: runs.append(k) or len(runs))
        >>> with caller_scope("alice"):
        ...     first = pay("order-1")
        >>> with caller_scope("alice") as alice:
        ...     again = pay("order-1")
        >>> with caller_scope("bob"):
        ...     other = pay("order-1")
        >>> first, again, alice.replayed, other
        (1, 1, True, 2)
    """
    value: object = principal
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"principal must be a non-empty str, got {principal!r}")
    scope = CallerScope(value)
    token = _CALLER.set(scope)
    try:
        yield scope
    finally:
        _CALLER.reset(token)


class BufferBudget:
    """A bound on bytes held in memory at once, shared by every request of an adapter.

    Adapters that must read a whole request before deciding (fingerprinting) :meth:`reserve`
    its bytes as they arrive and :meth:`release` them when the request is done; a reservation
    that would exceed ``limit`` is refused (answer "busy, retry later" instead of growing).
    Thread-safe; cheap (one lock, no I/O).

    Example:
        >>> budget = BufferBudget(100)
        >>> budget.reserve(60), budget.reserve(60), budget.in_use
        (True, False, 60)
        >>> budget.release(60)
        >>> budget.in_use
        0
    """

    __slots__ = ("_lock", "in_use", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = positive_int(limit, "max_buffered_bytes")
        self.in_use = 0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> bool:
        """Take ``n`` more bytes; ``False`` (nothing taken) when that would exceed ``limit``."""
        with self._lock:
            if self.in_use + n > self.limit:
                return False
            self.in_use += n
            return True

    def release(self, n: int) -> None:
        """Give back ``n`` bytes taken by :meth:`reserve`."""
        with self._lock:
            self.in_use = max(0, self.in_use - n)


#: the back-off of a completion retried after a store failure (seconds)
_COMPLETE_FIRST_DELAY = 0.02
_COMPLETE_MAX_DELAY = 1.0


class IdempotencyRecords:
    """The claim / renew / complete / release client shared by every idempotency adapter.

    :class:`Idempotent` (functions and message consumers), the ASGI ``IdempotencyMiddleware``
    and the gRPC server interceptor all drive records through this class, so they share the
    state machine, the fencing, the lease heartbeat and the store-failure policy.

    Args:
        store: a :class:`~resilience.stores.Store` (default: a private
            ``MemoryStore(max_entries=max_entries)``).
        ttl: seconds a completed record is kept (from completion).
        lease: seconds a claim stays valid without renewal; renewed every ``lease / 3``.
        namespace: prefix of the store keys.
        on_store_error: ``"closed"`` (default: raise :class:`~resilience.StoreError`, the
            operation does not run), ``"open"`` (run unprotected) or ``"local"`` (fall back to
            an in-process store: duplicates are caught within this process only).
        heartbeat: renew leases while operations run (disable only for operations that always
            finish well within ``lease``: past it, a duplicate may run concurrently).
        max_entries: the cap of the default and ``"local"`` memory stores.
        max_response_bytes: the largest outcome retained (default :data:`MAX_RESPONSE_BYTES`,
            1 MiB, for every adapter): a larger one completes the record as *not retained*,
            and duplicates are refused (``IdempotencyConflictError``; HTTP 409, gRPC
            ``ABORTED``) instead of replayed. Bounds the memory and Redis bytes per record.
        max_buffered_bytes: the bound on request bytes adapters buffer for fingerprinting,
            summed over every in-flight request using these records (:attr:`buffers`, a
            :class:`BufferBudget`; default :data:`MAX_BUFFERED_BYTES`, 64 MiB).
        on_full: what the default and ``"local"`` memory stores do with ``max_entries`` records
            and a new key: ``"evict_oldest"`` (default: evict the oldest *completed* record,
            never an in-progress claim; a late duplicate of an evicted key runs again, and a
            :class:`~resilience.events.RecordsEvicted` event is emitted) or ``"deny_new"``
            (refuse the new key with :class:`~resilience.stores.StoreFullError`, handled by
            ``on_store_error``). Either way a store whose every record is an in-progress claim
            refuses new keys. Ignored for a store you pass.
        clock: time source of the default store, of waits and of the heartbeat.

    Scope: records claimed inside :func:`caller_scope` (the gRPC interceptor enters it for its
    ``idempotency=`` policy) belong to that caller (:meth:`key`).

    gRPC servers use :meth:`run` / :meth:`arun`: the interceptor reads the ``idempotency-key``
    metadata entry, takes the principal from its authentication context (never a constant), the
    full method name, and the serialized request as the fingerprint; the handler returns the
    bytes to replay (the serialized response). Map :class:`~resilience.IdempotencyInProgressError`
    to ``ABORTED`` (with ``grpc-retry-pushback-ms`` from ``retry_after``),
    :class:`~resilience.IdempotencyKeyReusedError` to ``FAILED_PRECONDITION``,
    :class:`~resilience.StoreError` to ``UNAVAILABLE`` and a not-retained replay
    (:class:`~resilience.IdempotencyConflictError`) to ``ABORTED``.

    Example:
        >>> import resilience as rs
        >>> records = IdempotencyRecords(clock=rs.testing.FakeClock())
        >>> calls = []
        >>> def handler() -> bytes:
        ...     calls.append(1)
        ...     return b"response"
        >>> args = dict(principal="user-1", method="/shop.Orders/Create", key="k1",
        ...             fingerprint=b"request-bytes")
        >>> records.run(**args, handler=handler), records.run(**args, handler=handler)
        ((b'response', False), (b'response', True))
        >>> len(calls)
        1
    """

    def __init__(
        self,
        *,
        store: Any = None,
        ttl: Duration = 86400,
        lease: Duration = 60,
        namespace: str = "idem",
        on_store_error: Literal["closed", "open", "local"] = "closed",
        heartbeat: bool = True,
        max_entries: int = 10_000,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
        on_full: Literal["evict_oldest", "deny_new"] = "evict_oldest",
        clock: Clock | None = None,
    ) -> None:
        self.clock = resolve_clock(clock)
        self.ttl = seconds(ttl, "ttl", allow_zero=False)
        self.lease = seconds(lease, "lease", allow_zero=False)
        self.max_entries = positive_int(max_entries, "max_entries")
        self.max_response_bytes = positive_int(max_response_bytes, "max_response_bytes", minimum=0)
        self.buffers = BufferBudget(max_buffered_bytes)
        self._warned_size = False
        if on_full not in ("evict_oldest", "deny_new"):
            raise ConfigurationError(
                f"on_full must be 'evict_oldest' or 'deny_new', got {on_full!r}"
            )
        self.on_full: Literal["evict_oldest", "deny_new"] = on_full
        if store is None:
            store = self._memory_store()
        elif not (
            callable(getattr(store, "apply", None)) or callable(getattr(store, "aapply", None))
        ):
            raise ConfigurationError(
                f"store must be a resilience store (with apply() or aapply()), got {store!r}"
            )
        self.store = store
        if on_store_error not in ("closed", "open", "local"):
            raise ConfigurationError(
                f"on_store_error must be 'closed', 'open' or 'local', got {on_store_error!r}"
            )
        self.on_store_error = on_store_error
        self._local: MemoryStore | None = None
        self._warned_evict = False
        self.namespace = check_name(namespace)
        self.heartbeat = bool(heartbeat)
        self._fake_timers = callable(getattr(self.clock, "call_at", None))
        self._pending: set[asyncio.Task[Any]] = set()

    def key(self, *parts: str) -> str:
        """The store key of a composite key (see :func:`record_key`).

        Inside :func:`caller_scope` the caller's principal is part of the key.
        """
        caller = _CALLER.get()
        if caller is None:
            return record_key(self.namespace, *parts)
        return record_key(self.namespace, "\x00caller", caller.principal, *parts)

    # -- store access with the failure policy ------------------------------------------------
    def _memory_store(self) -> MemoryStore:
        return MemoryStore(max_entries=self.max_entries, on_full=self.on_full, clock=self.clock)

    def _local_store(self) -> MemoryStore:
        if self._local is None:
            self._local = self._memory_store()
        return self._local

    def _evicted(self, op: ClaimOp, em: Emitter | None, policy: str) -> None:
        """Report the completed records a full memory store evicted for ``op``."""
        if not self._warned_evict:
            self._warned_evict = True
            _log.warning(
                "resilience: %s: the memory store is full (%d records); evicting the oldest "
                "completed records before their ttl: a late duplicate of an evicted key runs "
                "again (raise max_entries, shorten ttl or share a RedisStore)",
                policy or self.namespace,
                self.max_entries,
            )
        if em:
            em.emit(
                RecordsEvicted(
                    policy=policy, pipeline=em.pipeline, operation=em.operation, count=op.evicted
                )
            )

    @staticmethod
    def _apply(store: Any, op: StoreOp[Any]) -> Any:
        try:
            return store.apply(op)
        except StoreError:
            raise
        except Exception as exc:  # a foreign store's own error type
            raise StoreError(f"idempotency store failed: {exc!r}") from exc

    @staticmethod
    async def _aapply(store: Any, op: StoreOp[Any]) -> Any:
        try:
            if callable(getattr(store, "aapply", None)):
                return await store.aapply(op)
            return store.apply(op)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"idempotency store failed: {exc!r}") from exc

    def _claim_result(self, key: str, owner: str, result: Any, store: Any) -> Claim:
        status, fence, extra = result
        if status == "corrupt":
            raise StoreError(f"idempotency record {key!r} is malformed or of an unknown version")
        if status == "replay":
            caller = _CALLER.get()
            if caller is not None:
                caller.replayed = True
            return Claim("replay", key, owner, fence, payload=extra, store=store)
        if status == "in_progress":
            return Claim("in_progress", key, owner, fence, retry_after=float(extra), store=store)
        return Claim(status, key, owner, fence, takeover=bool(extra), store=store)

    def _on_claim_error(self, exc: StoreError, em: Emitter | None, policy: str) -> bool:
        """Emit the decision; return True to fall back to the local store."""
        mode = self.on_store_error
        if em:
            em.emit(
                StoreFailed(
                    policy=policy,
                    pipeline=em.pipeline,
                    operation=em.operation,
                    decision=mode,
                    error_type=error_type(exc.__cause__ or exc) or "StoreError",
                )
            )
        STORE_LOG.record(policy or self.namespace, mode, f"{exc}")
        if mode == "closed":
            raise exc
        return mode == "local"

    def try_claim(
        self, key: str, fingerprint: str, *, em: Emitter | None = None, policy: str = ""
    ) -> Claim:
        """One claim attempt (sync); store failures follow ``on_store_error``."""
        owner = _new_owner()
        op = ClaimOp(key, fingerprint, owner, self.lease, self.ttl)
        store = self.store
        started = self.clock.monotonic()
        try:
            claim = self._claim_result(key, owner, self._apply(store, op), store)
        except StoreError as exc:
            if not self._on_claim_error(exc, em, policy):
                return Claim("unprotected", key)
            store = self._local_store()
            claim = self._claim_result(key, owner, self._apply(store, op), store)
        if op.evicted:
            self._evicted(op, em, policy)
        if claim.status == "claimed":
            claim.lease_until = started + self.lease
        return claim

    async def atry_claim(
        self, key: str, fingerprint: str, *, em: Emitter | None = None, policy: str = ""
    ) -> Claim:
        """One claim attempt (async)."""
        owner = _new_owner()
        op = ClaimOp(key, fingerprint, owner, self.lease, self.ttl)
        store = self.store
        started = self.clock.monotonic()
        try:
            claim = self._claim_result(key, owner, await self._aapply(store, op), store)
        except StoreError as exc:
            if not self._on_claim_error(exc, em, policy):
                return Claim("unprotected", key)
            store = self._local_store()
            claim = self._claim_result(key, owner, self._apply(store, op), store)
        if op.evicted:
            self._evicted(op, em, policy)
        if claim.status == "claimed":
            claim.lease_until = started + self.lease
        return claim

    def claim(
        self,
        key: str,
        fingerprint: str,
        *,
        wait: float = 0.0,
        em: Emitter | None = None,
        policy: str = "",
    ) -> Claim:
        """Claim ``key``; while another owner runs, poll up to ``wait`` seconds for its outcome."""
        claim = self.try_claim(key, fingerprint, em=em, policy=policy)
        if claim.status != "in_progress" or wait <= 0:
            return claim
        clock = self.clock
        deadline = clock.monotonic() + wait
        step = 0.005
        while True:
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                return claim
            clock.sleep(min(step, remaining))
            step = min(step * 2, 0.1)
            claim = self.try_claim(key, fingerprint, em=em, policy=policy)
            if claim.status != "in_progress":
                return claim

    async def aclaim(
        self,
        key: str,
        fingerprint: str,
        *,
        wait: float = 0.0,
        em: Emitter | None = None,
        policy: str = "",
    ) -> Claim:
        """Async :meth:`claim`."""
        claim = await self.atry_claim(key, fingerprint, em=em, policy=policy)
        if claim.status != "in_progress" or wait <= 0:
            return claim
        clock = self.clock
        deadline = clock.monotonic() + wait
        step = 0.005
        while True:
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                return claim
            await clock.asleep(min(step, remaining))
            step = min(step * 2, 0.1)
            claim = await self.atry_claim(key, fingerprint, em=em, policy=policy)
            if claim.status != "in_progress":
                return claim

    # -- finishing a claim --------------------------------------------------------------------
    def _retained(self, claim: Claim, payload: str | None, size: int | None) -> str | None:
        """``payload``, or ``None`` (not retained) when it is over ``max_response_bytes``."""
        if size is None:
            if payload is None:
                return None
            size = _outcome_size(payload)
        if size <= self.max_response_bytes:
            return payload
        log = _log.debug if self._warned_size else _log.warning
        self._warned_size = True  # once per records object at warning level, then debug
        log(
            "resilience: an idempotent outcome of %d bytes is over max_response_bytes=%d and "
            "was not retained; duplicates of %s will be refused, not replayed",
            size,
            self.max_response_bytes,
            claim.key,
        )
        return None

    def complete(self, claim: Claim, payload: str | None, *, size: int | None = None) -> bool:
        """Store the outcome (fenced); False when the claim was lost or it could not be stored.

        A store failure is retried (backing off from 20 ms to 1 s) for as long as the claim's
        lease is surely held (:attr:`Claim.lease_until`, extended by a running heartbeat) and
        at most one ``lease``: a transient blip never leaves a finished call *in progress*, to
        be run again by a retry after the lease. Completing twice is harmless (a completion is
        idempotent for its owner), and a completion after a takeover is refused (fencing).
        ``size`` is the outcome's size in bytes as the adapter measures it (default
        ``len(payload)``); over ``max_response_bytes`` the record is completed as not retained.
        """
        return self._complete(claim, payload, size) is True

    async def acomplete(
        self, claim: Claim, payload: str | None, *, size: int | None = None
    ) -> bool:
        """Async :meth:`complete` (the back-off sleeps on the event loop, never blocking it)."""
        return await self._acomplete(claim, payload, size) is True

    def _complete(
        self, claim: Claim, payload: str | None, size: int | None = None
    ) -> bool | StoreError:
        """True: stored; False: the claim was lost; a StoreError: the store kept failing."""
        if claim.status != "claimed":
            return False
        payload = self._retained(claim, payload, size)
        op = CompleteOp(claim.key, claim.owner, claim.fence, payload, self.ttl)
        clock = self.clock
        started = 0.0
        delay, attempts = _COMPLETE_FIRST_DELAY, 0
        while True:
            attempts += 1
            try:
                stored: bool = self._apply(claim.store, op)
            except StoreError as exc:
                if attempts == 1:
                    started = clock.monotonic()
                pause = self._complete_pause(claim, started, delay)
                if pause is None:
                    return self._unrecorded(exc, attempts, started)
                clock.sleep(pause)
                delay = min(delay * 2, _COMPLETE_MAX_DELAY)
                continue
            if not stored:
                self._lost(claim)
            return stored

    async def _acomplete(
        self, claim: Claim, payload: str | None, size: int | None = None
    ) -> bool | StoreError:
        if claim.status != "claimed":
            return False
        payload = self._retained(claim, payload, size)
        op = CompleteOp(claim.key, claim.owner, claim.fence, payload, self.ttl)
        clock = self.clock
        started = 0.0
        delay, attempts = _COMPLETE_FIRST_DELAY, 0
        while True:
            attempts += 1
            try:
                stored: bool = await self._aapply(claim.store, op)
            except StoreError as exc:
                if attempts == 1:
                    started = clock.monotonic()
                pause = self._complete_pause(claim, started, delay)
                if pause is None:
                    return self._unrecorded(exc, attempts, started)
                await clock.asleep(pause)
                delay = min(delay * 2, _COMPLETE_MAX_DELAY)
                continue
            if not stored:
                self._lost(claim)
            return stored

    def _complete_pause(self, claim: Claim, started: float, delay: float) -> float | None:
        """How long to wait before the next completion attempt; None: the lease may be gone."""
        remaining = min(claim.lease_until, started + self.lease) - self.clock.monotonic()
        if remaining <= 0:
            return None
        return min(delay, remaining)

    def _unrecorded(self, exc: StoreError, attempts: int, started: float) -> StoreError:
        _log.warning(
            "resilience: could not store an idempotent outcome (%d attempts in %.3g s, while "
            "the lease was held): %s; the record stays in progress until its lease expires, "
            "then a duplicate runs again",
            attempts,
            self.clock.monotonic() - started,
            exc,
        )
        return exc

    def _lost(self, claim: Claim) -> None:
        _log.warning(
            "resilience: idempotency claim %s was taken over before its outcome was "
            "stored (lease %.3g s expired); the late outcome was discarded",
            claim.key,
            self.lease,
        )

    def release(self, claim: Claim) -> None:
        """Delete the claim so that a retry runs again (fenced; store errors are logged)."""
        if claim.status != "claimed":
            return
        try:
            self._apply(claim.store, ReleaseOp(claim.key, claim.owner, claim.fence))
        except StoreError as exc:  # the claim expires after its lease
            _log.warning("resilience: could not release an idempotency claim: %s", exc)

    async def arelease(self, claim: Claim) -> None:
        """Async :meth:`release`."""
        if claim.status != "claimed":
            return
        try:
            await self._aapply(claim.store, ReleaseOp(claim.key, claim.owner, claim.fence))
        except StoreError as exc:
            _log.warning("resilience: could not release an idempotency claim: %s", exc)

    def renew(self, claim: Claim) -> bool:
        """Extend the claim's lease now; False when it is no longer held."""
        started = self.clock.monotonic()
        op = RenewOp(claim.key, claim.owner, claim.fence, self.lease, self.ttl)
        held: bool = self._apply(claim.store, op)
        self._renewed(claim, held, started)
        return held

    async def arenew(self, claim: Claim) -> bool:
        """Async :meth:`renew`."""
        started = self.clock.monotonic()
        op = RenewOp(claim.key, claim.owner, claim.fence, self.lease, self.ttl)
        held: bool = await self._aapply(claim.store, op)
        self._renewed(claim, held, started)
        return held

    def _renewed(self, claim: Claim, held: bool, started: float) -> None:
        if not held:
            claim.lease_until = float("-inf")
        elif started + self.lease > claim.lease_until:
            claim.lease_until = started + self.lease

    def _renew_quietly(self, claim: Claim) -> bool:
        try:
            return self.renew(claim)
        except StoreError as exc:
            _log.warning("resilience: could not renew an idempotency lease: %s", exc)
            return False

    async def _arenew_quietly(self, claim: Claim) -> bool:
        try:
            return await self.arenew(claim)
        except StoreError as exc:
            _log.warning("resilience: could not renew an idempotency lease: %s", exc)
            return False

    # -- heartbeats ---------------------------------------------------------------------------
    def start_heartbeat(self, claim: Claim) -> _Beat | _NoBeat:
        """Renew the claim every ``lease / 3`` from a background thread until ``.stop()``."""
        if not self.heartbeat or claim.status != "claimed":
            return _NO_BEAT
        beat = _Beat(self, claim, self.lease / 3)
        if self._fake_timers:
            self._fake_tick(beat, sync=True)
        else:
            _RENEWER.add(beat)
        return beat

    def _fake_tick(self, beat: _Beat, *, sync: bool, loop: Any = None) -> None:
        """Schedule the next renewal on a clock with ``call_at`` (a FakeClock)."""
        clock: Any = self.clock
        if sync:

            def fire() -> None:
                if not beat.stopped:
                    self._renew_quietly(beat.claim)
                    self._fake_tick(beat, sync=True)

        else:

            def fire() -> None:
                if not beat.stopped and not loop.is_closed():
                    loop.call_soon_threadsafe(self._spawn_renewal, beat, loop)

        beat.cancel = clock.call_at(clock.monotonic() + beat.interval, fire)

    def astart_heartbeat(self, claim: Claim) -> _Beat | _NoBeat:
        """Renew the claim every ``lease / 3`` on the running event loop until ``.stop()``."""
        if not self.heartbeat or claim.status != "claimed":
            return _NO_BEAT
        import asyncio

        loop = asyncio.get_running_loop()
        beat = _Beat(self, claim, self.lease / 3)
        self._schedule_async(beat, loop)
        return beat

    def _schedule_async(self, beat: _Beat, loop: asyncio.AbstractEventLoop) -> None:
        if beat.stopped:
            return
        if self._fake_timers:
            self._fake_tick(beat, sync=False, loop=loop)
        else:
            beat.cancel = loop.call_later(beat.interval, self._spawn_renewal, beat, loop).cancel

    def _spawn_renewal(self, beat: _Beat, loop: asyncio.AbstractEventLoop) -> None:
        if beat.stopped:
            return
        task = loop.create_task(self._arenew_and_reschedule(beat, loop))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _arenew_and_reschedule(self, beat: _Beat, loop: asyncio.AbstractEventLoop) -> None:
        await self._arenew_quietly(beat.claim)
        self._schedule_async(beat, loop)

    # -- a whole request, for RPC adapters -----------------------------------------------------
    def _request_key(
        self, principal: str, method: str, key: str, fingerprint: bytes
    ) -> tuple[str, str]:
        if not principal:
            raise ConfigurationError("principal must be a non-empty string")
        return self.key(principal, method, key), hashlib.sha256(fingerprint).hexdigest()[:32]

    def _packed(self, out: bytes) -> str | None:
        # a response over the cap is never base64-encoded (the copy would be ~1.33x its size)
        return _pack(bytes(out)) if len(out) <= self.max_response_bytes else None

    @staticmethod
    def _replayed(claim: Claim, key: str) -> bytes:
        if claim.payload is None:
            raise IdempotencyConflictError(
                "the first request with this idempotency key completed but its response was "
                "not retained; it cannot be replayed"
            )
        data = _unpack(claim.payload)
        return data if isinstance(data, bytes) else data.encode("utf-8")

    @staticmethod
    def _refuse(claim: Claim) -> IdempotencyConflictError:
        if claim.status == "reused":
            return IdempotencyKeyReusedError(
                "the idempotency key was already used for a different request"
            )
        return IdempotencyInProgressError(
            "a request with this idempotency key is still in progress",
            retry_after=claim.retry_after,
        )

    def run(
        self,
        *,
        principal: str,
        method: str,
        key: str,
        fingerprint: bytes,
        handler: Callable[[], bytes],
        wait: float = 0.0,
    ) -> tuple[bytes, bool]:
        """Run ``handler`` at most once per ``(principal, method, key)``.

        Returns ``(response_bytes, replayed)``. A handler exception releases the claim and
        propagates (a retry runs again); to store an error outcome, return bytes that encode
        it. Raises :class:`~resilience.IdempotencyInProgressError`,
        :class:`~resilience.IdempotencyKeyReusedError`, :class:`~resilience.StoreError`.
        """
        rkey, fp = self._request_key(principal, method, key, fingerprint)
        claim = self.claim(rkey, fp, wait=wait)
        if claim.status == "replay":
            return self._replayed(claim, rkey), True
        if claim.status in ("in_progress", "reused"):
            raise self._refuse(claim)
        if claim.status == "unprotected":
            return handler(), False
        beat = self.start_heartbeat(claim)
        try:
            out = handler()
        except BaseException:
            beat.stop()
            self.release(claim)
            raise
        beat.stop()
        self.complete(claim, self._packed(out), size=len(out))
        return out, False

    async def arun(
        self,
        *,
        principal: str,
        method: str,
        key: str,
        fingerprint: bytes,
        handler: Callable[[], Awaitable[bytes]],
        wait: float = 0.0,
    ) -> tuple[bytes, bool]:
        """Async :meth:`run` (``handler`` is an async callable)."""
        rkey, fp = self._request_key(principal, method, key, fingerprint)
        claim = await self.aclaim(rkey, fp, wait=wait)
        if claim.status == "replay":
            return self._replayed(claim, rkey), True
        if claim.status in ("in_progress", "reused"):
            raise self._refuse(claim)
        if claim.status == "unprotected":
            return await handler(), False
        beat = self.astart_heartbeat(claim)
        try:
            out = await handler()
        except BaseException:
            beat.stop()
            await self.arelease(claim)
            raise
        beat.stop()
        await self.acomplete(claim, self._packed(out), size=len(out))
        return out, False


# -- the policy --------------------------------------------------------------------------------
def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class Idempotent(Policy):
    """Run a function once per idempotency key; duplicates get the stored outcome.

    ``key(*args, **kwargs)`` returns the call's idempotency key (a non-empty ``str``; ``None``
    runs the call without protection). The first call with a key claims it, runs, and stores its
    result (encoded by ``codec``); a later call with the same key returns the stored result
    without running. While the first call runs, a duplicate raises
    :class:`~resilience.IdempotencyInProgressError` (with ``retry_after``), or with ``wait > 0``
    waits up to that long for the stored result (and runs itself if the first call released
    its claim meanwhile). The same key with different arguments (a different ``fingerprint``)
    raises :class:`~resilience.IdempotencyKeyReusedError`; the original record is untouched.

    A claim is a lease of ``lease`` seconds, renewed every ``lease / 3`` while the function
    runs; when its owner crashes or hangs, the claim expires and the next call takes over (runs
    again: at-least-once after a crash). A late result from the expired owner is discarded
    (fencing). Completed records are kept for ``ttl`` seconds after completion.

    Storing the outcome is retried after a store failure while the lease is held (at most one
    ``lease``), so a store blip never leaves a finished call to be run again. If it still
    cannot be recorded, the call raises :class:`~resilience.IdempotencyOutcomeUnrecordedError`
    with the function's result in ``.result`` (a duplicate after the lease would run again).

    Which outcomes are stored (``store_errors``):

    * results are always stored;
    * ``store_errors="never"`` (the default): an exception releases the claim and propagates,
      so a retry runs the function again (at-least-once for failures, like AWS Powertools).
      This is the safe default for functions whose failures leave no effect (transactions).
    * ``store_errors=(SomeError, ...)``: exceptions of these types are *outcomes*: stored and
      re-raised on replay (as the matching listed type, built from the same ``args``, with a
      note), at-most-once. List the errors that may follow a side effect (an ambiguous timeout
      after a payment was sent). Other exceptions, and ``BaseException`` such as cancellation,
      always release the claim.

    Records belong to the function that made them: they are namespaced by the policy ``name``
    and the function's module and qualified name (``"billing:create"``, the same in every
    process running the same code), so ``billing.create`` and ``refunds.create`` sharing a store
    never replay each other's results. Functions that must share records name the namespace
    explicitly (``namespace="orders.create"``). Message consumers use the message id as the key
    (see the module documentation of :mod:`resilience.idempotency`).

    Args:
        key: ``callable(*args, **kwargs) -> str | None`` giving the idempotency key.
        store: a :class:`~resilience.stores.Store` (default: a private
            ``MemoryStore(max_entries=10_000, on_full="evict_oldest")``); share a Redis store
            across processes.
        ttl: seconds a completed record is kept (default 24 h).
        lease: seconds a claim stays valid without renewal (default 60).
        wait: seconds a duplicate waits for the first call's outcome (default 0: raise).
        fingerprint: ``"args"`` (default: SHA-256 of the JSON of the arguments; a
            :class:`~resilience.ConfigurationError` at call time if they are not JSON), a
            ``callable(*args, **kwargs) -> str | bytes``, or ``None`` (do not compare).
        codec: encodes results for the store (default :class:`JSONCodec`; never pickle). A
            result the codec refuses is returned to the first caller and recorded as "not
            retained": duplicates raise :class:`~resilience.IdempotencyConflictError`.
        store_errors: ``"never"`` or a tuple of exception types (see above).
        on_store_error: ``"closed"`` (default: raise :class:`~resilience.StoreError`, the
            function does not run), ``"open"`` (run unprotected) or ``"local"`` (deduplicate
            within this process only).
        heartbeat: renew the lease while the function runs (default True).
        max_entries: the cap on records of the default memory store (default 10,000).
        on_full: when the default memory store holds ``max_entries`` records:
            ``"evict_oldest"`` (default: evict the oldest completed record, never an
            in-progress claim, emitting :class:`~resilience.events.RecordsEvicted`; a late
            duplicate of an evicted key runs again) or ``"deny_new"`` (refuse new keys with a
            :class:`~resilience.StoreError`, handled by ``on_store_error``).
        namespace: the records' namespace within this policy ``name`` (default ``None``: the
            decorated function's ``"module:qualname"``). Give the same namespace to functions
            that must share records; ``namespace=fn.__qualname__`` reads the records written
            before namespaces included the module.
        name: policy name (events, record namespace).
        clock: time source (waits, leases, TTLs of the default store).
        listeners: event listeners (:class:`~resilience.events.IdempotentReplay`,
            :class:`~resilience.events.CallRejected`, :class:`~resilience.events.StoreFailed`,
            :class:`~resilience.events.RecordsEvicted`).

    The first call returns the function's own result; replays return ``codec.decode`` of the
    stored one (with JSON, a tuple comes back as a list): return JSON-native values or pass a
    codec.

    Example:
        >>> import resilience as rs
        >>> charges = []
        >>> @rs.Idempotent(key=lambda order_id, amount: order_id, clock=rs.testing.FakeClock())
        ... def charge(order_id: str, amount: int) -> dict:
        ...     charges.append(amount)
        ...     return {"charge": len(charges), "amount": amount}
        >>> charge("order-1", 500), charge("order-1", 500)
        ({'charge': 1, 'amount': 500}, {'charge': 1, 'amount': 500})
        >>> charges
        [500]
        >>> charge("order-1", 900)
        Traceback (most recent call last):
        ...
        resilience.errors.IdempotencyKeyReusedError: idempotency key reused with different arguments
    """

    kind = "idempotency"

    def __init__(
        self,
        *,
        key: Callable[..., str | None],
        store: Any = None,
        ttl: Duration = 86400,
        lease: Duration = 60,
        wait: Duration = 0.0,
        fingerprint: Literal["args"] | Callable[..., str | bytes] | None = "args",
        codec: Codec | None = None,
        store_errors: Literal["never"] | type[BaseException] | tuple[type[BaseException], ...] = (
            "never"
        ),
        on_store_error: Literal["closed", "open", "local"] = "closed",
        heartbeat: bool = True,
        max_entries: int = 10_000,
        on_full: Literal["evict_oldest", "deny_new"] = "evict_oldest",
        namespace: str | None = None,
        name: str = "idempotency",
        clock: Clock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(name=name, listeners=listeners)
        namespace_: object = namespace
        if namespace_ is not None and (not isinstance(namespace_, str) or not namespace_):
            raise ConfigurationError(
                f"namespace must be a non-empty string (or None), got {namespace!r}"
            )
        self.namespace = namespace
        if not callable(key):
            raise ConfigurationError(
                f"key must be a callable(*args, **kwargs) -> str | None, got {key!r}"
            )
        self._key = key
        self.wait = seconds(wait, "wait")
        if fingerprint == "args":
            self._fingerprint: Callable[[tuple[Any, ...], dict[str, Any]], str] | None = (
                args_fingerprint
            )
        elif fingerprint is None:
            self._fingerprint = None
        elif callable(fingerprint):
            user_fp = fingerprint

            def custom(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
                out = user_fp(*args, **kwargs)
                if isinstance(out, str):
                    out = out.encode("utf-8", "surrogatepass")
                if not isinstance(out, bytes):
                    raise ConfigurationError(
                        f"fingerprint must return str or bytes, got {type(out).__name__}"
                    )
                return hashlib.sha256(out).hexdigest()[:32]

            self._fingerprint = custom
        else:
            raise ConfigurationError(
                f"fingerprint must be 'args', a callable or None, got {fingerprint!r}"
            )
        if codec is None:
            codec = _JSON
        elif not (
            callable(getattr(codec, "encode", None)) and callable(getattr(codec, "decode", None))
        ):
            raise ConfigurationError(f"codec must have encode() and decode(), got {codec!r}")
        self.codec = codec
        if store_errors == "never":
            self.store_errors: tuple[type[BaseException], ...] = ()
        else:
            types: tuple[Any, ...] = (
                store_errors if isinstance(store_errors, tuple) else (store_errors,)
            )
            if not types or not all(
                isinstance(t, type) and issubclass(t, BaseException) for t in types
            ):
                raise ConfigurationError(
                    f"store_errors must be 'never' or a tuple of exception types, got "
                    f"{store_errors!r}"
                )
            self.store_errors = types
        self._error_types = {_qualified(t): t for t in self.store_errors}
        self.records = IdempotencyRecords(
            store=store,
            ttl=ttl,
            lease=lease,
            namespace=f"idem:{self.name}",
            on_store_error=on_store_error,
            heartbeat=heartbeat,
            max_entries=max_entries,
            on_full=on_full,
            clock=clock,
        )

    def describe(self) -> dict[str, Any]:
        """Plain data describing the configuration."""
        return {
            "kind": self.kind,
            "name": self.name,
            "ttl": self.records.ttl,
            "lease": self.records.lease,
            "wait": self.wait,
            "store_errors": [t.__name__ for t in self.store_errors] or "never",
            "on_store_error": self.records.on_store_error,
            "on_full": self.records.on_full,
            "namespace": self.namespace,
        }

    # -- decisions shared by both wrappers ------------------------------------------------------
    def _scope(self, em: Emitter) -> str:
        """The records' namespace of one decorated function."""
        return self.namespace or em.function or em.operation or ""

    def _prepare(
        self, operation: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, str] | None:
        key: object = self._key(*args, **kwargs)
        if key is None:
            return None
        if not isinstance(key, str) or not key:
            raise ConfigurationError(
                f"idempotency key must be a non-empty str (or None), got {key!r}"
            )
        fp = self._fingerprint
        return (
            self.records.key(operation, key),
            "" if fp is None else fp(args, kwargs),
        )

    def _refuse(self, claim: Claim, em: Emitter) -> IdempotencyConflictError:
        """The conflict refusing a duplicate, stamped as this composition's own refusal (the
        function did not run: breakers and budgets around ignore it, outer limiters refund)."""
        if em:
            em.emit(
                CallRejected(
                    policy=self.name,
                    pipeline=em.pipeline,
                    operation=em.operation,
                    reason="idempotency_conflict",
                    retry_after=claim.retry_after,
                )
            )
        if claim.status == "reused":
            return refusal(
                IdempotencyKeyReusedError(
                    "idempotency key reused with different arguments", policy=self.name
                ),
                em,
            )
        return refusal(
            IdempotencyInProgressError(
                "a call with this idempotency key is still running",
                policy=self.name,
                retry_after=claim.retry_after,
            ),
            em,
        )

    def _replay(self, claim: Claim, em: Emitter) -> Any:
        if em:
            em.emit(
                IdempotentReplay(policy=self.name, pipeline=em.pipeline, operation=em.operation)
            )
        payload = claim.payload
        if payload is None:
            raise refusal(  # the function does not run: a refusal, like a conflict
                IdempotencyConflictError(
                    "the first call with this idempotency key completed but its result could "
                    "not be stored (refused by the codec, or over max_response_bytes: not "
                    "retained); it cannot be replayed",
                    policy=self.name,
                ),
                em,
            )
        tag, body = payload[:1], payload[1:]
        if tag == "r":
            try:
                return self.codec.decode(_unpack(body))
            except (ValueError, TypeError, binascii.Error) as exc:
                raise StoreError(f"idempotency record {claim.key!r} is unreadable") from exc
        try:
            data = json.loads(body) if tag == "e" else None
            cls = self._error_types[data["t"]]  # type: ignore[index]
            args, actual = list(data["a"]), str(data["n"])  # type: ignore[index]
        except (ValueError, TypeError, KeyError) as exc:
            raise StoreError(f"idempotency record {claim.key!r} is unreadable") from exc
        try:
            err = cls(*args)
        except Exception:
            err = cls()
        err.add_note(f"resilience: replayed the stored outcome of the first call ({actual})")
        raise err

    def _encode_result(self, result: Any) -> str | None:
        try:
            return "r" + _pack(self.codec.encode(result))
        except (TypeError, ValueError) as exc:
            _log.warning(
                "resilience: idempotent policy %r could not encode a result (%s); "
                "duplicates of this call will be refused, not replayed",
                self.name,
                exc,
            )
            return None

    def _error_outcome(self, exc: BaseException) -> str | None:
        """The payload storing ``exc``, or None to release the claim."""
        for t in self.store_errors:
            if isinstance(exc, t):
                try:
                    args = json.loads(json.dumps(list(exc.args)))
                except (TypeError, ValueError):
                    args = [str(exc)]
                data = {"t": _qualified(t), "a": args, "n": _qualified(type(exc))}
                return "e" + json.dumps(data, separators=(",", ":"))
        return None

    def _check_recorded(self, recorded: bool | StoreError, outcome: Any, em: Emitter) -> None:
        """Tell the caller when a finished call's outcome could not be recorded.

        ``outcome`` is the result (raise :class:`~resilience.IdempotencyOutcomeUnrecordedError`
        carrying it) or the exception being re-raised as a stored outcome (a note is added).
        """
        if not isinstance(recorded, StoreError):
            return
        if em:
            em.emit(
                StoreFailed(
                    policy=self.name,
                    pipeline=em.pipeline,
                    operation=em.operation,
                    decision="unrecorded",
                    error_type=error_type(recorded.__cause__ or recorded) or "StoreError",
                )
            )
        lease = self.records.lease
        if isinstance(outcome, BaseException):
            outcome.add_note(
                "resilience: this outcome could not be recorded (the idempotency store failed "
                f"while the lease was held); a duplicate after the lease ({lease:g} s) runs again"
            )
            return
        raise IdempotencyOutcomeUnrecordedError(
            f"the call succeeded but its outcome could not be recorded ({recorded}); the record "
            f"stays in progress and a duplicate after the lease ({lease:g} s) runs the function "
            "again: the result is in .result",
            result=outcome,
            policy=self.name,
        ) from recorded

    # -- wrappers ------------------------------------------------------------------------------
    def _wrap_sync(self, fn: Callable[..., Any], em: Emitter) -> Callable[..., Any]:
        records = self.records
        prepare, operation, wait, name = self._prepare, self._scope(em), self.wait, self.name

        def idempotent_wrapper(*args: Any, **kwargs: Any) -> Any:
            prepared = prepare(operation, args, kwargs)
            if prepared is None:
                return fn(*args, **kwargs)
            claim = records.claim(prepared[0], prepared[1], wait=wait, em=em, policy=name)
            status = claim.status
            if status == "replay":
                return self._replay(claim, em)
            if status == "unprotected":
                return fn(*args, **kwargs)
            if status != "claimed":
                raise self._refuse(claim, em)
            beat = records.start_heartbeat(claim)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                outcome = self._error_outcome(exc)
                if outcome is None:
                    beat.stop()
                    records.release(claim)
                else:
                    try:  # the heartbeat keeps the lease while the completion is retried
                        recorded = records._complete(claim, outcome)
                    finally:
                        beat.stop()
                    self._check_recorded(recorded, exc, em)
                raise
            try:
                recorded = records._complete(claim, self._encode_result(result))
            finally:
                beat.stop()
            if recorded.__class__ is not bool:
                self._check_recorded(recorded, result, em)
            return result

        return idempotent_wrapper

    def _wrap_async(
        self, fn: Callable[..., Awaitable[Any]], em: Emitter
    ) -> Callable[..., Awaitable[Any]]:
        records = self.records
        prepare, operation, wait, name = self._prepare, self._scope(em), self.wait, self.name

        async def idempotent_wrapper(*args: Any, **kwargs: Any) -> Any:
            prepared = prepare(operation, args, kwargs)
            if prepared is None:
                return await fn(*args, **kwargs)
            claim = await records.aclaim(prepared[0], prepared[1], wait=wait, em=em, policy=name)
            status = claim.status
            if status == "replay":
                return self._replay(claim, em)
            if status == "unprotected":
                return await fn(*args, **kwargs)
            if status != "claimed":
                raise self._refuse(claim, em)
            beat = records.astart_heartbeat(claim)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                outcome = self._error_outcome(exc)
                if outcome is None:
                    beat.stop()
                    await records.arelease(claim)
                else:
                    try:
                        recorded = await records._acomplete(claim, outcome)
                    finally:
                        beat.stop()
                    self._check_recorded(recorded, exc, em)
                raise
            try:
                recorded = await records._acomplete(claim, self._encode_result(result))
            finally:
                beat.stop()
            if recorded.__class__ is not bool:
                self._check_recorded(recorded, result, em)
            return result

        return idempotent_wrapper
