"""Store protocols (private module; re-exported by :mod:`resilience.stores`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

from ..errors import StoreError

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

__all__ = ["AsyncStore", "Store", "StoreFullError", "StoreOp", "ttl_us"]


def ttl_us(ttl: float) -> int:
    """A TTL in whole microseconds, the unit every store decides expiry in.

    Rounded *up*, so an entry never expires before its logical end, but float noise below a
    nanosecond (the rate limiter's ``EPS``) does not count: ``0.3`` s is 300000 µs, not 300001
    (``0.3 * 1e6`` is ``300000.00000000006``). An entry written at ``now_us`` with ``ttl`` is
    live while the clock reads less than ``now_us + ttl_us(ttl)``; the Lua twins compute
    ``math.ceil(ttl * 1000000 - 0.001)`` for the same number.

    Example:
        >>> ttl_us(0.3), ttl_us(0.1000000000000227), ttl_us(0.0000015), ttl_us(2.5e-10)
        (300000, 100000, 2, 0)
    """
    return math.ceil(ttl * 1_000_000 - 0.001)


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


def apply_soon(
    store: Any, op: StoreOp[Any], on_error: Callable[[StoreError], object] | None = None
) -> None:
    """Apply ``op`` when nobody needs its result (giving back a permit or a reservation, a
    cleanup), without blocking a running event loop and without awaiting.

    A store with ``apply_soon`` (the Redis store) schedules it; an in-process store (with
    ``apply``) answers at once; an async-only store runs it as a task of the running loop.
    ``on_error`` receives a :class:`~resilience.StoreError`.

    Example:
        >>> import resilience as rs
        >>> from resilience.ratelimit._store import _RefundOp
        >>> limiter = rs.RateLimiter("refunds", rate=1)
        >>> apply_soon(rs.MemoryStore(), _RefundOp("rl:refunds", 1.0, 0.0, limiter.params))
    """
    soon = getattr(store, "apply_soon", None)
    if soon is not None:
        soon(op, on_error)
        return
    try:
        if callable(getattr(store, "apply", None)):
            store.apply(op)
            return
    except StoreError as exc:
        if on_error is not None:
            on_error(exc)
        return
    import asyncio

    async def run() -> None:
        try:
            await store.aapply(op)
        except StoreError as exc:
            if on_error is not None:
                on_error(exc)

    task = asyncio.get_running_loop().create_task(run())
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


_BACKGROUND: set[Any] = set()
