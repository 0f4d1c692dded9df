"""A breaker whose state lives in a store (``store=``): permits and outcomes by round trip
(private).

One round trip per call in CLOSED: the success of a call admitted in the CLOSED state is not
sent on its own; it is reported with this process's next operation on the breaker (its next
permit request, a failure, or a state/metrics read), recorded at that time by
:func:`._core.flush` exactly as :func:`._core.record` would. Failures, slow calls and every
HALF_OPEN outcome are sent at once (the half-open permits stay counted on the server). Pending
successes of an operation that fails are dropped (the script may have run: never count them
twice).

A permit here is a core token, or one of two stand-ins when the store failed:
:func:`unguarded` (``on_store_error="open"``: nothing to record) and :func:`local_permit`
(``on_store_error="local"``: a permit of the breaker's own in-process state).

Example:
    >>> local_permit(8) != UNGUARDED, local_token(local_permit(8))
    (True, 8)
    >>> local_token(8) is None
    True
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any

from .._degraded import state_reset
from .._policy import Emitter, refusal
from .._types import AsyncFn, SyncFn
from ..errors import CircuitOpenError, StoreError
from ..stores.base import Store, apply_soon
from . import _core as core
from ._store import NO_PENDING, _AcquireOp, _ManualOp, _RecordOp, _ReleaseOp

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker

__all__ = ["UNGUARDED", "Shared", "local_permit", "local_token"]

UNGUARDED = -1  # a call let through unguarded (on_store_error="open"): nothing to record
_LOCAL = -2  # permits of the local fallback are _LOCAL - token (tokens are >= 0)


def local_permit(token: int) -> int:
    """The permit standing for ``token`` of the breaker's in-process state."""
    return _LOCAL - token


def local_token(permit: int) -> int | None:
    """The in-process token behind ``permit`` (``None``: a store or unguarded permit)."""
    return _LOCAL - permit if permit <= _LOCAL else None


def _closed(permit: int) -> bool:
    """A store permit granted in CLOSED: its success can wait, its release is a no-op."""
    return permit >= 0 and core.state_of(permit) == core.CLOSED


