"""The shared budgets' store operations: the pure functions, and their Lua twins (private).

One operation per decision. It carries what this process counted since its previous
operation (calls, refunds, outcomes), applies it to the fleet's stored state, and, for a
decision, answers whether one more retry is allowed (counting it when it is), in one round
trip. Time is the store's (the Redis server's ``TIME``, or the clock injected into the store)
in whole microseconds, like every other script.

Example:
    >>> import resilience as rs
    >>> cfg = ratio_config(ttl=10.0, buckets=10, ratio=0.5, reserve=0.0)
    >>> store = rs.MemoryStore()
    >>> store.apply(_RatioOp("rb:api", cfg, calls=4, withdraw=True))  # 1 <= 0.5 * 4
    (True, 4, 1)
    >>> [store.apply(_RatioOp("rb:api", cfg, withdraw=True))[0] for _ in range(2)]
    [True, False]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..stores._lua import script
from ..stores.base import ttl_us
from ..throttle._core import roll_ring

__all__ = [
    "TOKENS_TTL",
    "RatioConfig",
    "_RatioOp",
    "_TokensOp",
    "ratio_config",
]

RATIO_LUA = script(__package__, "budget.lua")
TOKENS_LUA = script(__package__, "tokens.lua")

#: Seconds a shared :class:`~resilience.RetryThrottle`'s tokens live after their last change:
#: a fleet idle that long starts again with a full bucket.
TOKENS_TTL = 600.0

LAST, CALLS, RETRIES, RING = 0, 1, 2, 3  # the ratio state: [last bucket, totals, c0, r0, ...]


@dataclass(frozen=True, slots=True)
class RatioConfig:
    """A ratio budget's window and limit, in the units the scripts use."""

    buckets: int
    bucket_us: int
    ratio: float
    reserve: float  # min_per_second * ttl: retries always allowed over the window


def ratio_config(*, ttl: float, buckets: int, ratio: float, reserve: float) -> RatioConfig:
    """The stored window of a budget (``ttl`` seconds in ``buckets`` buckets)."""
    return RatioConfig(buckets, max(1, round(ttl * 1_000_000 / buckets)), ratio, reserve)


def _take(st: list[int], cfg: RatioConfig, offset: int, n: int) -> bool:
    """Remove ``n`` calls (``offset`` 0) or retries (1) from the newest buckets holding some."""
    nb, e, taken = cfg.buckets, st[LAST], False
    for back in range(nb):
        if n == 0:
            break
        i = RING + 2 * ((e - back) % nb) + offset
        k = min(n, st[i])
        if k:
            st[i] -= k
            st[CALLS + offset] -= k
            n -= k
            taken = True
    return taken


#: ``(allowed, calls, retries)``: the decision (``False`` when none was asked) and the window.
RatioResult = tuple[bool, int, int]


class _RatioOp:
    """StoreOp of a shared :class:`~resilience.RetryBudget`: add ``calls``, take back
    ``uncalls`` deposits and ``unretries`` retries (from the newest buckets), then, with
    ``withdraw``, allow one retry while ``retries + 1 <= ratio * calls + reserve`` and count it.
    """

    __slots__ = ("calls", "cfg", "key", "reset", "uncalls", "unretries", "withdraw")
    LUA: ClassVar[str] = RATIO_LUA

    def __init__(
        self,
        key: str,
        cfg: RatioConfig,
        *,
        calls: int = 0,
        uncalls: int = 0,
        unretries: int = 0,
        withdraw: bool = False,
    ) -> None:
        self.key = key
        self.cfg = cfg
        self.calls = calls
        self.uncalls = uncalls
        self.unretries = unretries
        self.withdraw = withdraw
        self.reset = False  # set by parse: the stored state was undecodable and was rewritten

    def apply(
        self, state: Any | None, now: float, /
    ) -> tuple[Any | None, RatioResult, float | None]:
        cfg = self.cfg
        e = round(now * 1_000_000) // cfg.bucket_us
        st = [e, 0, 0, *([0] * (2 * cfg.buckets))] if state is None else list(state)
        roll_ring(st, cfg.buckets, e)
        cur = RING + 2 * (st[LAST] % cfg.buckets)
        changed = False
        if self.calls:
            st[cur] += self.calls
            st[CALLS] += self.calls
            changed = True
        if self.uncalls and _take(st, cfg, 0, self.uncalls):
            changed = True
        if self.unretries and _take(st, cfg, 1, self.unretries):
            changed = True
        allowed = False
        if self.withdraw and not st[RETRIES] + 1 > cfg.ratio * st[CALLS] + cfg.reserve:
            st[cur + 1] += 1
            st[RETRIES] += 1
            allowed = changed = True
        result = (allowed, st[CALLS], st[RETRIES])
        if not changed:  # nothing counted: nothing written (the Lua twin writes nothing either)
            return state, result, None
        return st, result, cfg.buckets * cfg.bucket_us / 1_000_000

    def lua_args(self) -> tuple[int, int, str, str, int, int, int, int]:
        c = self.cfg
        return (
            c.buckets,
            c.bucket_us,
            repr(c.ratio),
            repr(c.reserve),
            self.calls,
            self.uncalls,
            self.unretries,
            1 if self.withdraw else 0,
        )

    def parse(self, reply: Any) -> RatioResult:
        """``[allowed, calls, retries, reset]``."""
        allowed, calls, retries, reset = reply
        self.reset = reset == 1
        return allowed == 1, int(calls), int(retries)


#: ``(allowed, tokens in thousandths)``: a retry is allowed while tokens > max_tokens / 2.
TokensResult = tuple[bool, int]


class _TokensOp:
    """StoreOp of a shared :class:`~resilience.RetryThrottle` (tokens in thousandths, exact):
    ``successes`` add ``ratio`` each (up to ``max``), then ``failures`` take 1000 each (down to
    0); the answer is whether ``2 * tokens > max`` (no tokens: a full bucket)."""

    __slots__ = ("failures", "key", "max", "ratio", "reset", "successes")
    LUA: ClassVar[str] = TOKENS_LUA

    def __init__(
        self, key: str, max_milli: int, ratio_milli: int, successes: int = 0, failures: int = 0
    ) -> None:
        self.key = key
        self.max = max_milli
        self.ratio = ratio_milli
        self.successes = successes
        self.failures = failures
        self.reset = False

    def apply(
        self, state: Any | None, now: float, /
    ) -> tuple[Any | None, TokensResult, float | None]:
        tokens = self.max if state is None else min(int(state), self.max)
        if not self.successes and not self.failures:
            return state, (2 * tokens > self.max, tokens), None
        tokens = min(self.max, tokens + self.ratio * self.successes)
        tokens = max(0, tokens - 1000 * self.failures)
        return tokens, (2 * tokens > self.max, tokens), TOKENS_TTL

    def lua_args(self) -> tuple[int, int, int, int, int]:
        return (self.max, self.ratio, self.successes, self.failures, ttl_us(TOKENS_TTL))

    def parse(self, reply: Any) -> TokensResult:
        """``[allowed, tokens, reset]``."""
        allowed, tokens, reset = reply
        self.reset = reset == 1
        return allowed == 1, int(tokens)
