"""The limiter's decision machinery, shared by every entry point of :class:`RateLimiter`.

:class:`Buckets` holds the in-process buckets (one global bucket plus at most ``max_keys``
keyed ones, in a :class:`~._table.KeyTable`), asks the store instead when there is one (and
falls back per ``on_store_error`` when it fails), takes with a wait (pacing) or raises,
builds :class:`Decision` / :class:`Permit` and gives reservations back. Every number comes
from the pure core (:mod:`._core`).

Example:
    >>> import resilience as rs
    >>> limiter = rs.RateLimiter("api", rate=1, clock=rs.testing.FakeClock())
    >>> isinstance(limiter, Buckets), limiter.try_acquire().allowed
    (True, True)
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal, cast

from .._clock import Clock
from .._deadline import cap_to_deadline
from .._degraded import STORE_LOG, state_reset
from .._policy import Emitter, Policy
from ..errors import ConfigurationError, RateLimitedError, StoreError
from ..events import CallRejected, RateLimitWaited, StoreFailed, error_type
from ..stores.base import Store, StoreFullError, apply_soon
from ._core import fresh_at, new_state, refund, status, transition
from ._decision import (
    Decision,
    LocalResult,
    MultiPermit,
    Permit,
    Reservation,
    decision_new,
    permit_new,
)
from ._options import LimitParams
from ._store import _RefundOp, _TakeOp
from ._table import FullPolicy, KeyTable

__all__ = ["Buckets", "Result"]

_INF = math.inf

#: A check's outcome: ``(allowed, wait_or_retry_after, cost_time, taken, remaining,
#: reset_after)``; ``None`` where it may be means "the store failed, admit" (fail open).
Result = tuple[bool, float, float, float, int, float]


def _no_store(op: Any) -> Any:  # pragma: no cover - only called with a store
    raise AssertionError("rate limiter without a store asked for a round trip")


class Buckets(Policy):
    """The state and decisions behind :class:`~resilience.RateLimiter` (its base class)."""

    rate: float | None
    max_wait: float
    store: Store | None
    _key: Callable[..., str | None] | None
    max_keys: int
    on_store_error: Literal["open", "closed", "local"]
    params: LimitParams
    _local_params: LimitParams
    _clock: Clock

    def _init_buckets(self, full: FullPolicy) -> None:
        """The in-process state: the global bucket, the keyed ones, the lock."""
        now = self._clock.monotonic()
        self._tat, self._stored = new_state(now, self.params)
        p = self.params
        self._table = KeyTable(self.max_keys, full, lambda e: fresh_at(e[0], e[1], p))
        # looked up inline, the hot path of a keyed check (with families: never holds a key,
        # every check goes through the table, which keeps each family's order too)
        self._buckets = self._table.hot if self._table.fams is None else OrderedDict()
        self._lock = threading.Lock()
        self._em = Emitter(self.listeners, None, "")
        # the sync round trip (see _aapply for the async one); only called with a store
        self._apply: Callable[[Any], Any] = _no_store if self.store is None else self.store.apply
        self._limit = int(self.params.burst)
        self._max_cost = self.params.burst if self.rate else _INF

    @property
    def window(self) -> float:
        """Seconds a drained bucket takes to refill (``RateLimit-Policy: w=``)."""
        p = self.params
        return 0.0 if p.interval == _INF else p.burst * p.interval

    # (properties, not attributes: more instance attributes than CPython's shared-key dicts
    # hold would slow every attribute load of the hot path)
    @property
    def on_full(self) -> Literal["evict", "deny"]:
        """What a new key does when the key table is full: ``"evict"`` or ``"deny"``."""
        return self._table.policy[0]

    @property
    def family(self) -> Callable[[str], str] | None:
        """The key's family callable (``family=``), or ``None``."""
        return self._table.policy[1]

    @property
    def max_keys_per_family(self) -> int | None:
        """The most buckets one family may hold (``max_keys_per_family=``), or ``None``."""
        return self._table.policy[2]

    @property
    def evictions(self) -> int:
        """Keyed buckets evicted from the full in-process table while they still owed permits
        (their debt forgotten: see :mod:`resilience.ratelimit._table`), since construction.

        Example:
            >>> import resilience as rs
            >>> limiter = rs.RateLimiter("api", rate=1, per=60, max_keys=1,
            ...     clock=rs.testing.FakeClock())
            >>> [limiter.try_acquire(key=k).allowed for k in ("a", "b")], limiter.evictions
            ([True, True], 1)
        """
        windows = cast(Any, self)._windows
        return (self._table if windows is None else windows.entries).evicted

    def _check_cost(self, cost: object) -> float:
        if isinstance(cost, bool) or not isinstance(cost, int | float) or not cost >= 0:
            raise ConfigurationError(f"cost must be a number >= 0, got {cost!r}")
        if self.rate and cost > self._max_cost:
            raise ConfigurationError(
                f"cost {cost!r} exceeds burst {self._max_cost:g} of rate limiter "
                f"{self.name!r}: it could never be admitted (raise burst or split the call)"
            )
        return float(cost)

    def _local(
        self, key: str | None, cost: float, max_wait: float, p: LimitParams | None = None
    ) -> Result:
        """Decide in process: ``(allowed, wait_or_retry_after, cost_time, taken, remaining,
        reset_after)`` (with ``p``: the local share's parameters, during a store outage)."""
        if p is None:
            p = self.params
        lock = self._lock
        lock.acquire()
        try:
            now = self._clock.monotonic()
            if key is None:
                tat, stored = self._tat, self._stored
                ok, tat2, stored2, wait, ct = transition(tat, stored, now, cost, max_wait, p)
                if ok:
                    self._tat = tat2
                    self._stored = stored2
            else:
                buckets = self._buckets
                entry = buckets.get(key)
                if entry is not None:
                    buckets.move_to_end(key)
                else:
                    entry = self._table.lookup(key)
                if entry is None:
                    retry = self._table.room(key, now)
                    if retry:
                        return (False, retry, 0.0, 0.0, 0, 0.0)
                    tat, stored = new_state(now, p)
                else:
                    tat, stored = entry
                ok, tat2, stored2, wait, ct = transition(tat, stored, now, cost, max_wait, p)
                if ok:
                    if entry is None:
                        self._table.add(key, [tat2, stored2])
                    else:
                        entry[0] = tat2
                        entry[1] = stored2
        finally:
            lock.release()
        if ok:
            remaining, reset_after = status(tat2, now, p, stored2)
            return (True, wait, ct, stored - stored2, remaining, reset_after)
        remaining, reset_after = status(tat, now, p, stored)
        return (False, wait, 0.0, 0.0, remaining, reset_after)

    def _store_key(self, key: str | None) -> str:
        return f"rl:{self.name}" if key is None else f"rl:{self.name}:{key}"

    async def _aapply(self, op: Any) -> Any:
        """The async round trip: awaited when the store has ``aapply`` (else ``apply``)."""
        store: Any = self.store
        aapply = getattr(store, "aapply", None)
        if aapply is not None:
            return await aapply(op)
        return store.apply(op)

    # twin: async _avia_store=_via_store, _aapply=_apply
    async def _avia_store(
        self, key: str | None, cost: float, max_wait: float, em: Emitter
    ) -> Result | None:
        """Decide through the store; ``None`` means "store failed, admit" (fail open)."""
        op = _TakeOp(self._store_key(key), cost, max_wait, self.params)
        try:
            result: Result = await self._aapply(op)
        except StoreFullError:
            return (False, self.window or 1.0, 0.0, 0.0, 0, 0.0)
        except StoreError as exc:
            return self._store_failed(exc, key, cost, max_wait, em)
        if op.reset:
            state_reset(self.name, em, self.listeners)
        return result

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def _via_store(
        self, key: str | None, cost: float, max_wait: float, em: Emitter
    ) -> Result | None:
        """Decide through the store; ``None`` means "store failed, admit" (fail open)."""
        op = _TakeOp(self._store_key(key), cost, max_wait, self.params)
        try:
            result: Result = self._apply(op)
        except StoreFullError:
            return (False, self.window or 1.0, 0.0, 0.0, 0, 0.0)
        except StoreError as exc:
            return self._store_failed(exc, key, cost, max_wait, em)
        if op.reset:
            state_reset(self.name, em, self.listeners)
        return result

    # twin: end

    def _store_failed(
        self, exc: StoreError, key: str | None, cost: float, max_wait: float, em: Emitter
    ) -> Result | None:
        mode = self.on_store_error
        STORE_LOG.record(self.name, mode, f"{exc}")
        if em:
            em.emit(
                StoreFailed(**em.origin(self.name), decision=mode, error_type=error_type(exc) or "")
            )
        if mode == "open":
            return None
        if mode == "closed":
            return (False, self.window or 1.0, 0.0, 0.0, 0, 0.0)
        return cast(
            Result,
            LocalResult(self._local(key, cost, max_wait, self._local_params)),
        )

    # twin: async _agive_back=_give_back, _aapply=_apply
    async def _agive_back(self, res: Any) -> bool:
        """Return a reservation (a waiter gave up, a policy inside refused); ``False`` when the
        store failed (the slot simply stays consumed)."""
        if res.via_store:
            try:
                await self._aapply(self._refund_op(res))
            except StoreError:
                return False  # the store is failing anyway
            return True
        return self._give_back_local(res)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def _give_back(self, res: Any) -> bool:
        """Return a reservation (a waiter gave up, a policy inside refused); ``False`` when the
        store failed (the slot simply stays consumed)."""
        if res.via_store:
            try:
                self._apply(self._refund_op(res))
            except StoreError:
                return False  # the store is failing anyway
            return True
        return self._give_back_local(res)

    # twin: end

    def _refund_op(self, res: Any) -> Any:
        """The store operation giving reservation ``res`` back."""
        return _RefundOp(self._store_key(res.key), res.cost_time, res.taken, self.params)

    def _reservation(self, key: str | None, r: Any, t0: float | None) -> Any:
        """What a refund of admitted result ``r`` gives back (``t0``: when it was taken, so
        the part of its cost that elapsed since is kept; ``None``: just now, all of it)."""
        ct = r[2] if t0 is None else self._outstanding(r[2], t0 + r[5])
        return Reservation(key, ct, r[3], self._via(r))

    def _give_back_local(self, res: Any) -> bool:
        """:meth:`_give_back` in process: this limiter's own buckets, or (with a store) the
        local share it used while the store failed."""
        p = self._local_params
        with self._lock:
            now = self._clock.monotonic()
            if res.key is None:
                self._tat, self._stored = refund(
                    self._tat, self._stored, now, res.cost_time, res.taken, p
                )
            else:
                entry = self._table.get(res.key)
                if entry is not None:
                    entry[0], entry[1] = refund(
                        entry[0], entry[1], now, res.cost_time, res.taken, p
                    )
        return True

    def _give_back_soon(self, res: Any) -> None:
        """:meth:`_give_back` from async code: never awaited, never blocking the event loop."""
        if res.via_store:
            apply_soon(
                self.store, self._refund_op(res)
            )  # on failure the slot simply stays consumed
            return
        self._give_back(res)

    def _via(self, r: tuple[Any, ...]) -> bool:
        """Whether decision ``r``'s permits came from the store (not from the local fallback)."""
        return self.store is not None and type(r) is not LocalResult

    def _max_wait(self) -> float:
        """``max_wait`` capped by the current deadline (never sleep past it)."""
        mw = self.max_wait
        return cap_to_deadline(mw) if mw else mw

    def _rejected(self, retry_after: float, em: Emitter) -> RateLimitedError:
        ra: float | None = None if retry_after == _INF else round(retry_after, 9)
        if em:
            em.emit(CallRejected(**em.origin(self.name), reason="rate_limited", retry_after=ra))
        msg = (
            f"rate limiter {self.name!r}: limit reached, retry after {ra:.3f} s"
            if ra is not None
            else f"rate limiter {self.name!r}: rate is 0, every call is rejected"
        )
        exc = RateLimitedError(msg, policy=self.name, retry_after=ra)
        exc._chain = em.chain  # refusal(), inlined on this hot path
        return exc

    def _waited(self, wait: float, em: Emitter) -> None:
        if em:
            em.emit(RateLimitWaited(**em.origin(self.name), wait=wait))

    def _decision(
        self,
        r: Result | None,
        key: str | None,
        t0: float,
        waited: float = 0.0,
    ) -> Decision:
        limit = self._limit
        if r is None:  # failed open: nothing taken
            return decision_new(Decision, (True, 0.0, limit, limit, 0.0, 0.0, None, ()))
        ok, wait, ct, taken, remaining, reset_after = r
        if ok:
            permit: Permit | None = None
            if ct or taken:  # Permit(...) without its __init__ frame (this is the hot path)
                permit = permit_new(Permit)
                permit._owner = self
                permit.key = key
                permit.cost_time = ct
                permit.taken = taken
                permit.via_store = self.store is not None and r.__class__ is not LocalResult
                permit.end = t0 + reset_after
                permit._refunded = False
            return decision_new(
                Decision,
                (
                    True,
                    0.0,
                    remaining,
                    limit,
                    reset_after,
                    round(waited, 9) if waited else 0.0,
                    permit,
                    (),
                ),
            )
        return decision_new(
            Decision, (False, round(wait, 9), remaining, limit, reset_after, 0.0, None, ())
        )

    def _claim(self, decision: Decision | Permit) -> Any:
        """The reservation a refund gives back, claimed once (``None``: nothing to give)."""
        permit = decision if isinstance(decision, Permit) else getattr(decision, "permit", 0)
        if permit is None:
            return None
        if not isinstance(permit, Permit):
            raise ConfigurationError(
                f"refund() takes a Decision returned by this limiter, got {decision!r}"
            )
        if permit._owner is not self:
            raise ConfigurationError(
                f"this permit was taken from rate limiter {permit._owner.name!r}, not from "
                f"{self.name!r}: refund it there"
            )
        with self._lock:
            if permit._refunded:
                return None
            permit._refunded = True
        if permit.__class__ is MultiPermit:
            return cast(Any, self)._windows.claim(permit)
        ct = self._outstanding(permit.cost_time, permit.end)
        return Reservation(permit.key, ct, permit.taken, permit.via_store)

    def _outstanding(self, cost_time: float, end: float) -> float:
        """What a refund rolls the backlog back by: the part of a permit's ``cost_time`` that
        has not elapsed yet (the backlog is first come, first served: the permit's share of it
        ends at ``end``, and time that passed since is not given back twice)."""
        left = end - self._clock.monotonic()
        if left >= cost_time:
            return cost_time
        return left if left > 0 else 0.0

    # twin: async _acquire_async=_acquire_sync, _take_async=_take_sync
    async def _acquire_async(self, key: str | None, cost: float, em: Emitter) -> Decision:
        t0 = self._clock.monotonic()
        r = await self._take_async(key, cost, em)
        return self._decision(r, key, t0, 0.0 if r is None else r[1])

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def _acquire_sync(self, key: str | None, cost: float, em: Emitter) -> Decision:
        t0 = self._clock.monotonic()
        r = self._take_sync(key, cost, em)
        return self._decision(r, key, t0, 0.0 if r is None else r[1])

    # twin: end

    # twin: async _take_async=_take_sync, _avia_store=_via_store, _give_back_soon=_give_back
    async def _take_async(self, key: str | None, cost: float, em: Emitter) -> Result | None:
        """Take (waiting up to ``max_wait``) or raise: the admitted decision (``None``: failed
        open), whose ``cost_time`` and ``taken`` are what a refund gives back."""
        mw = self._max_wait()
        r: Result | None = (
            self._local(key, cost, mw)
            if self.store is None
            else await self._avia_store(key, cost, mw, em)
        )
        if r is None:
            return r
        if not r[0]:
            raise self._rejected(r[1], em)
        wait = r[1]
        if wait > 0:
            self._waited(wait, em)
            res = self._reservation(key, r, None)
            try:
                await self._clock.asleep(wait)
            except BaseException:
                # _give_back_soon: async code never awaits it (it may be cancelled again)
                self._give_back_soon(res)
                raise
        return r

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def _take_sync(self, key: str | None, cost: float, em: Emitter) -> Result | None:
        """Take (waiting up to ``max_wait``) or raise: the admitted decision (``None``: failed
        open), whose ``cost_time`` and ``taken`` are what a refund gives back."""
        mw = self._max_wait()
        r: Result | None = (
            self._local(key, cost, mw) if self.store is None else self._via_store(key, cost, mw, em)
        )
        if r is None:
            return r
        if not r[0]:
            raise self._rejected(r[1], em)
        wait = r[1]
        if wait > 0:
            self._waited(wait, em)
            res = self._reservation(key, r, None)
            try:
                self._clock.sleep(wait)
            except BaseException:
                # _give_back: async code never awaits it (it may be cancelled again)
                self._give_back(res)
                raise
        return r

    # twin: end
