"""MemoryStore: atomic pure ops, TTLs, bounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
