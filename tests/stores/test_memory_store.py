"""MemoryStore: atomic pure ops, TTLs, bounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

import resilience as rs
from resilience.stores import StoreFullError
from resilience.testing import FakeClock


@dataclass
class Incr:
    key: str
    ttl: float | None = 10.0

    def apply(self, state: Any | None, now: float) -> tuple[Any | None, int, float | None]:
        value = (state or 0) + 1
        return value, value, self.ttl


@dataclass
class Delete:
    key: str

    def apply(self, state: Any | None, now: float) -> tuple[Any | None, bool, float | None]:
        return None, state is not None, None


def test_apply_and_ttl(clock: FakeClock) -> None:
    store = rs.MemoryStore(clock=clock)
    assert [store.apply(Incr("a")) for _ in range(3)] == [1, 2, 3]
    clock.advance(9.9)
    assert store.apply(Incr("a", ttl=None)) == 4  # ttl=None keeps the entry's expiry (t=10)
    clock.advance(0.2)
    assert store.get("a") is None  # the original TTL (set at t=0 + 10) passed
    assert store.apply(Incr("a")) == 1


def test_delete(clock: FakeClock) -> None:
    store = rs.MemoryStore(clock=clock)
    store.apply(Incr("a"))
    assert store.apply(Delete("a")) is True
    assert store.apply(Delete("a")) is False
    assert len(store) == 0


def test_full_store_denies_new_keys_but_keeps_active_ones(clock: FakeClock) -> None:
    store = rs.MemoryStore(max_entries=2, clock=clock)
    store.apply(Incr("a"))
    store.apply(Incr("b"))
    with pytest.raises(StoreFullError):
        store.apply(Incr("c"))
    assert store.apply(Incr("a")) == 2  # existing keys keep working
    clock.advance(11)  # everything expired: the sweep makes room
    assert store.apply(Incr("c")) == 1


def test_evict_oldest(clock: FakeClock) -> None:
    store = rs.MemoryStore(max_entries=2, on_full="evict_oldest", clock=clock)
    for key in "abc":
        store.apply(Incr(key))
    assert store.get("a") is None
    assert store.get("c") == 1


def test_invalid_configuration() -> None:
    with pytest.raises(rs.ConfigurationError, match="max_entries"):
        rs.MemoryStore(max_entries=0)
    with pytest.raises(rs.ConfigurationError, match="on_full"):
        rs.MemoryStore(on_full="drop")  # type: ignore[arg-type]


@dataclass
class Put:
    """Writes ``value`` (an unpinned entry)."""

    key: str
    value: str
    ttl: float | None = 10.0
    evicted: int = 0

    def apply(self, state: Any | None, now: float) -> tuple[Any | None, str, float | None]:
        return self.value, self.value, self.ttl


class Run(Put):
    """Writes a pinned entry (like an in-progress claim)."""

    PINS: ClassVar[bool] = True


def run(key: str) -> Run:
    return Run(key, "running")


def test_evict_oldest_never_evicts_pinned_entries(clock: FakeClock) -> None:
    store = rs.MemoryStore(max_entries=3, on_full="evict_oldest", clock=clock)
    store.apply(run("a"))
    store.apply(Put("b", "done"))
    store.apply(Put("c", "done"))
    op = run("d")
    store.apply(op)
    assert (op.evicted, store.evicted) == (1, 1)
    assert store.get("b") is None  # the oldest evictable entry went, not the pinned "a"
    assert store.get("a") == "running"
    store.apply(Put("a", "done"))  # no longer pinned: now the newest evictable entry
    store.apply(run("e"))
    assert store.get("c") is None
    assert store.get("a") == "done"
    store.apply(run("f"))  # a (done) evicted; d, e, f are all pinned
    with pytest.raises(StoreFullError, match="pinned"):
        store.apply(run("g"))


def test_full_store_reclaims_expired_entries_first(clock: FakeClock) -> None:
    store = rs.MemoryStore(max_entries=2, on_full="evict_oldest", clock=clock)
    store.apply(Put("a", "x", ttl=5))
    store.apply(Put("b", "x", ttl=50))
    clock.advance(6)
    store.apply(Put("c", "x"))
    assert store.evicted == 0  # "a" had expired: no early eviction
    assert store.get("b") == "x"


def test_refusing_new_keys_does_not_scan_the_store_each_time(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full deny_new store refuses in O(1) amortised (was an O(n) sweep per refusal)."""
    store = rs.MemoryStore(max_entries=100, clock=clock)
    for i in range(100):
        store.apply(Incr(f"k{i}", ttl=3600))
    scans: list[int] = []
    original = store._scan

    def counting(now_us: int) -> None:
        scans.append(len(store))
        original(now_us)

    monkeypatch.setattr(store, "_scan", counting)
    for i in range(1000):
        with pytest.raises(StoreFullError):
            store.apply(Incr(f"new{i}"))
    assert len(scans) <= 10  # at most one scan per max_entries refusals
    assert store.apply(Incr("k0")) == 2


def test_hidden_expired_entries_are_found_by_the_amortised_scan(clock: FakeClock) -> None:
    store = rs.MemoryStore(max_entries=3, clock=clock)
    store.apply(Incr("long", ttl=100))
    store.apply(Incr("short", ttl=1))  # expires first but sits behind "long"
    store.apply(Incr("long2", ttl=100))
    clock.advance(2)
    refused = 0
    while True:
        try:
            store.apply(Incr("new"))
            break
        except StoreFullError:
            refused += 1
    assert refused < 3  # reclaimed within max_entries attempts
    assert store.get("long") == 1
