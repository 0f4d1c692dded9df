"""Store protocols (private module; re-exported by :mod:`resilience.stores`)."""

from __future__ import annotations

from collections.abc import Callable
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
        >>> from resilience.ratelimit import _RefundOp
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
