"""The machinery of a multi-window (or tiered) :class:`~resilience.RateLimiter`.

:class:`Windows` stands in for the one-window methods of :class:`~._buckets.Buckets` (the
limiter binds its methods over them at construction, so a one-window limiter's hot path is
untouched): in-process buckets of several windows, one store round trip per decision
(:class:`~._windows._TakeAllOp`), decisions listing every window, refunds to every window.

Tiers: with ``limits=`` (or ``rate=``) a callable, each key's limits are looked up once and
cached with its bucket (the global bucket is looked up as ``""``). :meth:`Windows.retier`
forgets a key's cached tier: its next check looks it up again and carries the bucket's state
over, window by window in order: each window keeps the permits it spent (its backlog is
rescaled to the new emission interval; warm-up tokens are capped at the new maximum), so a key
that used 1,000 of a free 10,000-a-day window has 99,000 left of a 100,000-a-day one; windows
the new tier adds start fresh, windows it lacks are dropped.

Example:
    >>> import resilience as rs
    >>> limiter = rs.RateLimiter("api", limits=[rs.Limit(1), rs.Limit(5, per=60)],
    ...     clock=rs.testing.FakeClock())
    >>> [limiter.try_acquire().allowed for _ in range(2)]
    [True, False]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from .._degraded import state_reset
from .._policy import Emitter
from ..errors import ConfigurationError, StoreError
from ..stores.base import StoreFullError
from ._decision import (
    Decision,
    LocalResult,
    MultiPermit,
    MultiReservation,
    Window,
    decision_new,
    permit_new,
)
from ._limits import Tier, TierFn, facts, tier_of
from ._table import KeyTable
from ._windows import _RefundAllOp, _TakeAllOp, refund_all, take_all, ttl_of

if TYPE_CHECKING:
    from ._buckets import Buckets

__all__ = ["Windows"]


_new_window = tuple.__new__  # a Window from its six fields, without NamedTuple's __new__


class Windows:
    """The decisions of a limiter with several windows or per-key tiers (see the module)."""

    def __init__(self, lim: Buckets, tier: Tier | None, tier_fn: TierFn | None) -> None:
        self.lim = lim
        self.tier = tier
        self.tier_fn = tier_fn
        self.tiers: dict[str | None, Tier] = {}
        #: key -> [params, flat state(, family)]; the global bucket apart (never evicted)
        self.entries = KeyTable(
            lim.max_keys,
            lim._table.policy,
            lambda e: ttl_of(e[1], 0.0, e[0]),
            lambda k: self.tiers.pop(k, None),  # the tier is cached with the bucket
        )
        self.glob: list[Any] | None = None
        self.local_share: float | None = getattr(lim, "local_share", None)
        vars(lim).update(
            _local=self.local,
            _via_store=self.via_store,
            _avia_store=self.avia_store,
            _decision=self.decision,
            _reservation=self.reservation,
            _refund_op=self.refund_op,
            _give_back_local=self.give_back_local,
        )

    def tier_for(self, key: str | None) -> Tier:
        """The key's tier: the fixed one, or the callable's answer cached for the key."""
        if self.tier is not None:
            return self.tier
        tier = self.tiers.get(key)
        if tier is None:
            fn: Any = self.tier_fn
            tier = tier_of(fn("" if key is None else key), self.local_share)
            if len(self.tiers) >= self.lim.max_keys:
                self.tiers.clear()  # looked up again on the next check: nothing is lost
            self.tiers[key] = tier
        return tier

    def retier(self, key: str | None) -> None:
        """Forget a key's cached tier (all keys when ``key`` is ``None``) (see the module)."""
        if key is None:
            self.tiers.clear()
        else:
            self.tiers.pop(key, None)

    def _cost(self, tier: Tier, cost: float) -> None:
        if cost > tier.max_cost:
            raise ConfigurationError(
                f"cost {cost!r} exceeds burst {tier.max_cost:g} of a window of rate limiter "
                f"{self.lim.name!r}: it could never be admitted (raise burst or split the call)"
            )

    def local(self, key: str | None, cost: float, max_wait: float, p: Any = None) -> Any:
        """Decide in process (``p`` not ``None``: this process's share, a store outage)."""
        tier = self.tier_for(key)
        self._cost(tier, cost)
        ps = tier.params if p is None else tier.local
        lim = self.lim
        with lim._lock:
            now = lim._clock.monotonic()
            table = self.entries
            if key is None:
                entry = self.glob
            else:
                entry = table.lookup(key)
                if entry is None:
                    retry = table.room(key, now)
                    if retry:
                        wins = tuple((0, 0.0, retry) for _ in ps)
                        zeros = (0.0,) * len(ps)
                        return (False, retry, zeros, zeros, wins, tier)
            state = None
            if entry is not None and ttl_of(entry[1], now, entry[0]) > 0:
                state = entry[1]  # a bucket full again is a new one (a store drops it)
            new, r = take_all(state, now, cost, max_wait, ps)
            if entry is not None:  # refused: the same state, in this tier's windows (as a store)
                entry[0], entry[1] = ps, new
            elif r[0]:
                if key is None:
                    self.glob = [ps, new]
                else:
                    table.add(key, [ps, new])
        return (*r, tier)

    # twin: async avia_store=via_store, _aapply=_apply
    async def avia_store(self, key: str | None, cost: float, max_wait: float, em: Emitter) -> Any:
        """Decide through the store, one round trip for every window (``None``: fail open)."""
        tier = self.tier_for(key)
        self._cost(tier, cost)
        lim = self.lim
        op = _TakeAllOp(lim._store_key(key), cost, max_wait, tier.params)
        try:
            result = await lim._aapply(op)
        except StoreFullError:
            return (False, lim.window or 1.0, 0.0, 0.0, 0, 0.0)
        except StoreError as exc:
            return lim._store_failed(exc, key, cost, max_wait, em)
        if op.reset:
            state_reset(lim.name, em, lim.listeners)
        return (*result, tier)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def via_store(self, key: str | None, cost: float, max_wait: float, em: Emitter) -> Any:
        """Decide through the store, one round trip for every window (``None``: fail open)."""
        tier = self.tier_for(key)
        self._cost(tier, cost)
        lim = self.lim
        op = _TakeAllOp(lim._store_key(key), cost, max_wait, tier.params)
        try:
            result = lim._apply(op)
        except StoreFullError:
            return (False, lim.window or 1.0, 0.0, 0.0, 0, 0.0)
        except StoreError as exc:
            return lim._store_failed(exc, key, cost, max_wait, em)
        if op.reset:
            state_reset(lim.name, em, lim.listeners)
        return (*result, tier)

    # twin: end

    def decision(self, r: Any, key: str | None, t0: float, waited: float = 0.0) -> Decision:
        """The :class:`Decision` of a multi-window result (every window in ``windows``)."""
        lim = self.lim
        if r is None or r[-1].__class__ is not Tier:  # failed open, or refused by the store
            limit = lim._limit
            ok = r is None
            retry = 0.0 if ok else round(r[1], 9)
            return decision_new(Decision, (ok, retry, limit, limit, 0.0, 0.0, None, ()))
        ok, wait, cts, takens, wins, tier = r
        quotas, spans = tier.quotas, tier.spans
        if r.__class__ is LocalResult:  # this process's share of each window (a store outage)
            quotas, spans = facts(tier.local)
        make = _new_window
        windows = tuple(
            [
                make(Window, (n, q, s, w[0], w[1], round(w[2], 9)))
                for n, q, s, w in zip(tier.names, quotas, spans, wins, strict=True)
            ]
        )
        tight = windows[0]
        for w in windows:
            if w[3] < tight[3]:  # the first with the fewest permits left
                tight = w
        permit: MultiPermit | None = None
        if ok and (any(cts) or any(takens)):
            permit = cast(MultiPermit, permit_new(MultiPermit))
            permit._owner = lim
            permit.key = key
            permit.cost_time = sum(cts)
            permit.taken = sum(takens)
            permit.cost_times = cts
            permit.takens = takens
            permit.ps = tier.params if r.__class__ is not LocalResult else tier.local
            permit.via_store = lim.store is not None and r.__class__ is not LocalResult
            permit.ends = tuple([t0 + w[1] for w in wins])
            permit.end = max(permit.ends)
            permit._refunded = False
        return decision_new(
            Decision,
            (
                ok,
                0.0 if ok else round(wait, 9),
                tight.remaining,
                tight.limit,
                tight.reset_after,
                round(waited, 9) if ok and waited else 0.0,
                permit,
                windows,
            ),
        )

    def reservation(self, key: str | None, r: Any, t0: float | None) -> MultiReservation:
        """What a refund of result ``r`` gives back (``t0``: when it was taken; ``None``:
        just now, all of it)."""
        cts = r[2]
        if t0 is not None:
            out = self.lim._outstanding
            cts = tuple(out(c, t0 + w[1]) for c, w in zip(cts, r[4], strict=True))
        ps = r[5].params if r.__class__ is not LocalResult else r[5].local
        return MultiReservation(key, cts, r[3], self.lim._via(r), ps)

    def claim(self, permit: MultiPermit) -> MultiReservation:
        """The reservation of a claimed multi-window permit."""
        out = self.lim._outstanding
        cts = tuple(out(c, e) for c, e in zip(permit.cost_times, permit.ends, strict=True))
        return MultiReservation(permit.key, cts, permit.takens, permit.via_store, permit.ps)

    def refund_op(self, res: MultiReservation) -> _RefundAllOp:
        """The store operation giving ``res`` back to every window."""
        return _RefundAllOp(self.lim._store_key(res.key), res.cost_times, res.takens, res.ps)

    def give_back_local(self, res: MultiReservation) -> bool:
        """Give ``res`` back to this process's buckets (every window it charged; windows a tier
        change added since are dropped, exactly as the store's refund does)."""
        lim = self.lim
        with lim._lock:
            entry = self.glob if res.key is None else self.entries.get(res.key)
            now = lim._clock.monotonic()
            if entry is not None and ttl_of(entry[1], now, entry[0]) > 0:
                # the windows charged (a tier change since drops the others, as on a store)
                entry[1] = refund_all(entry[1], now, res.cost_times, res.takens, res.ps)
                entry[0] = res.ps[: len(entry[1]) // 3]
        return True
