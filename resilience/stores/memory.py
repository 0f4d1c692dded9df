"""The in-memory store: one process, bounded, lock-protected."""

from __future__ import annotations

import threading
from typing import Any, Literal, TypeVar

from .._clock import Clock, resolve_clock
from .._types import positive_int
from ..errors import ConfigurationError
from .base import StoreFullError, StoreOp, ttl_us

R = TypeVar("R")

__all__ = ["MemoryStore"]

_NO_EXPIRY = float("inf")


class MemoryStore:
    """A bounded in-process store (the default for every policy).

    Entries expire after the TTL their operation gives them, decided in whole microseconds
    exactly like the Redis store (:func:`~resilience.stores.base.ttl_us`: rounded up, so an entry
    never expires before its logical end); expired entries are dropped when touched and swept
    when the store is full. With ``max_entries`` live entries, a *new* key is
    refused with :class:`~resilience.stores.StoreFullError` (``on_full="deny_new"``, the default:
    an attacker rotating keys cannot evict active users' state) or evicts the least recently
    created entry (``on_full="evict_oldest"``).

    Args:
        max_entries: the cap on live entries.
        on_full: ``"deny_new"`` or ``"evict_oldest"``.
        clock: the store's time source (TTLs and ``now`` given to operations).

    Example:
        >>> import resilience as rs
        >>> store = rs.MemoryStore(max_entries=1000)
        >>> len(store)
        0
    """

    def __init__(
        self,
        *,
        max_entries: int = 100_000,
        on_full: Literal["deny_new", "evict_oldest"] = "deny_new",
        clock: Clock | None = None,
    ) -> None:
        self.max_entries = positive_int(max_entries, "max_entries")
        if on_full not in ("deny_new", "evict_oldest"):
            raise ConfigurationError(
                f"on_full must be 'deny_new' or 'evict_oldest', got {on_full!r}"
            )
        self.on_full = on_full
        self.clock = resolve_clock(clock)
        self._data: dict[str, tuple[Any, float]] = {}  # state, expiry (µs of the clock)
        self._lock = threading.Lock()
        self._last_sweep = float("-inf")

    def __len__(self) -> int:
        return len(self._data)

    def _sweep(self, now: float) -> None:
        now_us = round(now * 1_000_000)
        dead = [k for k, (_, exp) in self._data.items() if exp <= now_us]
        for k in dead:
            del self._data[k]
        self._last_sweep = now

    def apply(self, op: StoreOp[R], /) -> R:
        """Apply ``op`` under the store lock."""
        with self._lock:
            now = self.clock.monotonic()
            return self._apply_locked(op, now)

    async def aapply(self, op: StoreOp[R], /) -> R:
        """Same as :meth:`apply` (no I/O happens)."""
        return self.apply(op)

    def _apply_locked(self, op: StoreOp[R], now: float) -> R:
        data = self._data
        key = op.key
        now_us = round(now * 1_000_000)  # the instant the Redis store sends its scripts
        entry = data.get(key)
        if entry is not None and entry[1] <= now_us:
            del data[key]
            entry = None
        if entry is None:
            state, expires = None, _NO_EXPIRY
        else:
            state, expires = entry
        new_state, result, ttl = op.apply(state, now)
        if new_state is None:
            if entry is not None:
                del data[key]
            return result
        if ttl is not None:
            expires = _NO_EXPIRY if ttl == _NO_EXPIRY else now_us + ttl_us(ttl)
        if entry is None and len(data) >= self.max_entries:
            self._sweep(now)
            if len(data) >= self.max_entries:
                if self.on_full == "deny_new":
                    raise StoreFullError(
                        f"memory store full ({self.max_entries} live entries); new key refused"
                    )
                del data[next(iter(data))]
        data[key] = (new_state, expires)
        return result

    def get(self, key: str) -> Any | None:
        """The live state of ``key`` (for tests and snapshots)."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None or entry[1] <= round(self.clock.monotonic() * 1_000_000):
                return None
            return entry[0]

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._data.clear()
