"""A throttle whose window lives in a store (``store=``): one round trip per decision
(private).

The outcomes of admitted calls are not sent on their own: each finished call (and whether
it was accepted) is counted with this process's next decision (or :meth:`Shared.counts`), in
the same script that decides and counts a rejected request. The pending outcomes of an
operation that fails are dropped (the script may have run: never count them twice).

An admission is :data:`SHARED` (decided by the store), :data:`LOCAL` (the store failed and
the throttle's own window decided, ``on_store_error="local"``) or :data:`UNGUARDED`
(``on_store_error="open"``: nothing to record).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .._degraded import state_reset
from .._policy import Emitter
from .._types import AsyncFn, SyncFn
from ..errors import StoreError
from ..stores.base import Store
from ._store import _ThrottleOp

if TYPE_CHECKING:
    from ._policy import AdaptiveThrottle

__all__ = ["LOCAL", "SHARED", "UNGUARDED", "Shared"]

UNGUARDED, SHARED, LOCAL = 0, 1, 2


class Shared:
    """The store side of one :class:`~resilience.AdaptiveThrottle` (its key, pending accepts)."""

    __slots__ = ("_accepted", "_apply", "_done", "_lock", "key", "store", "throttle")

    def __init__(self, throttle: AdaptiveThrottle, store: Store) -> None:
        self.throttle = throttle
        self.store = store
        self._apply = store.apply
        self.key = throttle._key
        self._done = 0  # finished calls not reported yet
        self._accepted = 0  # how many of them were accepted
        self._lock = threading.Lock()

    def take_pending(self) -> tuple[int, int]:
        """The finished and accepted calls to report with the next operation (no longer
        pending)."""
        if not self._done:
            return 0, 0
        with self._lock:
            pending = self._done, self._accepted
            self._done = self._accepted = 0
        return pending

    def finished(self, how: int, accepted: bool) -> None:
        """A call admitted as ``how`` finished, ``accepted`` by the backend or not."""
        if how == SHARED:
            with self._lock:
                self._done += 1
                if accepted:
                    self._accepted += 1
        elif how == LOCAL:
            self.throttle._finished_local(accepted)

    def counts(self) -> tuple[int, int]:
        """The fleet's ``(requests, accepts)`` (reports the pending outcomes)."""
        op = _ThrottleOp(self.key, self.throttle._cfg, *self.take_pending(), None)
        _, _, req, acc = self.store.apply(op)
        if op.reset:
            state_reset(self.throttle.name, None, self.throttle.listeners)
        return req, acc

    async def _aapply(self, op: Any) -> Any:
        """The async round trip: awaited when the store has ``aapply`` (else ``apply``)."""
        store: Any = self.store
        aapply = getattr(store, "aapply", None)
        if aapply is not None:
            return await aapply(op)
        return store.apply(op)

    # twin: async aadmit=admit, _aapply=_apply
    async def aadmit(self, em: Emitter) -> int:
        """One decision by the store (or per ``on_store_error`` when it fails); raises
        :class:`~resilience.ThrottledError`."""
        t = self.throttle
        op = _ThrottleOp(self.key, t._cfg, *self.take_pending(), t._random.random())
        try:
            rejected, retry_us, _, _ = await self._aapply(op)
        except StoreError as exc:
            return t._store_failed(exc, em)
        if op.reset:
            state_reset(t.name, em, t.listeners)
        if rejected:
            raise t._throttled(retry_us, em)
        return SHARED

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def admit(self, em: Emitter) -> int:
        """One decision by the store (or per ``on_store_error`` when it fails); raises
        :class:`~resilience.ThrottledError`."""
        t = self.throttle
        op = _ThrottleOp(self.key, t._cfg, *self.take_pending(), t._random.random())
        try:
            rejected, retry_us, _, _ = self._apply(op)
        except StoreError as exc:
            return t._store_failed(exc, em)
        if op.reset:
            state_reset(t.name, em, t.listeners)
        if rejected:
            raise t._throttled(retry_us, em)
        return SHARED

    # twin: end

    # twin: async aadmit=admit
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        """``fn`` under the shared throttle: one round trip per call."""
        t = self.throttle
        admit, finished = self.aadmit, self.finished
        overloaded, on_result, chain = t._overloaded, t._on_result, em.chain

        async def shared_throttle_wrapper(*args: Any, **kwargs: Any) -> Any:
            how = await admit(em)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                if how:
                    finished(how, not overloaded(exc, chain))
                raise
            if how:
                finished(how, on_result is None or not on_result(result))
            return result

        return shared_throttle_wrapper

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        """``fn`` under the shared throttle: one round trip per call."""
        t = self.throttle
        admit, finished = self.admit, self.finished
        overloaded, on_result, chain = t._overloaded, t._on_result, em.chain

        def shared_throttle_wrapper(*args: Any, **kwargs: Any) -> Any:
            how = admit(em)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                if how:
                    finished(how, not overloaded(exc, chain))
                raise
            if how:
                finished(how, on_result is None or not on_result(result))
            return result

        return shared_throttle_wrapper

    # twin: end
