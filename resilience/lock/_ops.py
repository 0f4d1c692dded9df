"""The lock's state machine: one pure :class:`~resilience.stores.StoreOp` per transition.

A lock's state is ``{"o": owner ("" when free), "g": fence, "lu": lease end (µs)}``; the entry
itself lives ``keep`` seconds past the last acquisition or renewal, so the fence counter
survives releases while the key is in use. Each op's ``apply`` is the memory store's
implementation and its ``LUA`` (``lock.lua`` followed by the op's own file) the Redis twin,
decided on the server clock in whole microseconds.

**Fences.** An acquisition of a live entry takes ``fence + 1``. A *fresh* entry (never used,
expired after ``keep`` idle seconds, lost with a Redis restart, or undecodable) starts at the
store clock in microseconds (at least ``1``): it is above every fence the expired counter gave,
since a counter grows by one per acquisition and acquisitions never come faster than one per
microsecond. (It relies on the clock not stepping back by more than the idle time.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, TypeGuard

from ..stores._lua import script
from ..stores.base import ttl_us

__all__ = ["AcquireOp", "ReleaseOp", "RenewOp", "entry_ttl"]


def _lua(name: str) -> str:
    return script(__package__, "lock.lua") + script(__package__, name)


def _valid(state: object) -> TypeGuard[dict[str, Any]]:
    return (
        isinstance(state, dict)
        and isinstance(state.get("o"), str)
        and type(state.get("g")) is int
        and type(state.get("lu")) is int
    )


def _owns(state: object, owner: str, fence: int) -> TypeGuard[dict[str, Any]]:
    return _valid(state) and state["o"] == owner and state["g"] == fence


def _b(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def entry_ttl(lease: float, keep: float) -> int:
    """The entry's lifetime in µs after an acquisition or renewal: ``keep`` past the lease."""
    return ttl_us(lease) + ttl_us(keep)


@dataclass(slots=True)
class AcquireOp:
    """Take the lock for ``owner`` unless another owner's lease is running.

    The result is ``(acquired, fence, left)``: the new fence and ``0.0``, or the holder's fence
    and the seconds left on its lease.

    Example:
        >>> state, result, _ = AcquireOp("k", "a", lease=30.0, keep=60.0).apply(None, 0.0)
        >>> result, state["lu"]
        ((True, 1, 0.0), 30000000)
        >>> AcquireOp("k", "b", lease=30.0, keep=60.0).apply(state, 10.0)[1]
        (False, 1, 20.0)
        >>> AcquireOp("k", "b", lease=30.0, keep=60.0).apply(state, 30.0)[1]
        (True, 2, 0.0)
    """

    key: str
    owner: str
    lease: float
    keep: float

    #: a memory store never evicts a held lock's entry early (see :class:`~resilience.MemoryStore`)
    PINS: ClassVar[bool] = True
    LUA: ClassVar[str] = _lua("acquire.lua")

    def apply(self, state: Any | None, now: float, /) -> tuple[Any | None, Any, float | None]:
        """Pure next-state function."""
        now_us = round(now * 1_000_000)
        if _valid(state):
            if state["o"] and state["lu"] > now_us:
                return state, (False, state["g"], (state["lu"] - now_us) / 1_000_000), None
            fence = state["g"] + 1
        else:
            fence = max(1, now_us)
        new = {"o": self.owner, "g": fence, "lu": now_us + ttl_us(self.lease)}
        return new, (True, fence, 0.0), entry_ttl(self.lease, self.keep) / 1_000_000

    def lua_args(self) -> tuple[int, int, bytes]:
        """Lease and entry ttl in µs, owner (the Lua twin's ARGV[2:])."""
        return ttl_us(self.lease), entry_ttl(self.lease, self.keep), _b(self.owner)

    def parse(self, reply: Any) -> tuple[bool, int, float]:
        """The Lua reply as :meth:`apply`'s result."""
        return bool(int(reply[0])), int(reply[1]), int(reply[2]) / 1_000_000


@dataclass(slots=True)
class RenewOp:
    """Extend the lease held by ``(owner, fence)`` if it has not ended; result: renewed.

    Example:
        >>> state = AcquireOp("k", "a", lease=30.0, keep=60.0).apply(None, 0.0)[0]
        >>> RenewOp("k", "a", 1, lease=30.0, keep=60.0).apply(state, 10.0)[:2]
        ({'o': 'a', 'g': 1, 'lu': 40000000}, True)
        >>> RenewOp("k", "a", 1, lease=30.0, keep=60.0).apply(state, 31.0)[1]  # ended
        False
    """

    key: str
    owner: str
    fence: int
    lease: float
    keep: float

    #: a renewed lock stays pinned in a memory store
    PINS: ClassVar[bool] = True
    LUA: ClassVar[str] = _lua("renew.lua")

    def apply(self, state: Any | None, now: float, /) -> tuple[Any | None, bool, float | None]:
        """Pure next-state function."""
        now_us = round(now * 1_000_000)
        if not _owns(state, self.owner, self.fence) or state["lu"] <= now_us:
            return state, False, None
        renewed = {**state, "lu": now_us + ttl_us(self.lease)}
        return renewed, True, entry_ttl(self.lease, self.keep) / 1_000_000

    def lua_args(self) -> tuple[bytes, int, int, int]:
        """Owner, fence, lease and entry ttl in µs."""
        return _b(self.owner), self.fence, ttl_us(self.lease), entry_ttl(self.lease, self.keep)

    def parse(self, reply: Any) -> bool:
        """Whether the lease was extended."""
        return bool(int(reply))


@dataclass(slots=True)
class ReleaseOp:
    """Free the lock held by ``(owner, fence)``, keeping the fence counter for ``keep``
    seconds; result: whether the lease was still running (another owner's lock is never
    touched). In a memory store the freed entry is no longer pinned: with
    ``on_full="evict_oldest"`` it may make room for a new key (its counter is then seeded
    afresh, above its old fences).

    Example:
        >>> state = AcquireOp("k", "a", lease=30.0, keep=60.0).apply(None, 0.0)[0]
        >>> ReleaseOp("k", "zombie", 1, keep=60.0).apply(state, 1.0)[1]
        False
        >>> ReleaseOp("k", "a", 1, keep=60.0).apply(state, 1.0)
        ({'o': '', 'g': 1, 'lu': 30000000}, True, 60.0)
    """

    key: str
    owner: str
    fence: int
    keep: float

    LUA: ClassVar[str] = _lua("release.lua")

    def apply(self, state: Any | None, now: float, /) -> tuple[Any | None, bool, float | None]:
        """Pure next-state function."""
        if not _owns(state, self.owner, self.fence):
            return state, False, None
        held = state["lu"] > round(now * 1_000_000)
        return {**state, "o": ""}, held, ttl_us(self.keep) / 1_000_000

    def lua_args(self) -> tuple[bytes, int, int]:
        """Owner, fence and the counter's ttl in µs."""
        return _b(self.owner), self.fence, ttl_us(self.keep)

    def parse(self, reply: Any) -> bool:
        """Whether the lock was still held when released."""
        return bool(int(reply))
