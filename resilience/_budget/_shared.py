"""A budget whose state lives in a store (``store=``): one round trip per retry decision
(private).

Calls, refunds and outcomes are not sent one by one: this process counts them and sends them
with its next decision (a ``try_withdraw``), or, when it takes no decision, with a
background send at most every :data:`FLUSH_INTERVAL` seconds (the first count after the
interval sends everything pending, without waiting for the reply on an event loop). What an
operation that failed carried is dropped (the script may have run: never count it twice).

The owning budget also keeps its own in-process state up to date (its retries included), so
``on_store_error="local"`` decides on this process's own counts when the store fails.
"""

from __future__ import annotations

import threading
from typing import Any, Literal, Protocol

from .._clock import Clock
from .._degraded import STORE_LOG, state_reset
from ..errors import StoreError
from ..events import Listener, StoreDecision, StoreFailed, emit, error_type
from ..stores.base import Store, apply_soon

__all__ = ["FLUSH_INTERVAL", "Owner", "Shared"]

#: Seconds between two background sends of the counts no decision carried.
FLUSH_INTERVAL = 0.1

Mode = Literal["local", "open", "closed"]


class Owner(Protocol):
    """What :class:`Shared` needs from the budget it serves."""

    name: str
    listeners: tuple[Listener, ...]
    on_store_error: Mode
    _clock: Clock

    def _store_op(self, pending: list[int], withdraw: bool) -> Any:
        """The operation carrying ``pending`` (and the decision, with ``withdraw``)."""
        ...

    def _allowed(self, result: Any) -> bool:
        """Whether a decision's result allows the retry (and count it in process)."""
        ...

    def _withdraw_local(self) -> bool:
        """The decision on this process's own state (``on_store_error="local"``)."""
        ...


class Shared:
    """The store side of one budget: its counts not sent yet and its failure mode."""

    __slots__ = ("_apply", "_lock", "_pending", "_sent", "owner", "store")

    def __init__(self, owner: Owner, store: Store, counters: int) -> None:
        self.owner = owner
        self.store = store
        self._apply = store.apply
        self._lock = threading.Lock()
        self._pending = [0] * counters
        self._sent = float("-inf")  # the owner's clock when the counts were last sent

    def count(self, index: int) -> None:
        """Count one more of counter ``index``; send the counts if none went out lately."""
        with self._lock:
            self._pending[index] += 1
        now = self.owner._clock.monotonic()
        if now - self._sent >= FLUSH_INTERVAL:
            self._sent = now
            apply_soon(self.store, self._op(False), self._send_failed)

    def _take(self) -> list[int]:
        with self._lock:
            pending = self._pending
            self._pending = [0] * len(pending)
        return pending

    def _op(self, withdraw: bool) -> Any:
        return self.owner._store_op(self._take(), withdraw)

    def _failed(self, exc: StoreError, decision: StoreDecision) -> None:
        owner = self.owner
        STORE_LOG.record(owner.name, decision, f"{exc}")
        if owner.listeners:
            event = StoreFailed(
                policy=owner.name, decision=decision, error_type=error_type(exc) or ""
            )
            emit(owner.listeners, event)

    def _send_failed(self, exc: StoreError) -> None:
        """A background send failed: what it carried is not counted fleet-wide."""
        self._failed(exc, "unrecorded")

    def _reset(self, op: Any) -> None:
        if op.reset:
            state_reset(self.owner.name, None, self.owner.listeners)

    def read(self) -> Any:
        """The fleet's state (sends the pending counts; raises :class:`StoreError`)."""
        op = self._op(False)
        result = self.store.apply(op)
        self._reset(op)
        return result

    async def _aapply(self, op: Any) -> Any:
        """The async round trip: awaited when the store has ``aapply`` (else ``apply``)."""
        store: Any = self.store
        aapply = getattr(store, "aapply", None)
        if aapply is not None:
            return await aapply(op)
        return store.apply(op)

    # twin: async atry_withdraw=try_withdraw, _aapply=_apply
    async def atry_withdraw(self) -> bool:
        """One decision by the store (or per ``on_store_error`` when it fails)."""
        owner = self.owner
        op = self._op(True)
        self._sent = owner._clock.monotonic()
        try:
            result = await self._aapply(op)
        except StoreError as exc:
            mode = owner.on_store_error
            self._failed(exc, mode)
            if mode == "local":
                return owner._withdraw_local()
            return mode == "open"
        self._reset(op)
        return owner._allowed(result)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def try_withdraw(self) -> bool:
        """One decision by the store (or per ``on_store_error`` when it fails)."""
        owner = self.owner
        op = self._op(True)
        self._sent = owner._clock.monotonic()
        try:
            result = self._apply(op)
        except StoreError as exc:
            mode = owner.on_store_error
            self._failed(exc, mode)
            if mode == "local":
                return owner._withdraw_local()
            return mode == "open"
        self._reset(op)
        return owner._allowed(result)

    # twin: end