class Shared:
    """The store side of one :class:`~resilience.CircuitBreaker` (its key, pending successes)."""

    __slots__ = ("_apply", "_lock", "_pending", "breaker", "key", "store")

    def __init__(self, breaker: CircuitBreaker, store: Store) -> None:
        self.breaker = breaker
        self.store = store
        self._apply = store.apply  # the sync round trip (see _aapply for the async one)
        self.key = breaker._key
        self._pending = NO_PENDING  # successes not reported yet (see pend)
        self._lock = threading.Lock()

    # -- pending successes --------------------------------------------------------------------
    def pend(self, permit: int) -> None:
        """A CLOSED-state call admitted with ``permit`` succeeded: report it later."""
        with self._lock:
            tok, n, stale = self._pending
            if not n or permit == tok:
                self._pending = (permit, n + 1, stale)
            elif permit > tok:  # a newer generation: the older successes are stale
                self._pending = (permit, 1, stale + n)
            else:
                self._pending = (tok, n, stale + 1)

    def take_pending(self) -> tuple[int, int, int]:
        pending = self._pending
        if pending is NO_PENDING:
            return pending
        with self._lock:
            pending, self._pending = self._pending, NO_PENDING
        return pending

    # -- permits ------------------------------------------------------------------------------
    def _decide(self, result: tuple[int, int, core.Transition | None], em: Emitter) -> int:
        permit, retry_us, tr = result
        b = self.breaker
        if tr is not None:
            b._transition(tr, em)
        if not core.granted(permit):
            raise b._rejected(retry_us, em)
        return permit

    async def _aapply(self, op: Any) -> Any:
        """The async round trip: awaited when the store has ``aapply`` (else ``apply``)."""
        store: Any = self.store
        aapply = getattr(store, "aapply", None)
        if aapply is not None:
            return await aapply(op)
        return store.apply(op)

    def _fallback(self, exc: StoreError, em: Emitter) -> int:
        b = self.breaker
        b._store_failed(exc, em)
        mode = b.on_store_error
        if mode == "open":
            return UNGUARDED
        if mode == "closed":
            raise refusal(
                CircuitOpenError(
                    f"circuit breaker {b.name!r}: state store unavailable",
                    policy=b.name,
                    retry_after=None,
                ),
                em,
            ) from exc
        return local_permit(b._acquire_local(em))

    # twin: async aacquire=acquire, _aapply=_apply
    async def aacquire(self, em: Emitter) -> int:
        """A permit from the store, or per ``on_store_error`` when it fails (may raise
        :class:`~resilience.CircuitOpenError`); reports the pending successes."""
        op = _AcquireOp(self.key, self.breaker, self.take_pending())
        try:
            result = await self._aapply(op)
        except StoreError as exc:
            return self._fallback(exc, em)
        if op.reset:
            state_reset(self.breaker.name, em, self.breaker.listeners)
        return self._decide(result, em)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def acquire(self, em: Emitter) -> int:
        """A permit from the store, or per ``on_store_error`` when it fails (may raise
        :class:`~resilience.CircuitOpenError`); reports the pending successes."""
        op = _AcquireOp(self.key, self.breaker, self.take_pending())
        try:
            result = self._apply(op)
        except StoreError as exc:
            return self._fallback(exc, em)
        if op.reset:
            state_reset(self.breaker.name, em, self.breaker.listeners)
        return self._decide(result, em)

    # twin: end

    # -- outcomes -----------------------------------------------------------------------------
    def _record_later(self, permit: int, outcome: int) -> bool:
        """True when the outcome needs no round trip now (see pend)."""
        if not _closed(permit):
            return False
        if outcome == core.SUCCESS:
            self.pend(permit)
            return True
        return outcome == core.RELEASE  # nothing to record in CLOSED

    def _recorded(self, op: _RecordOp, tr: core.Transition | None, em: Emitter) -> None:
        if op.reset:
            state_reset(self.breaker.name, em, self.breaker.listeners)
        if tr is not None:
            self.breaker._transition(tr, em)

    # twin: async arecord=record, _aapply=_apply
    async def arecord(self, permit: int, outcome: int, em: Emitter) -> None:
        """Report the outcome of a call admitted with ``permit`` (a failed store: dropped)."""
        if permit == UNGUARDED or (outcome == core.RELEASE and _closed(permit)):
            return  # unguarded, or an ignored outcome in CLOSED: nothing to record (no round trip)
        token = local_token(permit)
        if token is not None:
            self.breaker._record_local(token, outcome, em)
            return
        if self._record_later(permit, outcome):
            return
        op = _RecordOp(self.key, self.breaker, permit, outcome, self.take_pending())
        try:
            tr = await self._aapply(op)
        except StoreError as exc:
            self.breaker._store_failed(exc, em)
            return
        self._recorded(op, tr, em)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def record(self, permit: int, outcome: int, em: Emitter) -> None:
        """Report the outcome of a call admitted with ``permit`` (a failed store: dropped)."""
        if permit == UNGUARDED or (outcome == core.RELEASE and _closed(permit)):
            return  # unguarded, or an ignored outcome in CLOSED: nothing to record (no round trip)
        token = local_token(permit)
        if token is not None:
            self.breaker._record_local(token, outcome, em)
            return
        if self._record_later(permit, outcome):
            return
        op = _RecordOp(self.key, self.breaker, permit, outcome, self.take_pending())
        try:
            tr = self._apply(op)
        except StoreError as exc:
            self.breaker._store_failed(exc, em)
            return
        self._recorded(op, tr, em)

    # twin: end

    def release(self, permit: int, em: Emitter) -> None:
        """Give a permit back (a cancelled call, an ignored exception) from sync code."""
        self.record(permit, core.RELEASE, em)

    def release_soon(self, permit: int, em: Emitter) -> None:
        """Give a permit back from async code: never awaited, never blocking the event loop."""
        if permit == UNGUARDED or local_token(permit) is not None:
            self.record(permit, core.RELEASE, em)  # no store involved
            return
        if _closed(permit):
            return  # a CLOSED permit: nothing to give back (the Lua twin writes nothing either)
        # the reply is handled like an awaited record's (a rewritten state is reported)
        op = _ReleaseOp(self.key, self.breaker, permit, functools.partial(self._recorded, em=em))
        apply_soon(self.store, op, lambda exc: self.breaker._store_failed(exc, em))

    # -- manual control -----------------------------------------------------------------------
    def control(self, action: int) -> tuple[core.Transition | None, tuple[int, ...]]:
        """``_ManualOp`` on the stored state; raises :class:`StoreError`."""
        pending = self.take_pending()
        if action not in (core.M_TICK, core.M_OPEN):
            pending = NO_PENDING  # close/reset start a new window: drop older successes
        op = _ManualOp(self.key, self.breaker, action, pending)
        result = self.store.apply(op)
        if op.reset:
            state_reset(self.breaker.name, None, self.breaker.listeners)
        return result

    # -- wrappers -----------------------------------------------------------------------------
    # twin: async aacquire=acquire, arecord=record, release_soon=release
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        """``fn`` under the shared breaker: a permit and an outcome by round trip."""
        mono = self.breaker._clock.monotonic
        outcome_of = self.breaker._outcome
        chain = em.chain
        acquire, record, release = self.aacquire, self.arecord, self.release_soon

        async def store_circuit_wrapper(*args: Any, **kwargs: Any) -> Any:
            permit = await acquire(em)
            start = mono()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                outcome = outcome_of(exc, None, start, mono(), chain)
                if outcome == core.RELEASE:
                    # an ignored outcome: give the permit back (from async code without awaiting,
                    # it may be cancelled again, and without blocking the loop on the store)
                    release(permit, em)
                else:
                    await record(permit, outcome, em)
                raise
            await record(permit, outcome_of(None, result, start, mono(), chain), em)
            return result

        return store_circuit_wrapper

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        """``fn`` under the shared breaker: a permit and an outcome by round trip."""
        mono = self.breaker._clock.monotonic
        outcome_of = self.breaker._outcome
        chain = em.chain
        acquire, record, release = self.acquire, self.record, self.release

        def store_circuit_wrapper(*args: Any, **kwargs: Any) -> Any:
            permit = acquire(em)
            start = mono()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                outcome = outcome_of(exc, None, start, mono(), chain)
                if outcome == core.RELEASE:
                    # an ignored outcome: give the permit back (from async code without awaiting,
                    # it may be cancelled again, and without blocking the loop on the store)
                    release(permit, em)
                else:
                    record(permit, outcome, em)
                raise
            record(permit, outcome_of(None, result, start, mono(), chain), em)
            return result

        return store_circuit_wrapper

    # twin: end
