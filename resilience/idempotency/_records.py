"""The record client every idempotency adapter drives: claim, renew, complete, release."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

from .._clock import Clock, TimerClock, resolve_clock
from .._degraded import STORE_LOG
from .._policy import Emitter
from .._types import Duration, check_name, positive_int, seconds
from ..errors import StoreError
from ..events import RecordsEvicted, StoreFailed, error_type
from ..stores.memory import MemoryStore
from . import _renewer, _rpc
from ._claim import Claim, aapply_op, apply_op, claim_result
from ._codec import _new_owner, record_key
from ._finish import (
    COMPLETE_FIRST_DELAY,
    COMPLETE_MAX_DELAY,
    complete_pause,
    lost,
    retained,
    unrecorded,
)
from ._ops import ClaimOp, CompleteOp, ReleaseOp, RenewOp
from ._options import check_choice, check_store
from ._rpc import AsyncHandler, SyncHandler
from ._scope import CURRENT_CALLER, MAX_BUFFERED_BYTES, MAX_RESPONSE_BYTES, BufferBudget

if TYPE_CHECKING:  # pragma: no cover
    import asyncio

    from ._renewer import _Beat, _NoBeat

__all__ = ["Claim", "IdempotencyRecords"]

_log = logging.getLogger("resilience")


class IdempotencyRecords:
    """The claim / renew / complete / release client shared by every idempotency adapter.

    :class:`Idempotent` (functions and message consumers), the ASGI ``IdempotencyMiddleware``
    and the gRPC server interceptor all drive records through this class, so they share the
    state machine, the fencing, the lease heartbeat and the store-failure policy.

    Args:
        store: a :class:`~resilience.stores.Store` (default: a private
            ``MemoryStore(max_entries=max_entries)``).
        ttl: seconds a completed record is kept (from completion).
        lease: seconds a claim stays valid without renewal; renewed every ``lease / 3``.
        namespace: prefix of the store keys.
        on_store_error: ``"closed"`` (default: raise :class:`~resilience.StoreError`, the
            operation does not run), ``"open"`` (run unprotected) or ``"local"`` (fall back to
            an in-process store: duplicates are caught within this process only).
        heartbeat: renew leases while operations run (disable only for operations that always
            finish well within ``lease``: past it, a duplicate may run concurrently).
        max_entries: the cap of the default and ``"local"`` memory stores.
        max_response_bytes: the largest outcome retained (default :data:`MAX_RESPONSE_BYTES`,
            1 MiB, for every adapter): a larger one completes the record as *not retained*,
            and duplicates are refused (``IdempotencyConflictError``; HTTP 409, gRPC
            ``ABORTED``) instead of replayed. Bounds the memory and Redis bytes per record.
        max_buffered_bytes: the bound on request bytes adapters buffer for fingerprinting,
            summed over every in-flight request using these records (:attr:`buffers`, a
            :class:`BufferBudget`; default :data:`MAX_BUFFERED_BYTES`, 64 MiB).
        on_full: what the default and ``"local"`` memory stores do with ``max_entries`` records
            and a new key: ``"evict_oldest"`` (default: evict the oldest *completed* record,
            never an in-progress claim; a late duplicate of an evicted key runs again, and a
            :class:`~resilience.events.RecordsEvicted` event is emitted) or ``"deny_new"``
            (refuse the new key with :class:`~resilience.stores.StoreFullError`, handled by
            ``on_store_error``). Either way a store whose every record is an in-progress claim
            refuses new keys. Ignored for a store you pass.
        clock: time source of the default store, of waits and of the heartbeat.

    Scope: records claimed inside :func:`caller_scope` (the gRPC interceptor enters it for its
    ``idempotency=`` policy) belong to that caller (:meth:`key`).

    gRPC servers use :meth:`run` / :meth:`arun` (a whole request; see there).

    Example:
        >>> import resilience as rs
        >>> records = IdempotencyRecords(clock=rs.testing.FakeClock())
        >>> calls = []
        >>> def handler() -> bytes:
        ...     calls.append(1)
        ...     return b"response"
        >>> args = dict(principal="user-1", method="/shop.Orders/Create", key="k1",
        ...             fingerprint=b"request-bytes")
        >>> records.run(**args, handler=handler), records.run(**args, handler=handler)
        ((b'response', False), (b'response', True))
        >>> len(calls)
        1
    """

    def __init__(
        self,
        *,
        store: Any = None,
        ttl: Duration = 86400,
        lease: Duration = 60,
        namespace: str = "idem",
        on_store_error: Literal["closed", "open", "local"] = "closed",
        heartbeat: bool = True,
        max_entries: int = 10_000,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
        on_full: Literal["evict_oldest", "deny_new"] = "evict_oldest",
        clock: Clock | None = None,
    ) -> None:
        self.clock = resolve_clock(clock)
        self.ttl = seconds(ttl, "ttl", allow_zero=False)
        self.lease = seconds(lease, "lease", allow_zero=False)
        self.max_entries = positive_int(max_entries, "max_entries")
        self.max_response_bytes = positive_int(max_response_bytes, "max_response_bytes", minimum=0)
        self.buffers = BufferBudget(max_buffered_bytes)
        self._warned_size = False
        self.on_full: Literal["evict_oldest", "deny_new"] = check_choice(
            on_full, "on_full", ("evict_oldest", "deny_new")
        )
        self.store = self._memory_store() if store is None else check_store(store)
        self.on_store_error: Literal["closed", "open", "local"] = check_choice(
            on_store_error, "on_store_error", ("closed", "open", "local")
        )
        self._local: MemoryStore | None = None
        self._warned_evict = False
        self.namespace = check_name(namespace)
        self.heartbeat = bool(heartbeat)
        # a clock with its own timers (a FakeClock) drives renewals; others renew in real time
        self._fake_timers = isinstance(self.clock, TimerClock)
        self._pending: set[asyncio.Task[Any]] = set()

    def key(self, *parts: str) -> str:
        """The store key of a composite key (see :func:`record_key`).

        Inside :func:`caller_scope` the caller's principal is part of the key.
        """
        caller = CURRENT_CALLER.get()
        if caller is None:
            return record_key(self.namespace, *parts)
        return record_key(self.namespace, "\x00caller", caller.principal, *parts)

    # -- store access with the failure policy ------------------------------------------------
    def _memory_store(self) -> MemoryStore:
        return MemoryStore(max_entries=self.max_entries, on_full=self.on_full, clock=self.clock)

    def _local_store(self) -> MemoryStore:
        if self._local is None:
            self._local = self._memory_store()
        return self._local

    def _evicted(self, op: ClaimOp, em: Emitter | None, policy: str) -> None:
        """Report the completed records a full memory store evicted for ``op``."""
        if not self._warned_evict:
            self._warned_evict = True
            _log.warning(
                "resilience: %s: the memory store is full (%d records); evicting the oldest "
                "completed records before their ttl: a late duplicate of an evicted key runs "
                "again (raise max_entries, shorten ttl or share a RedisStore)",
                policy or self.namespace,
                self.max_entries,
            )
        if em:
            em.emit(RecordsEvicted(**em.origin(policy), count=op.evicted))

    _apply = staticmethod(apply_op)
    _aapply = staticmethod(aapply_op)

    def _on_claim_error(self, exc: StoreError, em: Emitter | None, policy: str) -> bool:
        """Emit the decision; return True to fall back to the local store."""
        mode = self.on_store_error
        if em:
            em.emit(
                StoreFailed(
                    **em.origin(policy),
                    decision=mode,
                    error_type=error_type(exc.__cause__ or exc) or "StoreError",
                )
            )
        STORE_LOG.record(policy or self.namespace, mode, f"{exc}")
        if mode == "closed":
            raise exc
        return mode == "local"

    # twin: async atry_claim=try_claim, aclaim=claim, _aapply=_apply
    async def atry_claim(
        self, key: str, fingerprint: str, *, em: Emitter | None = None, policy: str = ""
    ) -> Claim:
        """One claim attempt; store failures follow ``on_store_error``."""
        owner = _new_owner()
        op = ClaimOp(key, fingerprint, owner, self.lease, self.ttl)
        store = self.store
        started = self.clock.monotonic()
        try:
            claim = claim_result(key, owner, await self._aapply(store, op), store)
        except StoreError as exc:
            if not self._on_claim_error(exc, em, policy):
                return Claim("unprotected", key)
            store = self._local_store()
            claim = claim_result(key, owner, await self._aapply(store, op), store)
        if op.evicted:
            self._evicted(op, em, policy)
        if claim.status == "claimed":
            claim.lease_until = started + self.lease
        return claim

    async def aclaim(
        self,
        key: str,
        fingerprint: str,
        *,
        wait: float = 0.0,
        em: Emitter | None = None,
        policy: str = "",
    ) -> Claim:
        """Claim ``key``; while another owner runs, poll up to ``wait`` seconds for its outcome."""
        claim = await self.atry_claim(key, fingerprint, em=em, policy=policy)
        if claim.status != "in_progress" or wait <= 0:
            return claim
        clock = self.clock
        deadline = clock.monotonic() + wait
        step = 0.005
        while True:
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                return claim
            await clock.asleep(min(step, remaining))
            step = min(step * 2, 0.1)
            claim = await self.atry_claim(key, fingerprint, em=em, policy=policy)
            if claim.status != "in_progress":
                return claim

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def try_claim(
        self, key: str, fingerprint: str, *, em: Emitter | None = None, policy: str = ""
    ) -> Claim:
        """One claim attempt; store failures follow ``on_store_error``."""
        owner = _new_owner()
        op = ClaimOp(key, fingerprint, owner, self.lease, self.ttl)
        store = self.store
        started = self.clock.monotonic()
        try:
            claim = claim_result(key, owner, self._apply(store, op), store)
        except StoreError as exc:
            if not self._on_claim_error(exc, em, policy):
                return Claim("unprotected", key)
            store = self._local_store()
            claim = claim_result(key, owner, self._apply(store, op), store)
        if op.evicted:
            self._evicted(op, em, policy)
        if claim.status == "claimed":
            claim.lease_until = started + self.lease
        return claim

    def claim(
        self,
        key: str,
        fingerprint: str,
        *,
        wait: float = 0.0,
        em: Emitter | None = None,
        policy: str = "",
    ) -> Claim:
        """Claim ``key``; while another owner runs, poll up to ``wait`` seconds for its outcome."""
        claim = self.try_claim(key, fingerprint, em=em, policy=policy)
        if claim.status != "in_progress" or wait <= 0:
            return claim
        clock = self.clock
        deadline = clock.monotonic() + wait
        step = 0.005
        while True:
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                return claim
            clock.sleep(min(step, remaining))
            step = min(step * 2, 0.1)
            claim = self.try_claim(key, fingerprint, em=em, policy=policy)
            if claim.status != "in_progress":
                return claim

    # twin: end
    # -- finishing a claim --------------------------------------------------------------------
    # twin: async acomplete=complete, acomplete_or_error=complete_or_error, _aapply=_apply
    async def acomplete(
        self, claim: Claim, payload: str | None, *, size: int | None = None
    ) -> bool:
        """Store the outcome (fenced); False when the claim was lost or it could not be stored.

        A store failure is retried (backing off from 20 ms to 1 s, on the event loop for async
        callers) for as long as the claim's lease is surely held (:attr:`Claim.lease_until`,
        extended by a running heartbeat) and at most one ``lease``: a transient blip never
        leaves a finished call *in progress*, to be run again by a retry after the lease.
        Completing twice is harmless (a completion is idempotent for its owner), and a
        completion after a takeover is refused (fencing). ``size`` is the outcome's size in
        bytes as the adapter measures it (default ``len(payload)``); over
        ``max_response_bytes`` the record is completed as not retained.
        """
        return await self.acomplete_or_error(claim, payload, size) is True

    async def acomplete_or_error(
        self, claim: Claim, payload: str | None, size: int | None = None
    ) -> bool | StoreError:
        """:meth:`acomplete` that says why an outcome was not recorded.

        Returns True when it was stored, False when the claim was lost (taken over after its
        lease, or already finished), or the :class:`~resilience.StoreError` the store kept
        raising, for an adapter that reports the failure itself (an event, a log line, a
        response header).

        Example (the sync twin; the async one is the same with ``await``):
            >>> import resilience as rs
            >>> records = rs.IdempotencyRecords()
            >>> claim = records.claim("k", "fingerprint")
            >>> records.complete_or_error(claim, '"done"')
            True
        """
        if claim.status != "claimed":
            return False
        payload = retained(self, claim, payload, size)
        op = CompleteOp(claim.key, claim.owner, claim.fence, payload, self.ttl)
        clock = self.clock
        started = 0.0
        delay, attempts = COMPLETE_FIRST_DELAY, 0
        while True:
            attempts += 1
            try:
                stored: bool = await self._aapply(claim.store, op)
            except StoreError as exc:
                if attempts == 1:
                    started = clock.monotonic()
                pause = complete_pause(self, claim, started, delay)
                if pause is None:
                    return unrecorded(self, exc, attempts, started)
                await clock.asleep(pause)
                delay = min(delay * 2, COMPLETE_MAX_DELAY)
                continue
            if not stored:
                lost(self, claim)
            return stored

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def complete(self, claim: Claim, payload: str | None, *, size: int | None = None) -> bool:
        """Store the outcome (fenced); False when the claim was lost or it could not be stored.

        A store failure is retried (backing off from 20 ms to 1 s, on the event loop for async
        callers) for as long as the claim's lease is surely held (:attr:`Claim.lease_until`,
        extended by a running heartbeat) and at most one ``lease``: a transient blip never
        leaves a finished call *in progress*, to be run again by a retry after the lease.
        Completing twice is harmless (a completion is idempotent for its owner), and a
        completion after a takeover is refused (fencing). ``size`` is the outcome's size in
        bytes as the adapter measures it (default ``len(payload)``); over
        ``max_response_bytes`` the record is completed as not retained.
        """
        return self.complete_or_error(claim, payload, size) is True

    def complete_or_error(
        self, claim: Claim, payload: str | None, size: int | None = None
    ) -> bool | StoreError:
        """:meth:`complete` that says why an outcome was not recorded.

        Returns True when it was stored, False when the claim was lost (taken over after its
        lease, or already finished), or the :class:`~resilience.StoreError` the store kept
        raising, for an adapter that reports the failure itself (an event, a log line, a
        response header).

        Example (the sync twin; the async one is the same with ``await``):
            >>> import resilience as rs
            >>> records = rs.IdempotencyRecords()
            >>> claim = records.claim("k", "fingerprint")
            >>> records.complete_or_error(claim, '"done"')
            True
        """
        if claim.status != "claimed":
            return False
        payload = retained(self, claim, payload, size)
        op = CompleteOp(claim.key, claim.owner, claim.fence, payload, self.ttl)
        clock = self.clock
        started = 0.0
        delay, attempts = COMPLETE_FIRST_DELAY, 0
        while True:
            attempts += 1
            try:
                stored: bool = self._apply(claim.store, op)
            except StoreError as exc:
                if attempts == 1:
                    started = clock.monotonic()
                pause = complete_pause(self, claim, started, delay)
                if pause is None:
                    return unrecorded(self, exc, attempts, started)
                clock.sleep(pause)
                delay = min(delay * 2, COMPLETE_MAX_DELAY)
                continue
            if not stored:
                lost(self, claim)
            return stored

    # twin: end
    # twin: async arelease=release, arenew=renew, _aapply=_apply
    async def arelease(self, claim: Claim) -> None:
        """Delete the claim so that a retry runs again (fenced; store errors are logged)."""
        if claim.status != "claimed":
            return
        try:
            await self._aapply(claim.store, ReleaseOp(claim.key, claim.owner, claim.fence))
        except StoreError as exc:  # the claim expires after its lease
            _log.warning("resilience: could not release an idempotency claim: %s", exc)

    async def arenew(self, claim: Claim) -> bool:
        """Extend the claim's lease now; False when it is no longer held."""
        started = self.clock.monotonic()
        op = RenewOp(claim.key, claim.owner, claim.fence, self.lease, self.ttl)
        held: bool = await self._aapply(claim.store, op)
        self._renewed(claim, held, started)
        return held

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def release(self, claim: Claim) -> None:
        """Delete the claim so that a retry runs again (fenced; store errors are logged)."""
        if claim.status != "claimed":
            return
        try:
            self._apply(claim.store, ReleaseOp(claim.key, claim.owner, claim.fence))
        except StoreError as exc:  # the claim expires after its lease
            _log.warning("resilience: could not release an idempotency claim: %s", exc)

    def renew(self, claim: Claim) -> bool:
        """Extend the claim's lease now; False when it is no longer held."""
        started = self.clock.monotonic()
        op = RenewOp(claim.key, claim.owner, claim.fence, self.lease, self.ttl)
        held: bool = self._apply(claim.store, op)
        self._renewed(claim, held, started)
        return held

    # twin: end
    def _renewed(self, claim: Claim, held: bool, started: float) -> None:
        if not held:
            claim.lease_until = float("-inf")
        elif started + self.lease > claim.lease_until:
            claim.lease_until = started + self.lease

    # -- heartbeats (the shared renewer) and whole RPC requests ----------------------------------
    # twin: async astart_heartbeat=start_heartbeat, astart=start, arun=run, AsyncHandler=SyncHandler
    def astart_heartbeat(self, claim: Claim) -> _Beat | _NoBeat:
        """Renew the claim every ``lease / 3`` until ``.stop()`` (for async callers on the
        running event loop, for sync ones from a shared background thread)."""
        return _renewer.astart(self, claim)

    async def arun(
        self,
        *,
        principal: str,
        method: str,
        key: str,
        fingerprint: bytes,
        handler: AsyncHandler,
        wait: float = 0.0,
    ) -> tuple[bytes, bool]:
        """Run ``handler`` at most once per ``(principal, method, key)`` (a whole request).

        Returns ``(response_bytes, replayed)``. A handler exception releases the claim and
        propagates (a retry runs again); to store an error outcome, return bytes that encode
        it. The response is stored as a ``"grpc"`` :class:`StoredOutcome`. Raises
        :class:`~resilience.IdempotencyInProgressError`,
        :class:`~resilience.IdempotencyKeyReusedError`, :class:`~resilience.StoreError`.

        A gRPC server interceptor reads the ``idempotency-key`` metadata entry, takes the
        principal from its authentication context (never a constant), the full method name,
        and the serialized request as the fingerprint; the handler (a coroutine function for
        async servers) returns the serialized response. Map
        :class:`~resilience.IdempotencyInProgressError` to ``ABORTED`` (with
        ``grpc-retry-pushback-ms`` from ``retry_after``), ``IdempotencyKeyReusedError`` to
        ``FAILED_PRECONDITION``, ``StoreError`` to ``UNAVAILABLE`` and a not-retained replay
        (:class:`~resilience.IdempotencyConflictError`) to ``ABORTED``.
        """
        return await _rpc.arun(self, principal, method, key, fingerprint, handler, wait)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def start_heartbeat(self, claim: Claim) -> _Beat | _NoBeat:
        """Renew the claim every ``lease / 3`` until ``.stop()`` (for async callers on the
        running event loop, for sync ones from a shared background thread)."""
        return _renewer.start(self, claim)

    def run(
        self,
        *,
        principal: str,
        method: str,
        key: str,
        fingerprint: bytes,
        handler: SyncHandler,
        wait: float = 0.0,
    ) -> tuple[bytes, bool]:
        """Run ``handler`` at most once per ``(principal, method, key)`` (a whole request).

        Returns ``(response_bytes, replayed)``. A handler exception releases the claim and
        propagates (a retry runs again); to store an error outcome, return bytes that encode
        it. The response is stored as a ``"grpc"`` :class:`StoredOutcome`. Raises
        :class:`~resilience.IdempotencyInProgressError`,
        :class:`~resilience.IdempotencyKeyReusedError`, :class:`~resilience.StoreError`.

        A gRPC server interceptor reads the ``idempotency-key`` metadata entry, takes the
        principal from its authentication context (never a constant), the full method name,
        and the serialized request as the fingerprint; the handler (a coroutine function for
        async servers) returns the serialized response. Map
        :class:`~resilience.IdempotencyInProgressError` to ``ABORTED`` (with
        ``grpc-retry-pushback-ms`` from ``retry_after``), ``IdempotencyKeyReusedError`` to
        ``FAILED_PRECONDITION``, ``StoreError`` to ``UNAVAILABLE`` and a not-retained replay
        (:class:`~resilience.IdempotencyConflictError`) to ``ABORTED``.
        """
        return _rpc.run(self, principal, method, key, fingerprint, handler, wait)

    # twin: end
