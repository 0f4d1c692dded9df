"""The rate limiter policy: :class:`RateLimiter`, its keyed API and its refunds.

The math lives in :mod:`._core` (pure functions, mirrored in Lua), the options in
:mod:`._options`, the store operations in :mod:`._store`, the decision machinery in
:mod:`._buckets` and the decorator wrappers in :mod:`._wrappers`.

Example:
    >>> import resilience as rs
    >>> rs.RateLimiter("api", rate=3, clock=rs.testing.FakeClock()).try_acquire().remaining
    2
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

from .._clock import Clock, resolve_clock
from .._policy import Emitter
from .._types import AsyncFn, Duration, SyncFn
from ..errors import ConfigurationError
from ..events import Listener
from ..stores.base import Store
from ._buckets import Buckets, Result
from ._decision import Decision, Permit
from ._limits import Limit, Limits, Tier, TierFn, tier_of
from ._options import options
from ._peek import apeek, peek
from ._table import full_policy
from ._tiered import Windows
from ._wrappers import wrap_async, wrap_sync

__all__ = ["RateLimiter"]

_INF = math.inf


def _windows_of(
    rate: object,
    limits: object,
    per: Duration,
    burst: float | None,
    warmup: Duration | None,
    cold_factor: float,
) -> tuple[object | None, TierFn | None]:
    """``(fixed limits, tier callable)`` from ``rate=`` / ``limits=`` (both ``None``: one window,
    ``rate`` / ``per`` / ``burst``)."""
    if rate is not None and limits is not None:
        raise ConfigurationError("give rate= (with per=, burst=...) or limits=, not both")
    if rate is None and limits is None:
        raise ConfigurationError("give rate= (permits per `per` seconds) or limits=")
    if callable(rate) or limits is not None:
        if (per, burst, warmup, cold_factor) != (1.0, None, None, 3.0):
            raise ConfigurationError(
                "per=, burst=, warmup= and cold_factor= are options of each rs.Limit when the "
                "limits are given with limits= (or as a tier callable)"
            )
        spec = rate if callable(rate) else limits
        if callable(spec):
            return None, cast(TierFn, spec)
        return tier_of(spec, None).limits, None  # validated here
    return None, None


def _describe(w: Limit) -> dict[str, Any]:
    return {
        "rate": w.rate,
        "per": w.per,
        "burst": w.params.burst,
        "warmup": w.warmup,
        "cold_factor": w.cold_factor,
        "name": w.name,
    }


class RateLimiter(Buckets):
    """Limit calls to ``rate`` permits per ``per`` seconds (GCRA), with warm-up and pacing.

    As a decorator (or in a :class:`resilience.Pipeline`) each call takes one permit from the
    global bucket, or from the bucket of ``key(*args, **kwargs)`` when ``key=`` is given. Keyed
    checks: :meth:`try_acquire` (never waits), :meth:`acquire` / :meth:`aacquire` (wait up to
    ``max_wait``, else raise :class:`~resilience.RateLimitedError`).

    A call whose permit is not available within ``max_wait`` (and before the current
    :func:`resilience.deadline`) is rejected at once, is never charged, and raises
    :class:`~resilience.RateLimitedError` with ``retry_after``: the exact seconds after which
    the same call would be admitted. With ``max_wait > 0`` an admitted call *reserves* its slot
    (later callers queue behind it) and sleeps on the clock until the slot; a waiter that is
    cancelled (or interrupted) gives its reservation back.

    A refused call spends nothing: when a policy *inside* the limiter (a second limiter, a
    bulkhead, an open breaker, in the same :class:`resilience.Pipeline` or stacked on the same
    function) refuses the call with a :class:`~resilience.RejectedError`, the permits it took
    here are refunded: the bucket's backlog rolls back by what is left of the call's cost
    (never below "now", so time that already passed is not given back twice; other calls'
    permits are untouched), and a warm-up limiter gets its stored tokens back. With a store
    this is one more round trip. Failures, timeouts and a ``RejectedError`` raised by the
    protected function itself keep the permit: the call did run. Callers outside a composition
    that took permits with :meth:`try_acquire` / :meth:`acquire` give them back with
    :meth:`refund` / :meth:`arefund` (e.g. ``RateLimitMiddleware``, when a policy further in
    refused the request).

    Memory: in-process keyed state holds at most ``max_keys`` buckets. When the table is full,
    a new key first takes the place of a bucket that is full again (idle long enough: nothing
    is lost); else, with ``on_full="evict"`` (the default), of the coldest bucket: keys seen
    once are evicted before keys in repeated use, so a flood of distinct keys (a scraper
    rotating IDs) never evicts a key in steady use, which keeps its exact rate. An evicted
    bucket's debt is forgotten (at most one burst for a key that went unused meanwhile); with
    ``on_full="deny"`` a new key is refused instead (``retry_after`` = time until the first
    bucket can be dropped) and nothing is ever forgotten. ``family=`` with
    ``max_keys_per_family=`` caps what one family of keys (a tenant, one scraper's prefix) may
    hold: a new key of a full family replaces that family's coldest bucket, never another's.
    :mod:`resilience.ratelimit._table` details the policy.

    Args:
        name: the limiter's name (events, metrics, store keys).
        rate: permits per ``per`` seconds (``0`` rejects every call of non-zero cost).
        per: the period in seconds (float or timedelta).
        burst: the bucket size in permits; default ``max(1, rate)``. ``burst=1`` with
            ``max_wait > 0`` is uniform pacing.
        warmup: seconds of saturation a cold limiter takes to reach ``rate`` (Sentinel/Guava
            warm-up); ``None`` disables warm-up.
        cold_factor: a cold limiter admits ``rate / cold_factor`` (must be > 1).
        max_wait: seconds a call may wait for its slot (0: reject at once).
        store: a :class:`resilience.stores.Store` sharing state (e.g. Redis); ``None`` keeps
            the state in this process.
        key: for decorator use, a callable receiving the call's ``*args, **kwargs`` and
            returning the bucket key (``None``: the global bucket).
        max_keys: the cap on in-process keyed buckets.
        on_full: what a new key does when the table is full of active buckets: ``"evict"``
            the coldest (the default) or ``"deny"`` (refused) (see Memory above).
        family: ``callable(key) -> str``, the key's family (e.g. its tenant or prefix), with
            ``max_keys_per_family``.
        max_keys_per_family: the most buckets one family may hold (at most ``max_keys``).
        on_store_error: ``"open"`` (admit; the default), ``"closed"`` (reject) or ``"local"``
            (decide with this process's own buckets, sized to its share of the limit) when the
            store fails. Counted by a :class:`~resilience.events.StoreFailed` event.
        instances: with a store and ``on_store_error="local"``, how many processes share the
            limit: during an outage each process enforces ``rate / instances`` (and ``burst /
            instances``, at least one permit), so the fleet as a whole stays near the limit.
        local_share: the same as a fraction (``1 / instances``) of the limit, in ``(0, 1]``.
            ``"local"`` with a store needs one of the two.
        clock: time source; waits sleep on it.
        listeners: event listeners.

    Example:
        >>> import resilience as rs
        >>> clock = rs.testing.FakeClock()
        >>> limiter = rs.RateLimiter("api", rate=2, per=1.0, clock=clock)
        >>> @limiter
        ... def ping() -> str:
        ...     return "pong"
        >>> ping(), ping()
        ('pong', 'pong')
        >>> try:
        ...     ping()
        ... except rs.RateLimitedError as exc:
        ...     exc.retry_after
        0.5
    """

    kind = "rate_limiter"

    def __init__(
        self,
        name: str,
        *,
        rate: float | TierFn | None = None,
        limits: Limits | TierFn | None = None,
        per: Duration = 1.0,
        burst: float | None = None,
        warmup: Duration | None = None,
        cold_factor: float = 3.0,
        max_wait: Duration = 0.0,
        store: Store | None = None,
        key: Callable[..., str | None] | None = None,
        max_keys: int = 100_000,
        on_full: Literal["evict", "deny"] = "evict",
        family: Callable[[str], str] | None = None,
        max_keys_per_family: int | None = None,
        on_store_error: Literal["open", "closed", "local"] = "open",
        instances: int | None = None,
        local_share: float | None = None,
        clock: Clock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(name=name, listeners=listeners)
        fixed, tier_fn = _windows_of(rate, limits, per, burst, warmup, cold_factor)
        if fixed is not None or tier_fn is not None:
            rate = 0.0  # the windows' own options are validated with them
        o = options(
            rate=cast(float, rate),
            per=per,
            burst=burst,
            warmup=warmup,
            cold_factor=cold_factor,
            max_wait=max_wait,
            store=store,
            key=key,
            max_keys=max_keys,
            on_store_error=on_store_error,
            instances=instances,
            local_share=local_share,
        )
        self.rate = o.rate
        self.per = o.per
        self.burst = o.burst
        self.warmup = o.warmup
        self.cold_factor = o.cold_factor
        self.max_wait = o.max_wait
        self.store = o.store
        self._key = o.key
        self.max_keys = o.max_keys
        full = full_policy(on_full, family, max_keys_per_family, o.max_keys)
        self.on_store_error = o.on_store_error
        self.local_share = o.local_share
        self._clock = resolve_clock(clock)
        self.params = o.params
        self._local_params = o.local_params
        self.limits: tuple[Limit, ...] | TierFn | None = None
        self._windows: Windows | None = None
        if fixed is None and tier_fn is None:
            self._init_buckets(full)
            return
        tier = None if fixed is None else tier_of(fixed, self.local_share)
        self.limits = tier_fn or cast(Tier, tier).limits
        if tier is not None:  # the facts of the tightest window (the first with the least burst)
            first = min(range(len(tier.params)), key=lambda i: tier.params[i].burst)
            w = tier.limits[first]
            self.rate, self.per, self.burst = w.rate, cast(float, w.per), w.burst
            self.warmup, self.cold_factor = cast(float | None, w.warmup), w.cold_factor
            self.params = self._local_params = tier.params[first]
        else:
            self.rate = None
        self._init_buckets(full)
        self._max_cost = _INF if tier is None else tier.max_cost
        self._windows = Windows(self, tier, tier_fn)

    def retier(self, key: str | None = None) -> None:
        """Forget ``key``'s cached tier (every key's when ``None``): its next check asks the
        tier callable again and keeps the bucket's state, window by window in order: each
        window keeps the permits it spent (its backlog is rescaled to the new rate; warm-up
        tokens are capped at the new maximum), so an upgrade takes effect at once and nothing
        spent is forgotten; windows the new tier adds start fresh, those it lacks are dropped.

        Example:
            >>> import resilience as rs
            >>> tiers = {"free": rs.Limit(1, per=60), "pro": rs.Limit(100, per=60)}
            >>> plan = {"alice": "free"}
            >>> limiter = rs.RateLimiter("api", limits=lambda key: tiers[plan[key]],
            ...     clock=rs.testing.FakeClock())
            >>> limiter.try_acquire(key="alice").allowed, limiter.try_acquire(key="alice").allowed
            (True, False)
            >>> plan["alice"] = "pro"
            >>> limiter.retier("alice")
            >>> limiter.try_acquire(key="alice").allowed
            True
        """
        if self._windows is not None:
            self._windows.retier(key)

    # -- public facts -------------------------------------------------------------------------
    @property
    def quota(self) -> int:
        """Permits per window (``RateLimit-Policy: q=``): the bucket size."""
        return self._limit

    def describe(self) -> dict[str, Any]:
        """Plain data describing the configuration."""
        p = self.params
        if self._windows is not None:
            return {
                "kind": self.kind,
                "name": self.name,
                "limits": (
                    [_describe(w) for w in self.limits]
                    if isinstance(self.limits, tuple)
                    else "per key"
                ),
                "max_wait": self.max_wait,
                "store": None if self.store is None else type(self.store).__name__,
                "local_share": self.local_share,
            }
        return {
            "kind": self.kind,
            "name": self.name,
            "rate": self.rate,
            "per": self.per,
            "burst": p.burst,
            "warmup": self.warmup,
            "cold_factor": self.cold_factor,
            "max_wait": self.max_wait,
            "warning_tokens": p.warning_tokens,
            "max_tokens": p.max_tokens,
            "store": None if self.store is None else type(self.store).__name__,
            "local_share": self.local_share,
        }

    # -- refunds (callers outside a composition) ------------------------------------------------
    # twin: async arefund=refund, _agive_back=_give_back
    async def arefund(self, decision: Decision | Permit) -> bool:
        """Give back what an admitted check took, when the work it admitted was refused elsewhere.

        For callers that take permits themselves (:meth:`try_acquire`, :meth:`acquire`) and
        then learn the work never ran, e.g. a policy further in refused it (inside a
        composition the limiter refunds on its own). The bucket's backlog rolls back by the
        check's own cost, never below "now" (time that passed is not handed out twice; permits
        taken since stay taken) and a warm-up limiter gets its stored tokens back: never more
        than the check took. With a store this is one round trip, to the store the permits
        came from (awaited by the async variant). A decision is refunded at most once.

        Returns:
            ``True`` when the permits were given back; ``False`` when there was nothing to give
            (the decision was refused, took nothing, or was already refunded) or the store
            failed (the permits stay spent).

        Raises:
            ConfigurationError: ``decision`` did not come from this limiter.

        Example (the async variant is awaited the same way):
            >>> import resilience as rs
            >>> limiter = rs.RateLimiter("ip", rate=1, per=60, clock=rs.testing.FakeClock())
            >>> d = limiter.try_acquire(key="10.0.0.1")
            >>> limiter.refund(d), limiter.refund(d)  # the second one gives nothing
            (True, False)
            >>> limiter.try_acquire(key="10.0.0.1").allowed
            True
        """
        res = self._claim(decision)
        return res is not None and await self._agive_back(res)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def refund(self, decision: Decision | Permit) -> bool:
        """Give back what an admitted check took, when the work it admitted was refused elsewhere.

        For callers that take permits themselves (:meth:`try_acquire`, :meth:`acquire`) and
        then learn the work never ran, e.g. a policy further in refused it (inside a
        composition the limiter refunds on its own). The bucket's backlog rolls back by the
        check's own cost, never below "now" (time that passed is not handed out twice; permits
        taken since stay taken) and a warm-up limiter gets its stored tokens back: never more
        than the check took. With a store this is one round trip, to the store the permits
        came from (awaited by the async variant). A decision is refunded at most once.

        Returns:
            ``True`` when the permits were given back; ``False`` when there was nothing to give
            (the decision was refused, took nothing, or was already refunded) or the store
            failed (the permits stay spent).

        Raises:
            ConfigurationError: ``decision`` did not come from this limiter.

        Example (the async variant is awaited the same way):
            >>> import resilience as rs
            >>> limiter = rs.RateLimiter("ip", rate=1, per=60, clock=rs.testing.FakeClock())
            >>> d = limiter.try_acquire(key="10.0.0.1")
            >>> limiter.refund(d), limiter.refund(d)  # the second one gives nothing
            (True, False)
            >>> limiter.try_acquire(key="10.0.0.1").allowed
            True
        """
        res = self._claim(decision)
        return res is not None and self._give_back(res)

    # twin: end

    # -- keyed API ----------------------------------------------------------------------------
    # twin: async atry_acquire=try_acquire, _avia_store=_via_store
    async def atry_acquire(self, key: str | None = None, cost: float = 1) -> Decision:
        """Take ``cost`` permits from ``key``'s bucket if available now (never waits).

        With a store the async variant awaits the round trip instead of blocking the event loop.

        Raises:
            ConfigurationError: ``cost`` exceeds ``burst`` (nothing is charged).

        Example (the async variant is awaited the same way):
            >>> import resilience as rs
            >>> limiter = rs.RateLimiter("api", rate=10, clock=rs.testing.FakeClock())
            >>> limiter.try_acquire(key="bob", cost=10).remaining
            0
            >>> d = limiter.try_acquire(key="bob")
            >>> d.allowed, d.retry_after
            (False, 0.1)
        """
        if cost.__class__ is not int or not 0 <= cost <= self._max_cost:  # type: ignore[unreachable, unused-ignore]
            cost = self._check_cost(cost)
        t0 = self._clock.monotonic()
        r: Result | None
        if self.store is None:
            r = self._local(key, cost, 0.0)
        else:
            r = await self._avia_store(key, cost, 0.0, self._em)
        if r is not None and not r[0] and self._em:
            self._rejected(r[1], self._em)
        return self._decision(r, key, t0)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def try_acquire(self, key: str | None = None, cost: float = 1) -> Decision:
        """Take ``cost`` permits from ``key``'s bucket if available now (never waits).

        With a store the async variant awaits the round trip instead of blocking the event loop.

        Raises:
            ConfigurationError: ``cost`` exceeds ``burst`` (nothing is charged).

        Example (the async variant is awaited the same way):
            >>> import resilience as rs
            >>> limiter = rs.RateLimiter("api", rate=10, clock=rs.testing.FakeClock())
            >>> limiter.try_acquire(key="bob", cost=10).remaining
            0
            >>> d = limiter.try_acquire(key="bob")
            >>> d.allowed, d.retry_after
            (False, 0.1)
        """
        if cost.__class__ is not int or not 0 <= cost <= self._max_cost:  # type: ignore[unreachable, unused-ignore]
            cost = self._check_cost(cost)
        t0 = self._clock.monotonic()
        r: Result | None
        if self.store is None:
            r = self._local(key, cost, 0.0)
        else:
            r = self._via_store(key, cost, 0.0, self._em)
        if r is not None and not r[0] and self._em:
            self._rejected(r[1], self._em)
        return self._decision(r, key, t0)

    # twin: end

    # twin: async aremaining=remaining, apeek=peek
    async def aremaining(self, key: str | None = None) -> int:
        """The whole permits ``key``'s bucket would admit now, read without charging.

        Side-effect free: nothing is taken, no bucket is created (in process or in the
        store), no event is emitted, so later decisions are exactly those without the call. A
        multi-window limiter answers for its tightest window. With a store it is one round
        trip (awaited by the async variant); when the store fails, the answer is what a check
        would get per ``on_store_error``: the full quota (``"open"``), 0 (``"closed"``), or
        this process's local share (``"local"``).

        Example (the async variant is awaited the same way):
            >>> import resilience as rs
            >>> limiter = rs.RateLimiter("api", rate=5, per=60, clock=rs.testing.FakeClock())
            >>> limiter.remaining(key="ann"), limiter.try_acquire(key="ann", cost=2).remaining
            (5, 3)
            >>> limiter.remaining(key="ann"), limiter.remaining(key="ann")
            (3, 3)
        """
        return await apeek(self, key)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def remaining(self, key: str | None = None) -> int:
        """The whole permits ``key``'s bucket would admit now, read without charging.

        Side-effect free: nothing is taken, no bucket is created (in process or in the
        store), no event is emitted, so later decisions are exactly those without the call. A
        multi-window limiter answers for its tightest window. With a store it is one round
        trip (awaited by the async variant); when the store fails, the answer is what a check
        would get per ``on_store_error``: the full quota (``"open"``), 0 (``"closed"``), or
        this process's local share (``"local"``).

        Example (the async variant is awaited the same way):
            >>> import resilience as rs
            >>> limiter = rs.RateLimiter("api", rate=5, per=60, clock=rs.testing.FakeClock())
            >>> limiter.remaining(key="ann"), limiter.try_acquire(key="ann", cost=2).remaining
            (5, 3)
            >>> limiter.remaining(key="ann"), limiter.remaining(key="ann")
            (3, 3)
        """
        return peek(self, key)

    # twin: end
    # twin: async aacquire=acquire, _acquire_async=_acquire_sync
    async def aacquire(self, key: str | None = None, cost: float = 1) -> Decision:
        """Take ``cost`` permits, sleeping up to ``max_wait`` for them (the async variant
        awaits the slot on the clock; cancelling it gives the slot back), or raise.

        Raises:
            RateLimitedError: no slot within ``max_wait`` (or before the current deadline).
            ConfigurationError: ``cost`` exceeds ``burst``.

        Example (the async variant is awaited the same way):
            >>> import resilience as rs
            >>> clock = rs.testing.FakeClock()
            >>> pacer = rs.RateLimiter("pacer", rate=4, burst=1, max_wait=1.0, clock=clock)
            >>> [pacer.acquire().waited for _ in range(3)], clock.monotonic()
            ([0.0, 0.25, 0.25], 0.5)
        """
        return await self._acquire_async(key, self._check_cost(cost), self._em)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def acquire(self, key: str | None = None, cost: float = 1) -> Decision:
        """Take ``cost`` permits, sleeping up to ``max_wait`` for them (the async variant
        awaits the slot on the clock; cancelling it gives the slot back), or raise.

        Raises:
            RateLimitedError: no slot within ``max_wait`` (or before the current deadline).
            ConfigurationError: ``cost`` exceeds ``burst``.

        Example (the async variant is awaited the same way):
            >>> import resilience as rs
            >>> clock = rs.testing.FakeClock()
            >>> pacer = rs.RateLimiter("pacer", rate=4, burst=1, max_wait=1.0, clock=clock)
            >>> [pacer.acquire().waited for _ in range(3)], clock.monotonic()
            ([0.0, 0.25, 0.25], 0.5)
        """
        return self._acquire_sync(key, self._check_cost(cost), self._em)

    # twin: end

    # -- policy wrappers (see ._wrappers) -----------------------------------------------------
    # twin: async
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        """``fn`` taking one permit per call (the policy hook; see :mod:`._wrappers`)."""
        return wrap_async(self, fn, em)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        """``fn`` taking one permit per call (the policy hook; see :mod:`._wrappers`)."""
        return wrap_sync(self, fn, em)

    # twin: end
