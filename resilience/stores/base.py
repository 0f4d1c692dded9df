"""Store protocols (private module; re-exported by :mod:`resilience.stores`)."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar, runtime_checkable

from ..errors import StoreError

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

__all__ = ["AsyncStore", "Store", "StoreFullError", "StoreOp"]


class StoreFullError(StoreError):
    """A bounded store has no room for a new key (existing keys keep working)."""


class StoreOp(Protocol[R_co]):
    """One atomic operation on one logical entity's state.

    Attributes:
        key: the entity's key, unique per policy kind and name (e.g. ``"rl:api:user-42"``).
    """

    key: str

    def apply(self, state: Any | None, now: float, /) -> tuple[Any | None, R_co, float | None]:
        """Pure next-state function.

        Args:
            state: the current state, or ``None`` when absent or expired.
            now: the store's clock reading (seconds).

        Returns:
            ``(new_state, result, ttl)``: ``new_state`` ``None`` deletes the entry; ``ttl`` is
            seconds until the entry expires (``math.inf``: never; ``None``: keep the current
            expiry, or no expiry for a new entry).
        """
        ...


@runtime_checkable
class Store(Protocol):
    """A store usable from sync code."""

    def apply(self, op: StoreOp[R], /) -> R:
        """Apply ``op`` atomically and return its result (raises :class:`StoreError`)."""
        ...


@runtime_checkable
class AsyncStore(Protocol):
    """A store usable from async code."""

    async def aapply(self, op: StoreOp[R], /) -> R:
        """Apply ``op`` atomically and return its result (raises :class:`StoreError`)."""
        ...
