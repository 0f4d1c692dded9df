"""The record's state machine: one pure :class:`~resilience.stores.StoreOp` per transition.

Each op's ``apply`` is the memory store's implementation; its ``LUA`` (``record.lua`` followed
by the op's own file) is the Redis twin, decided on the server clock in whole microseconds. The
transitions are described in :mod:`resilience.idempotency`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeGuard

from ..stores._lua import script
from ..stores.base import ttl_us
from ..stores.redis import text

__all__ = ["ClaimOp", "ClaimStatus", "CompleteOp", "ReleaseOp", "RenewOp"]

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


def _b(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def _lease_end(now: float, lease: float) -> int:
    """The lease end (integer µs of the store clock) of a claim or renewal at ``now``."""
    return round(now * 1_000_000) + ttl_us(lease)


def _record_ttl(ttl: float, lease: float) -> float:
    """A claimed record's TTL in seconds, whole µs as the Lua twin's ``ttl + lease`` (µs)."""
    return (ttl_us(ttl) + ttl_us(lease)) / 1_000_000


def _lua(name: str) -> str:
    """``record.lua`` (the shared record helpers) followed by the op's own script."""
    return script(__package__, "record.lua") + script(__package__, name)


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
    LUA: ClassVar[str] = _lua("claim.lua")

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
    LUA: ClassVar[str] = _lua("renew.lua")

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
    LUA: ClassVar[str] = _lua("complete.lua")

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

    LUA: ClassVar[str] = _lua("release.lua")

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
