"""The table of a limiter's in-process keyed buckets, and what a new key does when it is full.

At most ``max_keys`` keyed buckets live in process. A new key finds room in this order, each
step O(1):

1. a bucket that is full again (idle long enough) is dropped for free: it is
   indistinguishable from a brand-new one, nothing is forgotten (the coldest bucket of each
   segment is looked at; ``"deny"`` then sweeps the whole table, at most once per instant a
   bucket gets full again);
2. with ``on_full="evict"`` (the default) the coldest bucket is evicted: the least recently
   used *probationary* one (a key seen once since it entered the table), else the least
   recently used of all;
3. with ``on_full="deny"`` the new key is refused instead (``retry_after``: until the first
   bucket is full again); every active key keeps its state.

Keys are kept in two least-recently-used segments (a segmented LRU): a new key enters on
*probation*; its second call while still in the table promotes it to the *protected* segment
(at most 4/5 of the table; when that overflows, its least recently used key goes back to
probation). Eviction takes probationary keys first, so a flood of distinct keys each used once
(a scraper rotating IDs), however fast, only ever evicts other one-shot keys: keys in steady
use keep their buckets, hence their exact rate. While the table is full, probation is never
empty (the protected segment holds at most 4/5 of it), so a protected key leaves the table
only after more than ``4/5 * max_keys`` other keys were each called at least twice since its
own last call.

The trade-off of eviction: an evicted bucket's debt is forgotten, its key's next call finds a
full bucket. That is at most one burst, for a key that went unused while the table turned
over: a key called once owes at most that call, a protected one is only evicted after the
repeat traffic above. An attacker rotating keys gains
nothing from it that a fresh key would not give anyway (every new key starts full);
``on_full="deny"`` never forgets debt, at the price of refusing new keys (legitimate ones
included) while the table is full of active buckets.

Families (``family=`` a callable from key to a family name, with ``max_keys_per_family=``):
one family (one tenant, one scraper's prefix) holds at most that many buckets. A new key of a
full family takes the place of its family's coldest bucket (with ``on_full="deny"``: only of
one full again, else the key is refused), never another family's. That is what bounds a
flood of keys each called more than once (promoted, they would churn the protected segment).

Example:
    >>> import resilience as rs
    >>> clock = rs.testing.FakeClock()
    >>> limiter = rs.RateLimiter("api", rate=1, per=60, max_keys=2, clock=clock)
    >>> [limiter.try_acquire(key=k).allowed for k in ("alice", "alice", "bob", "eve")]
    [True, False, True, True]
    >>> limiter.try_acquire(key="alice").allowed  # protected: "bob" (seen once) was evicted
    False
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

from .._types import positive_int
from ..errors import ConfigurationError

__all__ = ["FullPolicy", "KeyTable", "full_policy"]

_INF = math.inf

FullPolicy = tuple[Literal["evict", "deny"], Callable[[str], str] | None, int | None]


def full_policy(
    on_full: object, family: object, max_keys_per_family: object, max_keys: int
) -> FullPolicy:
    """Validate ``on_full=``, ``family=`` and ``max_keys_per_family=``.

    Example:
        >>> full_policy("deny", None, None, 10)
        ('deny', None, None)
        >>> full_policy("evict", None, 20, 10)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        resilience.errors.ConfigurationError: max_keys_per_family needs family= (a callable ...)
    """
    if on_full not in ("evict", "deny"):
        raise ConfigurationError(f"on_full must be 'evict' or 'deny', got {on_full!r}")
    if family is not None and not callable(family):
        raise ConfigurationError(
            f"family must be a callable from key to family name, got {family!r}"
        )
    cap: int | None = None
    if max_keys_per_family is not None:
        if family is None:
            raise ConfigurationError(
                "max_keys_per_family needs family= (a callable from key to family name)"
            )
        cap = positive_int(max_keys_per_family, "max_keys_per_family", maximum=max_keys)
    elif family is not None:
        raise ConfigurationError("family= needs max_keys_per_family= (the cap of each family)")
    return (on_full, family, cap)


class KeyTable:
    """The keyed buckets of one limiter, under its lock; ``fresh(entry)`` is the instant a
    bucket is full again."""

    __slots__ = (
        "_fam",
        "evict",
        "evicted",
        "family",
        "family_of",
        "fams",
        "fresh",
        "hot",
        "hot_cap",
        "max_keys",
        "new",
        "next_sweep",
        "on_drop",
        "per_family",
        "policy",
    )

    def __init__(
        self,
        max_keys: int,
        policy: FullPolicy,
        fresh: Callable[[list[Any]], float],
        on_drop: Callable[[str], object] | None = None,
    ) -> None:
        #: protected keys (seen at least twice), least recently used first
        self.hot: OrderedDict[str, list[Any]] = OrderedDict()
        #: probationary keys (seen once), least recently used first
        self.new: OrderedDict[str, list[Any]] = OrderedDict()
        self.max_keys = max_keys
        self.policy = policy
        self.hot_cap = max(1, max_keys * 4 // 5)
        self.evict = policy[0] == "evict"
        self.family = policy[1]
        self.per_family = policy[2]
        #: family -> its keys, least recently used first (``None``: no families)
        self.fams: dict[str, OrderedDict[str, None]] | None = None if policy[1] is None else {}
        self.fresh = fresh
        self.on_drop = on_drop
        self.next_sweep = -_INF
        #: buckets evicted while still owing permits (their debt forgotten), since creation
        self.evicted = 0
        self._fam = ""
        #: key -> its family (with families)
        self.family_of: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.hot) + len(self.new)

    def get(self, key: str) -> list[Any] | None:
        """The key's bucket, its recency untouched (a refund)."""
        entry = self.hot.get(key)
        return entry if entry is not None else self.new.get(key)

    def lookup(self, key: str) -> list[Any] | None:
        """The key's bucket, marked used; promotes a probationary key on its second call;
        ``None``: the key is not in the table."""
        entry = self.hot.get(key)
        if entry is None:
            entry = self.new.pop(key, None)
            if entry is None:
                return None
            hot = self.hot
            hot[key] = entry
            if len(hot) > self.hot_cap:  # the coldest protected key goes back to probation
                k, e = hot.popitem(last=False)
                self.new[k] = e
        else:
            self.hot.move_to_end(key)
        if self.fams is not None:
            self.fams[self.family_of[key]].move_to_end(key)
        return entry

    def room(self, key: str, now: float) -> float:
        """Make room for new key ``key``: ``0.0`` when it fits now (then :meth:`add` it), else
        the seconds until it could (``on_full="deny"``)."""
        fams = self.fams
        if fams is not None:
            fam = self._fam = self.family(key)  # type: ignore[misc]
            keys = fams.get(fam)
            if keys is not None and len(keys) >= self.per_family:  # type: ignore[operator]
                coldest = next(iter(keys))
                at = self.fresh(self.get(coldest))  # type: ignore[arg-type]
                if at > now and not self.evict:
                    return max(1e-9, at - now)
                self._drop(coldest, at > now)
                return 0.0
        if len(self.hot) + len(self.new) < self.max_keys:
            return 0.0
        for seg in (self.new, self.hot):  # a bucket full again goes for free
            if seg:
                k = next(iter(seg))
                if self.fresh(seg[k]) <= now:
                    self._drop(k, False)
                    return 0.0
        if not self.evict:
            return self._sweep(now)
        seg = self.new or self.hot
        self._drop(next(iter(seg)), True)
        return 0.0

    def add(self, key: str, entry: list[Any]) -> None:
        """Insert new key ``key`` (after :meth:`room` gave ``0.0``), on probation."""
        fams = self.fams
        if fams is not None:
            fam = self.family_of[key] = self._fam
            keys = fams.get(fam)
            if keys is None:
                keys = fams[fam] = OrderedDict()
            keys[key] = None
        self.new[key] = entry

    def _drop(self, key: str, owing: bool) -> None:
        entry = self.hot.pop(key, None)
        if entry is None:
            entry = self.new.pop(key)
        if owing:
            self.evicted += 1
        fams = self.fams
        if fams is not None:
            fam = self.family_of.pop(key)
            keys = fams[fam]
            del keys[key]
            if not keys:
                del fams[fam]
        if self.on_drop is not None:
            self.on_drop(key)

    def _sweep(self, now: float) -> float:
        """Drop every bucket full again (at most once per first-fresh instant): ``0.0`` when a
        new key now fits, else the seconds until one could."""
        if now < self.next_sweep:
            return max(1e-9, self.next_sweep - now)
        earliest = _INF
        dead = []
        fresh = self.fresh
        for seg in (self.new, self.hot):
            for k, entry in seg.items():
                at = fresh(entry)
                if at <= now:
                    dead.append(k)
                elif at < earliest:
                    earliest = at
        for k in dead:
            self._drop(k, False)
        self.next_sweep = earliest if not dead else -_INF
        if len(self) < self.max_keys:
            return 0.0
        return max(1e-9, earliest - now)
