"""The :class:`Idempotent` policy: the shell around :class:`IdempotencyRecords`."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

from .._clock import Clock
from .._policy import Emitter, Policy, refusal
from .._types import AsyncFn, Duration, SyncFn, seconds
from ..errors import (
    ConfigurationError,
    IdempotencyConflictError,
    IdempotencyInProgressError,
    IdempotencyKeyReusedError,
    IdempotencyOutcomeUnrecordedError,
    StoreError,
)
from ..events import CallRejected, IdempotentReplay, Listener, StoreFailed, error_type
from . import _renewer
from ._codec import Codec, JSONCodec
from ._options import (
    check_codec,
    check_key,
    check_namespace,
    check_store_errors,
    fingerprint_of,
    qualified,
)
from ._outcome import JSON_RESULT, StoredOutcome, encode_result
from ._records import Claim, IdempotencyRecords

__all__ = ["Idempotent"]

_log = logging.getLogger("resilience")
_JSON_AT = len(JSON_RESULT)


class Idempotent(Policy):
    """Run a function once per idempotency key; duplicates get the stored outcome.

    ``key(*args, **kwargs)`` returns the call's idempotency key (a non-empty ``str``; ``None``
    runs the call without protection). The first call with a key claims it, runs, and stores its
    result (encoded by ``codec``); a later call with the same key returns the stored result
    without running. While the first call runs, a duplicate raises
    :class:`~resilience.IdempotencyInProgressError` (with ``retry_after``), or with ``wait > 0``
    waits up to that long for the stored result (and runs itself if the first call released
    its claim meanwhile). The same key with different arguments (a different ``fingerprint``)
    raises :class:`~resilience.IdempotencyKeyReusedError`; the original record is untouched.

    A claim is a lease of ``lease`` seconds, renewed every ``lease / 3`` while the function
    runs; when its owner crashes or hangs, the claim expires and the next call takes over (runs
    again: at-least-once after a crash). A late result from the expired owner is discarded
    (fencing). Completed records are kept for ``ttl`` seconds after completion.

    Storing the outcome is retried after a store failure while the lease is held (at most one
    ``lease``), so a store blip never leaves a finished call to be run again. If it still
    cannot be recorded, the call raises :class:`~resilience.IdempotencyOutcomeUnrecordedError`
    with the function's result in ``.result`` (a duplicate after the lease would run again).

    Which outcomes are stored (``store_errors``):

    * results are always stored;
    * ``store_errors="never"`` (the default): an exception releases the claim and propagates,
      so a retry runs the function again (at-least-once for failures, like AWS Powertools).
      This is the safe default for functions whose failures leave no effect (transactions).
    * ``store_errors=(SomeError, ...)``: exceptions of these types are *outcomes*: stored and
      re-raised on replay (as the matching listed type, built from the same ``args``, with a
      note), at-most-once. List the errors that may follow a side effect (an ambiguous timeout
      after a payment was sent). Other exceptions, and ``BaseException`` such as cancellation,
      always release the claim.

    Records belong to the function that made them: they are namespaced by the policy ``name``
    and the function's module and qualified name (``"billing:create"``, the same in every
    process running the same code), so ``billing.create`` and ``refunds.create`` sharing a store
    never replay each other's results. Functions that must share records name the namespace
    explicitly (``namespace="orders.create"``). Message consumers use the message id as the key
    (see the module documentation of :mod:`resilience.idempotency`).

    Args:
        key: ``callable(*args, **kwargs) -> str | None`` giving the idempotency key.
        store: a :class:`~resilience.stores.Store` (default: a private
            ``MemoryStore(max_entries=10_000, on_full="evict_oldest")``); share a Redis store
            across processes.
        ttl: seconds a completed record is kept (default 24 h).
        lease: seconds a claim stays valid without renewal (default 60).
        wait: seconds a duplicate waits for the first call's outcome (default 0: raise).
        fingerprint: ``"args"`` (default: SHA-256 of the JSON of the arguments; a
            :class:`~resilience.ConfigurationError` at call time if they are not JSON), a
            ``callable(*args, **kwargs) -> str | bytes``, or ``None`` (do not compare).
        codec: encodes results for the store (default :class:`JSONCodec`; never pickle). A
            result the codec refuses is returned to the first caller and recorded as "not
            retained": duplicates raise :class:`~resilience.IdempotencyConflictError`.
        store_errors: ``"never"`` or a tuple of exception types (see above).
        on_store_error: ``"closed"`` (default: raise :class:`~resilience.StoreError`, the
            function does not run), ``"open"`` (run unprotected) or ``"local"`` (deduplicate
            within this process only).
        heartbeat: renew the lease while the function runs (default True).
        max_entries: the cap on records of the default memory store (default 10,000).
        on_full: when the default memory store holds ``max_entries`` records:
            ``"evict_oldest"`` (default: evict the oldest completed record, never an
            in-progress claim, emitting :class:`~resilience.events.RecordsEvicted`; a late
            duplicate of an evicted key runs again) or ``"deny_new"`` (refuse new keys with a
            :class:`~resilience.StoreError`, handled by ``on_store_error``).
        namespace: the records' namespace within this policy ``name`` (default ``None``: the
            decorated function's ``"module:qualname"``). Give the same namespace to functions
            that must share records; ``namespace=fn.__qualname__`` reads the records written
            before namespaces included the module.
        name: policy name (events, record namespace).
        clock: time source (waits, leases, TTLs of the default store).
        listeners: event listeners (:class:`~resilience.events.IdempotentReplay`,
            :class:`~resilience.events.CallRejected`, :class:`~resilience.events.StoreFailed`,
            :class:`~resilience.events.RecordsEvicted`).

    The first call returns the function's own result; replays return ``codec.decode`` of the
    stored one (with JSON, a tuple comes back as a list): return JSON-native values or pass a
    codec.

    Example:
        >>> import resilience as rs
        >>> charges = []
        >>> @rs.Idempotent(key=lambda order_id, amount: order_id, clock=rs.testing.FakeClock())
        ... def charge(order_id: str, amount: int) -> dict:
        ...     charges.append(amount)
        ...     return {"charge": len(charges), "amount": amount}
        >>> charge("order-1", 500), charge("order-1", 500)
        ({'charge': 1, 'amount': 500}, {'charge': 1, 'amount': 500})
        >>> charges
        [500]
        >>> charge("order-1", 900)
        Traceback (most recent call last):
        ...
        resilience.errors.IdempotencyKeyReusedError: idempotency key reused with different arguments
    """

    kind = "idempotency"

    def __init__(
        self,
        *,
        key: Callable[..., str | None],
        store: Any = None,
        ttl: Duration = 86400,
        lease: Duration = 60,
        wait: Duration = 0.0,
        fingerprint: Literal["args"] | Callable[..., str | bytes] | None = "args",
        codec: Codec | None = None,
        store_errors: Literal["never"] | type[BaseException] | tuple[type[BaseException], ...] = (
            "never"
        ),
        on_store_error: Literal["closed", "open", "local"] = "closed",
        heartbeat: bool = True,
        max_entries: int = 10_000,
        on_full: Literal["evict_oldest", "deny_new"] = "evict_oldest",
        namespace: str | None = None,
        name: str = "idempotency",
        clock: Clock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(name=name, listeners=listeners)
        self.namespace = check_namespace(namespace)
        self._key = check_key(key)
        self.wait = seconds(wait, "wait")
        self._fingerprint = fingerprint_of(fingerprint)
        self.codec: Codec = check_codec(codec)
        self.store_errors = check_store_errors(store_errors)
        self._error_types = {qualified(t): t for t in self.store_errors}
        self.records = IdempotencyRecords(
            store=store,
            ttl=ttl,
            lease=lease,
            namespace=f"idem:{self.name}",
            on_store_error=on_store_error,
            heartbeat=heartbeat,
            max_entries=max_entries,
            on_full=on_full,
            clock=clock,
        )

    def describe(self) -> dict[str, Any]:
        """Plain data describing the configuration."""
        return {
            "kind": self.kind,
            "name": self.name,
            "ttl": self.records.ttl,
            "lease": self.records.lease,
            "wait": self.wait,
            "store_errors": [t.__name__ for t in self.store_errors] or "never",
            "on_store_error": self.records.on_store_error,
            "on_full": self.records.on_full,
            "namespace": self.namespace,
        }

    # -- decisions shared by both wrappers ------------------------------------------------------
    def _scope(self, em: Emitter) -> str:
        """The records' namespace of one decorated function."""
        return self.namespace or em.function or em.operation or ""

    def _prepare(
        self, operation: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, str] | None:
        key: object = self._key(*args, **kwargs)
        if key is None:
            return None
        if not isinstance(key, str) or not key:
            raise ConfigurationError(
                f"idempotency key must be a non-empty str (or None), got {key!r}"
            )
        fp = self._fingerprint
        return (
            self.records.key(operation, key),
            "" if fp is None else fp(args, kwargs),
        )

    def _refuse(self, claim: Claim, em: Emitter) -> IdempotencyConflictError:
        """The conflict refusing a duplicate, stamped as this composition's own refusal (the
        function did not run: breakers and budgets around ignore it, outer limiters refund)."""
        if em:
            em.emit(
                CallRejected(
                    **em.origin(self.name),
                    reason="idempotency_conflict",
                    retry_after=claim.retry_after,
                )
            )
        if claim.status == "reused":
            return refusal(
                IdempotencyKeyReusedError(
                    "idempotency key reused with different arguments", policy=self.name
                ),
                em,
            )
        return refusal(
            IdempotencyInProgressError(
                "a call with this idempotency key is still running",
                policy=self.name,
                retry_after=claim.retry_after,
            ),
            em,
        )

    def _replay(self, claim: Claim, em: Emitter) -> Any:
        if em:
            em.emit(IdempotentReplay(**em.origin(self.name)))
        payload = claim.payload
        if payload is None:
            raise refusal(  # the function does not run: a refusal, like a conflict
                IdempotencyConflictError(
                    "the first call with this idempotency key completed but its result could "
                    "not be stored (refused by the codec, or over max_response_bytes: not "
                    "retained); it cannot be replayed",
                    policy=self.name,
                ),
                em,
            )
        try:
            if payload.startswith(JSON_RESULT) and type(self.codec) is JSONCodec:
                try:
                    return json.loads(payload[_JSON_AT:-1])
                except ValueError:
                    pass  # more than the value (a later v1 field?): read it whole below
            outcome = StoredOutcome.decode(payload)
            if outcome.kind == "result":
                return outcome.result(self.codec)
            cls = self._error_types[outcome.error_type] if outcome.kind == "error" else None
        except (ValueError, TypeError, KeyError) as exc:
            raise StoreError(f"idempotency record {claim.key!r} is unreadable") from exc
        if cls is None:
            raise StoreError(
                f"idempotency record {claim.key!r} holds a {outcome.kind!r} outcome, not a call's"
            )
        try:
            err = cls(*outcome.error_args)
        except Exception:
            err = cls()
        note = f"resilience: replayed the stored outcome of the first call ({outcome.raised})"
        err.add_note(note)
        raise err

    def _encode_result(self, result: Any) -> tuple[str | None, int | None]:
        """The stored outcome of a result and its size, or ``(None, None)``: not retained."""
        try:
            return encode_result(self.codec, result)
        except (TypeError, ValueError) as exc:
            _log.warning(
                "resilience: idempotent policy %r could not encode a result (%s); "
                "duplicates of this call will be refused, not replayed",
                self.name,
                exc,
            )
            return None, None

    def _error_outcome(self, exc: BaseException) -> str | None:
        """The payload storing ``exc``, or None to release the claim."""
        for t in self.store_errors:
            if isinstance(exc, t):
                try:
                    args = json.loads(json.dumps(list(exc.args)))
                except (TypeError, ValueError):
                    args = [str(exc)]
                return StoredOutcome(
                    "error",
                    error_type=qualified(t),
                    error_args=tuple(args),
                    raised=qualified(type(exc)),
                ).encode()
        return None

    def _check_recorded(self, recorded: bool | StoreError, outcome: Any, em: Emitter) -> None:
        """Tell the caller when a finished call's outcome could not be recorded.

        ``outcome`` is the result (raise :class:`~resilience.IdempotencyOutcomeUnrecordedError`
        carrying it) or the exception being re-raised as a stored outcome (a note is added).
        """
        if not isinstance(recorded, StoreError):
            return
        if em:
            em.emit(
                StoreFailed(
                    **em.origin(self.name),
                    decision="unrecorded",
                    error_type=error_type(recorded.__cause__ or recorded) or "StoreError",
                )
            )
        lease = self.records.lease
        if isinstance(outcome, BaseException):
            outcome.add_note(
                "resilience: this outcome could not be recorded (the idempotency store failed "
                f"while the lease was held); a duplicate after the lease ({lease:g} s) runs again"
            )
            return
        raise IdempotencyOutcomeUnrecordedError(
            f"the call succeeded but its outcome could not be recorded ({recorded}); the record "
            f"stays in progress and a duplicate after the lease ({lease:g} s) runs the function "
            "again: the result is in .result",
            result=outcome,
            policy=self.name,
        ) from recorded

    # -- the wrappers: written once, async; the sync twin is generated -----------------------
    # twin: async aclaim=claim, astart=start, arelease=release, acomplete_or_error=complete_or_error
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        records = self.records
        prepare, operation, wait, name = self._prepare, self._scope(em), self.wait, self.name

        async def idempotent_wrapper(*args: Any, **kwargs: Any) -> Any:
            prepared = prepare(operation, args, kwargs)
            if prepared is None:
                return await fn(*args, **kwargs)
            claim = await records.aclaim(prepared[0], prepared[1], wait=wait, em=em, policy=name)
            status = claim.status
            if status == "replay":
                return self._replay(claim, em)
            if status == "unprotected":
                return await fn(*args, **kwargs)
            if status != "claimed":
                raise self._refuse(claim, em)
            beat = _renewer.astart(records, claim)  # what the records' heartbeat methods call
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                outcome = self._error_outcome(exc)
                if outcome is None:
                    beat.stop()
                    await records.arelease(claim)
                else:
                    try:  # the heartbeat keeps the lease while the completion is retried
                        recorded = await records.acomplete_or_error(claim, outcome)
                    finally:
                        beat.stop()
                    self._check_recorded(recorded, exc, em)
                raise
            try:
                recorded = await records.acomplete_or_error(claim, *self._encode_result(result))
            finally:
                beat.stop()
            if recorded.__class__ is not bool:
                self._check_recorded(recorded, result, em)
            return result

        return idempotent_wrapper

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        records = self.records
        prepare, operation, wait, name = self._prepare, self._scope(em), self.wait, self.name

        def idempotent_wrapper(*args: Any, **kwargs: Any) -> Any:
            prepared = prepare(operation, args, kwargs)
            if prepared is None:
                return fn(*args, **kwargs)
            claim = records.claim(prepared[0], prepared[1], wait=wait, em=em, policy=name)
            status = claim.status
            if status == "replay":
                return self._replay(claim, em)
            if status == "unprotected":
                return fn(*args, **kwargs)
            if status != "claimed":
                raise self._refuse(claim, em)
            beat = _renewer.start(records, claim)  # what the records' heartbeat methods call
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                outcome = self._error_outcome(exc)
                if outcome is None:
                    beat.stop()
                    records.release(claim)
                else:
                    try:  # the heartbeat keeps the lease while the completion is retried
                        recorded = records.complete_or_error(claim, outcome)
                    finally:
                        beat.stop()
                    self._check_recorded(recorded, exc, em)
                raise
            try:
                recorded = records.complete_or_error(claim, *self._encode_result(result))
            finally:
                beat.stop()
            if recorded.__class__ is not bool:
                self._check_recorded(recorded, result, em)
            return result

        return idempotent_wrapper

    # twin: end
