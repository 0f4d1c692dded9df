"""The in-memory store: one process, bounded, lock-protected, O(1) amortised per operation."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Literal, TypeVar

from .._clock import Clock, resolve_clock
from .._types import positive_int
from ..errors import ConfigurationError
from .base import StoreFullError, StoreOp, ttl_us

R = TypeVar("R")

__all__ = ["MemoryStore"]

_NO_EXPIRY = float("inf")
_PINS: dict[type, bool] = {}  # operation class -> its PINS flag (a missed getattr is slow)


def _pins(cls: type) -> bool:
    pins = _PINS.get(cls)
    if pins is None:
        pins = _PINS[cls] = bool(getattr(cls, "PINS", False))
    return pins


class MemoryStore:
    """A bounded in-process store (the default for every policy).

    Entries expire after the TTL their operation gives them, decided in whole microseconds
    exactly like the Redis store (:func:`~resilience.stores.base.ttl_us`: rounded up, so an entry
    never expires before its logical end); an expired entry is dropped when touched, or when
    room is needed. With ``max_entries`` live entries, a *new* key is either
    refused with :class:`~resilience.stores.StoreFullError` (``on_full="deny_new"``, the default
    for state such as limiter buckets: an attacker rotating keys cannot reset active users'
    state) or makes room by evicting the entry whose expiry was set longest ago
    (``on_full="evict_oldest"``, the default of the idempotency stores: completed records in
    the order they completed).

    **Pinned entries.** An operation class with ``PINS = True`` pins the entries it creates or
    gives a new expiry (an idempotency claim, or its renewal): a pinned entry is never evicted
    early, until an operation without it gives the entry a new expiry (the claim's completion).
    An operation that leaves an entry's state unchanged keeps its place. When every entry is
    pinned, a new key is refused (``StoreFullError``) in both modes.

    **Eviction reports.** :attr:`evicted` counts the entries evicted before their TTL; an
    operation with an integer ``evicted`` attribute also gets the number of entries evicted to
    make room for it added there (the idempotency policies turn it into an event).

    Every operation is O(1) amortised: evictable entries are kept in the order their expiry was
    set (which is the expiry order for one TTL), expired ones at the front are dropped first,
    and a full scan for other expired entries (hidden behind longer-lived ones, or pinned) runs
    at most once per ``max_entries`` insertions into a full store.

    Args:
        max_entries: the cap on entries (live, or expired and not yet dropped).
        on_full: ``"deny_new"`` or ``"evict_oldest"``.
        clock: the store's time source (TTLs and ``now`` given to operations).

    Example:
        >>> import resilience as rs
        >>> store = rs.MemoryStore(max_entries=1000, on_full="evict_oldest")
        >>> len(store), store.evicted
        (0, 0)
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
        # the evictable keys in the order their expiry was last set (a pinned key is absent)
        self._order: OrderedDict[str, None] = OrderedDict()
        self._full_inserts = 0  # insertions into a full store since the last scan
        self._lock = threading.Lock()
        #: entries evicted before their TTL to make room for new keys (``on_full="evict_oldest"``)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._data)

    # -- internals (under the lock) -------------------------------------------------------------
    def _drop(self, key: str) -> None:
        del self._data[key]
        self._order.pop(key, None)

    def _drop_expired_fronts(self, now_us: int) -> None:
        data, order = self._data, self._order
        while order:
            key = next(iter(order))
            if data[key][1] > now_us:
                break
            order.popitem(last=False)
            del data[key]

    def _scan(self, now_us: int) -> None:
        """Drop every expired entry (O(n); at most once per ``max_entries`` full insertions)."""
        self._full_inserts = 0
        for key in [k for k, (_, exp) in self._data.items() if exp <= now_us]:
            self._drop(key)

    def _make_room(self, now_us: int, op: Any) -> None:
        data, cap = self._data, self.max_entries
        self._drop_expired_fronts(now_us)
        if len(data) < cap:
            return
        self._full_inserts += 1
        if self._full_inserts >= cap:
            self._scan(now_us)
            if len(data) < cap:
                return
        if self.on_full == "evict_oldest" and self._order:
            key, _ = self._order.popitem(last=False)
            del data[key]
            self.evicted += 1
            if isinstance(getattr(op, "evicted", None), int):
                op.evicted += 1
            return
        if self.on_full == "deny_new":
            raise StoreFullError(f"memory store full ({cap} entries); new key refused")
        raise StoreFullError(
            f"memory store full: all {cap} entries are pinned (in-progress claims); new key refused"
        )

    # -- the store protocol --------------------------------------------------------------------
    def apply(self, op: StoreOp[R], /) -> R:
        """Apply ``op`` under the store lock."""
        with self._lock:
            now = self.clock.monotonic()
            return self._apply_locked(op, now)

    async def aapply(self, op: StoreOp[R], /) -> R:
        """Same as :meth:`apply` (no I/O happens), which it calls: a subclass overriding
        :meth:`apply` changes both."""
        return self.apply(op)

    def _apply_locked(self, op: StoreOp[R], now: float) -> R:
        data = self._data
        key = op.key
        entry = data.get(key)
        now_us = round(now * 1_000_000)  # the instant the Redis store sends its scripts
        if entry is not None and entry[1] <= now_us:
            self._drop(key)
            entry = None
        if entry is None:
            state, expires = None, _NO_EXPIRY
        else:
            state, expires = entry
        new_state, result, ttl = op.apply(state, now)
        if new_state is None:
            if entry is not None:
                self._drop(key)
            return result
        if entry is None:
            if len(data) >= self.max_entries:
                self._make_room(now_us, op)
        elif ttl is None:  # the same expiry: the entry keeps its place (and its pin)
            if new_state is not state:
                data[key] = (new_state, expires)
            return result
        if ttl is not None:
            expires = _NO_EXPIRY if ttl == _NO_EXPIRY else now_us + ttl_us(ttl)
        data[key] = (new_state, expires)
        order = self._order
        cls = type(op)
        if _PINS[cls] if cls in _PINS else _pins(cls):
            if entry is not None:
                order.pop(key, None)
        elif entry is not None and key in order:
            order.move_to_end(key)
        else:
            order[key] = None
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
            self._order.clear()
