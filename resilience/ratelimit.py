"""Rate limiting: GCRA token bucket, Guava/Sentinel warm-up, uniform pacing, keyed limits.

One state machine covers Sentinel's four flow-control behaviours:

========================  ===================================================================
reject (DEFAULT)          ``rate``, ``per``, ``burst``: a GCRA token bucket; over the limit →
                          :class:`~resilience.RateLimitedError` with an exact ``retry_after``.
warm-up (WARM_UP)         ``warmup=`` seconds, ``cold_factor``: a cold limiter admits
                          ``rate / cold_factor`` and ramps to ``rate`` over ``warmup`` seconds of
                          saturation (Guava ``SmoothWarmingUp``); an idle limiter cools down.
pacing (RATE_LIMITER)     ``max_wait > 0`` with ``burst=1``: admitted calls are spaced exactly
                          ``per / rate`` apart; a call whose wait would exceed ``max_wait`` is
                          rejected at once (a bounded virtual queue).
warm-up + pacing          both together (WARM_UP_RATE_LIMITER).
========================  ===================================================================

The state of one bucket is two numbers, ``[tat, stored]``: the *theoretical arrival time* (the
instant the bucket's backlog drains; ``tat <= now`` means "idle") and, with warm-up, the *stored
tokens* (Guava's ``storedPermits``: high = cold). Every decision is the pure function
:func:`transition` ``(tat, stored, now, cost, max_wait, params) → (allowed, tat', stored', wait,
cost_time)``; a cancelled waiter, or a call refused by a policy inside the limiter, gives its
reservation back with :func:`refund`. The Redis store mirrors these two functions in Lua, number
for number.

The math (``T = per / rate`` is the stable emission interval, ``B = burst``):

- resync: if ``now > tat``: ``stored = min(max_tokens, stored + (now - tat) / cooldown)``;
  ``tat = now``.
- ``wait = tat - now - tolerance`` with ``tolerance = (B - cost) * T`` (the GCRA check
  "``tat + cost*T - B*T <= now``" written on the backlog *before* this call, so warm-up's dearer
  permits never block an idle bucket). With warm-up the burst scales with the temperature: a
  positive tolerance is multiplied by the warmth ``1 - above / (max_tokens - warning_tokens)``
  (``above = stored - warning_tokens``, when positive): no burst at all fully cold, all of it
  warm, so the first second of a cold limiter admits ``rate / cold_factor``, burst included.
- admitted iff ``wait <= max_wait``: ``tat += cost_time`` where ``cost_time = cost * T`` plus,
  with warm-up, for the ``k`` permits taken above the warning line, the trapezoid ``k * slope *
  (above - k / 2)`` and the burst they unlock, ``k * (B - 1) * T / (max_tokens -
  warning_tokens)`` (so under saturation the admitted rate follows the warm-up curve exactly and
  rises monotonically to ``rate``); ``stored = max(0, stored - cost)``.
- rejected: nothing changes; ``retry_after = wait`` (after that long the same call is admitted
  without waiting, barring competition).

Warm-up constants follow Sentinel's ``WarmUpController`` (with floats; ``count = rate / per``):
``warning_tokens = warmup * count / (cold_factor - 1)``, ``max_tokens = warning_tokens +
2 * warmup * count / (1 + cold_factor)``, ``slope = (cold_factor - 1) * T / (max_tokens -
warning_tokens)``, and Guava's cool-down: an idle limiter refills ``0 → max_tokens`` in
``warmup`` seconds (``cooldown = warmup / max_tokens`` seconds per token). Going from
``max_tokens`` down to ``warning_tokens`` under saturation takes exactly ``warmup`` seconds.
"""

from __future__ import annotations

import functools
import math
import struct
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Literal, NamedTuple, cast

from ._clock import Clock, resolve_clock
from ._deadline import _DEADLINE
from ._degraded import STORE_LOG, state_reset
from ._policy import Emitter, Policy, own_refusal
from ._types import (
    MAX_SECONDS,
    MIN_SECONDS,
    Duration,
    optional_seconds,
    positive_int,
    positive_number,
    ratio,
    seconds,
)
from .errors import ConfigurationError, RateLimitedError, RejectedError, StoreError
from .events import CallRejected, Listener, RateLimitWaited, StoreFailed, error_type
from .stores.base import Store, StoreFullError, apply_soon

__all__ = [
    "Decision",
    "LimitParams",
    "Permit",
    "RateLimiter",
    "fresh_at",
    "limit_params",
    "refund",
    "status",
    "transition",
]

#: Float slack (seconds) in admission checks, so sums of intervals that are exactly on the
#: boundary are not rejected over rounding noise.
EPS = 1e-9
_INF = math.inf


class LimitParams(NamedTuple):
    """The numbers a bucket's transition needs (plain floats, JSON/Lua friendly).

    Attributes:
        interval: ``T = per / rate``, seconds per permit at the stable rate (``inf``: rate 0).
        burst: ``B``, the bucket size in permits.
        warning_tokens: Sentinel's ``warningToken`` (0 without warm-up).
        max_tokens: Sentinel's ``maxToken`` (0 without warm-up: warm-up is off).
        slope: extra seconds per permit per stored token above the warning line.
        cooldown: seconds an idle limiter takes to store one more token.
    """

    interval: float
    burst: float
    warning_tokens: float
    max_tokens: float
    slope: float
    cooldown: float


def limit_params(
    rate: float,
    per: float = 1.0,
    burst: float | None = None,
    warmup: float | None = None,
    cold_factor: float = 3.0,
) -> LimitParams:
    """Compute a bucket's :class:`LimitParams` (inputs already validated).

    Example:
        >>> p = limit_params(100, 1.0, warmup=10, cold_factor=3)
        >>> p.warning_tokens, p.max_tokens, round(p.interval * p.burst, 6)
        (500.0, 1000.0, 1.0)
    """
    if rate == 0:
        return LimitParams(_INF, 0.0, 0.0, 0.0, 0.0, 1.0)
    interval = per / rate
    b = max(1.0, float(rate)) if burst is None else float(burst)
    if not warmup:
        return LimitParams(interval, b, 0.0, 0.0, 0.0, 1.0)
    count = rate / per  # permits per second
    warning = warmup * count / (cold_factor - 1.0)
    max_tokens = warning + 2.0 * warmup * count / (1.0 + cold_factor)
    slope = (cold_factor - 1.0) * interval / (max_tokens - warning)
    return LimitParams(interval, b, warning, max_tokens, slope, warmup / max_tokens)


def transition(
    tat: float, stored: float, now: float, cost: float, max_wait: float, p: LimitParams
) -> tuple[bool, float, float, float, float]:
    """The pure decision: ``(allowed, new_tat, new_stored, wait_or_retry_after, cost_time)``.

    When admitted, the state is ``(new_tat, new_stored)`` and the caller must wait ``wait``
    seconds (0 unless pacing) before proceeding; ``cost_time`` is what :func:`refund` needs.
    When rejected, the state is unchanged and the fourth item is ``retry_after``.

    Example:
        >>> p = limit_params(rate=2, per=1.0, burst=2)
        >>> transition(0.0, 0.0, 10.0, 1, 0.0, p)      # idle bucket: admitted at once
        (True, 10.5, 0.0, 0.0, 0.5)
        >>> transition(11.0, 0.0, 10.0, 1, 0.0, p)     # two permits in flight: over the limit
        (False, 11.0, 0.0, 0.5, 0.0)
    """
    if cost <= 0:
        return (True, tat, stored, 0.0, 0.0)
    interval = p.interval
    if interval == _INF:
        return (False, tat, stored, _INF, 0.0)
    max_tokens = p.max_tokens
    if not max_tokens:  # no warm-up: plain GCRA
        if now > tat:
            tat = now
        wait = tat - now - (p.burst - cost) * interval
        if wait > max_wait + EPS:
            return (False, tat, stored, wait, 0.0)
        cost_time = cost * interval
        return (True, tat + cost_time, stored, wait if wait > EPS else 0.0, cost_time)
    if now > tat:
        stored = min(max_tokens, stored + (now - tat) / p.cooldown)
        tat = now
    tolerance = (p.burst - cost) * interval
    above = stored - p.warning_tokens
    if above > 0 and tolerance > 0:
        # a cold bucket's burst scales with its temperature: none at all fully cold
        tolerance *= 1.0 - above / (max_tokens - p.warning_tokens)
    wait = tat - now - tolerance
    if wait > max_wait + EPS:
        return (False, tat, stored, wait, 0.0)
    cost_time = cost * interval
    if above > 0:
        k = cost if cost < above else above
        # the trapezoid of the dearer permits, plus the burst they unlock (paid for here, so
        # the burst grows back with the warmth without raising the admitted rate)
        cost_time += k * (
            p.slope * (above - k / 2.0)
            + (p.burst - 1.0) * interval / (max_tokens - p.warning_tokens)
        )
    stored = stored - cost if stored > cost else 0.0
    return (True, tat + cost_time, stored, wait if wait > EPS else 0.0, cost_time)


def refund(
    tat: float, stored: float, now: float, cost_time: float, taken: float, p: LimitParams
) -> tuple[float, float]:
    """Give back a reservation (a cancelled waiter): the new ``(tat, stored)``.

    Example:
        >>> p = limit_params(rate=1, burst=1)
        >>> refund(3.0, 0.0, 0.5, 1.0, 0.0, p)
        (2.0, 0.0)
    """
    new_tat = tat - cost_time
    if new_tat < now:
        new_tat = now
    if p.max_tokens:
        stored = min(p.max_tokens, stored + taken)
    return (new_tat, stored)


def status(tat: float, now: float, p: LimitParams, stored: float = 0.0) -> tuple[int, float]:
    """``(remaining, reset_after)``: whole permits available now, seconds until the bucket is full.

    With warm-up, ``stored`` is the bucket's stored tokens: a cold bucket's burst is smaller
    (one permit, fully cold), and ``remaining`` counts what it would admit now (a lower bound:
    each permit is counted at the current, dearest price).

    Example:
        >>> p = limit_params(rate=10, per=1.0, burst=10)
        >>> remaining, reset_after = status(10.3, 10.0, p)
        >>> remaining, round(reset_after, 9)
        (7, 0.3)
        >>> cold = limit_params(rate=10, per=1.0, burst=10, warmup=10)
        >>> status(10.0, 10.0, cold, stored=cold.max_tokens), status(10.0, 10.0, cold)
        ((1, 0.0), (10, 0.0))
    """
    interval = p.interval
    backlog = tat - now
    if p.max_tokens and interval != _INF:
        if backlog < 0:  # idle: it has cooled meanwhile
            stored = min(p.max_tokens, stored - backlog / p.cooldown)
        above = stored - p.warning_tokens
        if above > 0:
            span = p.max_tokens - p.warning_tokens
            room = (p.burst - 1.0) * interval * (1.0 - above / span)
            if backlog > 0:
                room -= backlog
            else:
                backlog = 0.0
            n = room / (interval + p.slope * above) + 1.0 + 1e-6
            remaining = int(n) if n > 0 else 0
            limit = int(p.burst)
            return (remaining if remaining < limit else limit, backlog)
    if backlog <= 0:
        return (int(p.burst), 0.0)
    if interval == _INF:
        return (0, 0.0)
    # int() floors the non-negative values; a negative one truncates to 0, the floor we want.
    remaining = int(p.burst - backlog / interval + 1e-6)
    return (remaining if remaining > 0 else 0, backlog)


def fresh_at(tat: float, stored: float, p: LimitParams) -> float:
    """The instant a bucket is indistinguishable from a brand-new one (it can be dropped).

    Example:
        >>> fresh_at(5.0, 0.0, limit_params(rate=1))
        5.0
    """
    if p.max_tokens:
        return tat + (p.max_tokens - stored) * p.cooldown
    return tat


def _new_state(now: float, p: LimitParams) -> tuple[float, float]:
    """A brand-new bucket: idle, and cold (full of stored tokens) when warm-up is on."""
    return (now, p.max_tokens)


class Permit:
    """What one admitted check took from its bucket: :meth:`RateLimiter.refund` gives it back.

    Opaque; found on :attr:`Decision.permit`. It remembers the bucket (``key``), the backlog
    the check added and the warm-up tokens it took, so a refund gives back exactly that (never
    more), through the store the permits came from, and at most once (``refunded``).

    Example:
        >>> import resilience as rs
        >>> limiter = rs.RateLimiter("api", rate=5, clock=rs.testing.FakeClock())
        >>> permit = limiter.try_acquire(key="alice").permit
        >>> permit.key, permit.refunded
        ('alice', False)
    """

    __slots__ = ("_owner", "_refunded", "cost_time", "end", "key", "taken", "via_store")

    def __init__(
        self,
        owner: RateLimiter,
        key: str | None,
        cost_time: float,
        taken: float,
        via_store: bool,
        end: float,
    ) -> None:
        self._owner = owner
        self.key = key
        self.cost_time = cost_time
        self.taken = taken
        self.via_store = via_store
        #: When (on the limiter's clock, at the latest) this permit's share of the backlog ends.
        self.end = end
        self._refunded = False

    @property
    def refunded(self) -> bool:
        """Whether the permits were given back (a permit is refunded at most once)."""
        return self._refunded

    def __repr__(self) -> str:
        state = "refunded" if self.refunded else "held"
        return f"<Permit of {self._owner.name!r} key={self.key!r} {state}>"


class Decision(NamedTuple):
    """The outcome of one rate-limit check (enough for the IETF ``RateLimit`` fields).

    Attributes:
        allowed: whether the call may proceed.
        retry_after: seconds until the same call would be admitted (0.0 when allowed).
        remaining: whole permits left right now (``RateLimit: r=``).
        limit: the quota, ``burst`` permits (``RateLimit-Policy: q=``).
        reset_after: seconds until the bucket is full again (``RateLimit: t=``).
        waited: seconds the caller waited (or must wait) for its slot (pacing).
        permit: what the check took (``None`` when it took nothing: refused, ``cost=0``, or
            admitted because the store failed open); pass the decision to
            :meth:`RateLimiter.refund` to give it back when the work was refused elsewhere.

    Example:
        >>> import resilience as rs
        >>> limiter = rs.RateLimiter("api", rate=5, clock=rs.testing.FakeClock())
        >>> d = limiter.try_acquire(key="alice")
        >>> d.allowed, d.remaining, d.limit
        (True, 4, 5)
    """

    allowed: bool
    retry_after: float
    remaining: int
    limit: int
    reset_after: float
    waited: float = 0.0
    permit: Permit | None = None


# -- the Lua twins (RedisStore): transition / refund / status / fresh_at number for number -------
# Doubles in seconds exactly like the Python (now = integer µs from TIME / 1e6). The state is one
# string value, three little-endian doubles (tat, stored, expiry in µs of the script clock)
# written with SET PX: TIME, GET and SET are the only commands of a decision. Parameters arrive
# packed the same way (ARGV[2]: the six LimitParams, then two operation numbers) and the take's
# reply is six packed doubles: no decimal formatting or parsing on either side.
_LUA_BUCKET = """
local now_u = now_us()
local now = now_u / 1000000
if ARGV[1] == "" then now = (now_u - 1700000000000000) / 1000000 end
local interval, burst, warning, max_tokens, slope, cooldown, arg1, arg2 =
  struct.unpack('<dddddddd', ARGV[2])
local INF = math.huge
local function fresh_at(tat, stored)
  if max_tokens ~= 0 then return tat + (max_tokens - stored) * cooldown end
  return tat
end
local function status(tat, stored)
  local backlog = tat - now
  local above = 0.0
  if max_tokens ~= 0 and interval ~= INF then
    local ss = stored
    if backlog < 0 then ss = math.min(max_tokens, ss - backlog / cooldown) end
    above = ss - warning
  end
  if above > 0 then
    local room = (burst - 1.0) * interval * (1.0 - above / (max_tokens - warning))
    if backlog > 0 then room = room - backlog else backlog = 0.0 end
    local n = room / (interval + slope * above) + 1.0 + 1e-6
    local r = 0
    if n > 0 then r = math.floor(n) end
    if r > math.floor(burst) then r = math.floor(burst) end
    return r, backlog
  end
  if backlog <= 0 then return math.floor(burst), 0.0 end
  if interval == INF then return 0, 0.0 end
  local r = burst - backlog / interval + 1e-6
  if r > 0 then return math.floor(r), backlog end
  return 0, backlog
end
local function save(tat, stored, ttl)
  local ttl_us = math.ceil(ttl * 1000000 - 0.001)  -- stores.base.ttl_us
  redis.call('SET', KEYS[1], struct.pack('<ddd', tat, stored, now_u + ttl_us),
             'PX', math.max(1, math.min(1e13, math.ceil(ttl_us / 1000))))
end
local present, tat, stored, reset = false, now, max_tokens, 0
local raw = redis.pcall('GET', KEYS[1])
if type(raw) == 'string' and #raw == 24 then
  local t, s, x = struct.unpack('<ddd', raw)
  if x > now_u then
    if t - now < 1e9 and now - t < 1e9 and s >= 0 and s < 1e15 then
      present, tat, stored = true, t, s
    else
      reset = 1  -- NaN, infinite or absurd: undecodable
    end
  end
elseif raw then
  reset = 1  -- another type or length
end
-- absent, expired or undecodable: the fresh state (an undecodable value is deleted)
if reset == 1 then redis.call('DEL', KEYS[1]) end
"""


_PARAMS = struct.Struct("<8d")
_REPLY = struct.Struct("<6d")


@functools.lru_cache(maxsize=1024)
def _packed(p: LimitParams, a: float, b: float) -> bytes:
    """A limiter's parameters and an operation's two numbers as one script argument."""
    return _PARAMS.pack(*p, a, b)


class _TakeOp:
    """The store operation for one check: the pure :func:`transition` on stored ``[tat, stored]``.

    Result: ``(allowed, wait_or_retry_after, cost_time, taken, remaining, reset_after)``.
    """

    __slots__ = ("cost", "key", "max_wait", "p", "reset")

    BINARY_REPLY: ClassVar[bool] = True
    # The hot script, flattened (no helper closures, no shared prelude): the same numbers as
    # _LUA_BUCKET + transition/status/fresh_at, in fewer Lua instructions.
    LUA_STANDALONE: ClassVar[bool] = True
    LUA: ClassVar[str] = """
local now_u, now
if ARGV[1] ~= '' then
  now_u = tonumber(ARGV[1])
  now = now_u / 1000000
else
  local t = redis.call('TIME')
  now_u = tonumber(t[1]) * 1000000 + tonumber(t[2])
  now = (now_u - 1700000000000000) / 1000000
end
local interval, burst, warning, max_tokens, slope, cooldown, cost, max_wait =
  struct.unpack('<dddddddd', ARGV[2])
local present, tat, stored, reset = false, now, max_tokens, 0
local raw = redis.pcall('GET', KEYS[1])
if type(raw) == 'string' and #raw == 24 then
  local t, s, x = struct.unpack('<ddd', raw)
  if x > now_u then
    if t - now < 1e9 and now - t < 1e9 and s >= 0 and s < 1e15 then
      present, tat, stored = true, t, s
    else
      reset = 1  -- NaN, infinite or absurd: undecodable (reported: ok + 2)
    end
  end
elseif raw then
  reset = 1  -- another type or length
end
if reset == 1 then redis.call('DEL', KEYS[1]) end
local INF = math.huge
-- transition(tat, stored) on copies: a rejection keeps (and reports on) the stored state
local ok, tat2, stored2, wait, cost_time = true, tat, stored, 0.0, 0.0
if cost > 0 then
  if interval == INF then
    ok, wait = false, INF
  else
    local wt, ws = tat, stored
    if now > wt then
      if max_tokens ~= 0 then
        ws = math.min(max_tokens, ws + (now - wt) / cooldown)
      end
      wt = now
    end
    local tolerance = (burst - cost) * interval
    local above = 0.0
    if max_tokens ~= 0 then above = ws - warning end
    if above > 0 and tolerance > 0 then
      tolerance = tolerance * (1.0 - above / (max_tokens - warning))
    end
    wait = wt - now - tolerance
    if wait > max_wait + 1e-9 then
      ok = false
    else
      cost_time = cost * interval
      if max_tokens ~= 0 then
        if above > 0 then
          local k = above
          if cost < above then k = cost end
          cost_time = cost_time + k * (slope * (above - k / 2.0)
            + (burst - 1.0) * interval / (max_tokens - warning))
        end
        if ws > cost then ws = ws - cost else ws = 0.0 end
      end
      if not (wait > 1e-9) then wait = 0.0 end
      tat2, stored2 = wt + cost_time, ws
    end
  end
end
local at, as = tat2, stored2
if not ok then at, as = tat, stored end
-- status(at, as)
local remaining, reset_after
local backlog = at - now
local above = 0.0
if max_tokens ~= 0 and interval ~= INF then
  local ss = as
  if backlog < 0 then ss = math.min(max_tokens, ss - backlog / cooldown) end
  above = ss - warning
end
if above > 0 then
  local room = (burst - 1.0) * interval * (1.0 - above / (max_tokens - warning))
  if backlog > 0 then room = room - backlog else backlog = 0.0 end
  local n = room / (interval + slope * above) + 1.0 + 1e-6
  if n > 0 then remaining = math.floor(n) else remaining = 0 end
  if remaining > math.floor(burst) then remaining = math.floor(burst) end
  reset_after = backlog
elseif backlog <= 0 then
  remaining, reset_after = math.floor(burst), 0.0
elseif interval == INF then
  remaining, reset_after = 0, 0.0
else
  local r = burst - backlog / interval + 1e-6
  if r > 0 then remaining = math.floor(r) else remaining = 0 end
  reset_after = backlog
end
if ok or present then
  local ttl = at
  if max_tokens ~= 0 then ttl = at + (max_tokens - as) * cooldown end
  ttl = ttl - now
  if ttl > 0 then
    local ttl_us = math.ceil(ttl * 1000000 - 0.001)  -- stores.base.ttl_us
    redis.call('SET', KEYS[1], struct.pack('<ddd', at, as, now_u + ttl_us),
               'PX', math.max(1, math.min(1e13, math.ceil(ttl_us / 1000))))
  elseif present then
    redis.call('DEL', KEYS[1])
  end
end
if ok then
  return struct.pack('<dddddd', 1 + 2 * reset, wait, cost_time, stored - stored2, remaining,
                     reset_after)
end
return struct.pack('<dddddd', 2 * reset, wait, 0, 0, remaining, reset_after)
"""

    def __init__(self, key: str, cost: float, max_wait: float, p: LimitParams) -> None:
        self.key = key
        self.cost = cost
        self.max_wait = max_wait
        self.p = p
        self.reset = False  # set by parse: the stored state was undecodable and was rewritten

    def apply(
        self, state: Any | None, now: float, /
    ) -> tuple[Any | None, tuple[bool, float, float, float, int, float], float | None]:
        p = self.p
        tat, stored = _new_state(now, p) if state is None else (state[0], state[1])
        ok, tat2, stored2, wait, cost_time = transition(
            tat, stored, now, self.cost, self.max_wait, p
        )
        if not ok:
            remaining, reset_after = status(tat, now, p, stored)
            ttl = fresh_at(tat, stored, p) - now
            keep = [tat, stored] if state is not None and ttl > 0 else None
            return keep, (False, wait, 0.0, 0.0, remaining, reset_after), ttl if keep else None
        remaining, reset_after = status(tat2, now, p, stored2)
        ttl = fresh_at(tat2, stored2, p) - now
        result = (True, wait, cost_time, stored - stored2, remaining, reset_after)
        if ttl <= 0:
            return None, result, None
        return [tat2, stored2], result, ttl

    def lua_args(self) -> tuple[bytes]:
        """The bucket parameters, cost and max_wait, packed (the Lua twin's ARGV[2])."""
        return (_packed(self.p, self.cost, self.max_wait),)

    def parse(self, reply: Any) -> tuple[bool, float, float, float, int, float]:
        """The Lua reply: six packed doubles (one bulk string, no decimal parsing); the first is
        ``allowed``, plus 2 when the stored state was undecodable (treated as absent)."""
        ok, wait, cost_time, taken, remaining, reset_after = _REPLY.unpack(reply)
        if ok >= 2.0:
            self.reset = True
            ok -= 2.0
        return (ok == 1.0, wait, cost_time, taken, int(remaining), reset_after)


class _RefundOp:
    """The store operation giving back a cancelled reservation (the pure :func:`refund`)."""

    __slots__ = ("cost_time", "key", "p", "taken")

    LUA: ClassVar[str] = (
        _LUA_BUCKET
        + """
if not present then return nil end
local cost_time, taken = arg1, arg2
local new_tat = tat - cost_time
if new_tat < now then new_tat = now end
if max_tokens ~= 0 then stored = math.min(max_tokens, stored + taken) end
local ttl = fresh_at(new_tat, stored) - now
if ttl <= 0 then redis.call('DEL', KEYS[1]) else save(new_tat, stored, ttl) end
return nil
"""
    )

    def __init__(self, key: str, cost_time: float, taken: float, p: LimitParams) -> None:
        self.key = key
        self.cost_time = cost_time
        self.taken = taken
        self.p = p

    def apply(self, state: Any | None, now: float, /) -> tuple[Any | None, None, float | None]:
        if state is None:
            return None, None, None
        p = self.p
        tat, stored = refund(state[0], state[1], now, self.cost_time, self.taken, p)
        ttl = fresh_at(tat, stored, p) - now
        if ttl <= 0:
            return None, None, None
        return [tat, stored], None, ttl

    def lua_args(self) -> tuple[bytes]:
        """The bucket parameters, the reservation's cost_time and taken tokens, packed."""
        return (_PARAMS.pack(*self.p, self.cost_time, self.taken),)

    def parse(self, reply: Any) -> None:
        """No result."""


class _Reservation(NamedTuple):
    key: str | None
    cost_time: float
    taken: float
    via_store: bool


class _LocalResult(tuple):  # type: ignore[type-arg]
    """A decision taken in process while the store failed (``on_store_error="local"``): its
    permits come from this process's buckets, and a refund goes back there, not to the store."""

    __slots__ = ()


#: ``object.__new__``: a :class:`Permit` whose slots :meth:`RateLimiter._decision` fills.
_permit_new: Callable[[type[Permit]], Permit] = object.__new__

#: ``tuple.__new__`` builds a :class:`Decision` without running its Python-level ``__new__``.
_decision_new: Callable[[type[Decision], tuple[Any, ...]], Decision] = tuple.__new__


def _representable(
    p: LimitParams, rate: float, per: float, cold_factor: float, what: str
) -> LimitParams:
    """``p`` if both stores can represent a bucket with these parameters, else raise.

    The emission interval ``per / rate`` must be between 1 µs (the stores' resolution: a
    shorter one is lost in the rounding of ``tat``) and ``MAX_SECONDS``, and so must the
    longest a bucket's state can last: a full backlog of cold permits plus the cool-down,
    ``burst * interval * (cold_factor + 2) + warmup`` (``burst * interval`` without warm-up).
    """
    t = p.interval
    if t == _INF:
        return p
    if not MIN_SECONDS <= t <= MAX_SECONDS:
        raise ConfigurationError(
            f"rate {rate:g} per {per:g} s{what} gives an emission interval (per / rate) of "
            f"{t:g} s; it must be between {MIN_SECONDS:g} and {MAX_SECONDS:g} seconds (at most "
            f"1,000,000 permits per second, at least one per {MAX_SECONDS:g} s)"
        )
    horizon = p.burst * t * ((cold_factor + 2.0) if p.max_tokens else 1.0)
    if p.max_tokens:
        horizon += p.cooldown * p.max_tokens
    if horizon > MAX_SECONDS:
        raise ConfigurationError(
            f"burst {p.burst:g} at {t:g} s per permit{what} keeps a bucket's state for up to "
            f"{horizon:g} s (burst * per / rate"
            + (" * (cold_factor + 2) + warmup" if p.max_tokens else "")
            + f"); it must be at most {MAX_SECONDS:g} seconds: lower burst or per, or raise rate"
        )
    return p


class RateLimiter(Policy):
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

    Memory: in-process keyed state holds at most ``max_keys`` buckets. A bucket that is full
    again (idle long enough) is dropped when room is needed; when every bucket is still active,
    a *new* key is denied (``retry_after`` = time until the first bucket can be dropped) and
    active keys keep their state, so flooding distinct keys never resets anyone's limit.

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
        rate: float,
        per: Duration = 1.0,
        burst: float | None = None,
        warmup: Duration | None = None,
        cold_factor: float = 3.0,
        max_wait: Duration = 0.0,
        store: Store | None = None,
        key: Callable[..., str | None] | None = None,
        max_keys: int = 100_000,
        on_store_error: Literal["open", "closed", "local"] = "open",
        instances: int | None = None,
        local_share: float | None = None,
        clock: Clock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(name=name, listeners=listeners)
        self.rate = positive_number(rate, "rate", allow_zero=True)
        self.per = seconds(per, "per", allow_zero=False)
        if burst is not None:
            burst = positive_number(burst, "burst")
            if self.rate and burst < 1:
                raise ConfigurationError(f"burst must be >= 1 permit, got {burst!r}")
        self.burst = burst
        self.warmup = optional_seconds(warmup, "warmup", allow_zero=False)
        cf = positive_number(cold_factor, "cold_factor")
        if cf <= 1:
            raise ConfigurationError(f"cold_factor must be > 1, got {cold_factor!r}")
        self.cold_factor = cf
        self.max_wait = seconds(max_wait, "max_wait")
        if store is not None and not callable(getattr(store, "apply", None)):
            raise ConfigurationError(
                f"store must be a resilience.stores.Store (with apply()), got {store!r}"
            )
        self.store = store
        if key is not None and not callable(key):
            raise ConfigurationError(f"key must be a callable or None, got {key!r}")
        self._key = key
        self.max_keys = positive_int(max_keys, "max_keys")
        if on_store_error not in ("open", "closed", "local"):
            raise ConfigurationError(
                f"on_store_error must be 'open', 'closed' or 'local', got {on_store_error!r}"
            )
        self.on_store_error = on_store_error
        if instances is not None and local_share is not None:
            raise ConfigurationError("give instances or local_share, not both")
        if instances is not None:
            local_share = 1.0 / positive_int(instances, "instances")
        elif local_share is not None:
            local_share = ratio(local_share, "local_share")
        if on_store_error == "local" and store is not None and local_share is None:
            raise ConfigurationError(
                "on_store_error='local' needs instances= (how many processes share the limit) "
                "or local_share= (this process's fraction of it, e.g. 0.25)"
            )
        self.local_share = local_share
        self._clock = resolve_clock(clock)
        self.params = _representable(
            limit_params(self.rate, self.per, burst, self.warmup, cf), self.rate, self.per, cf, ""
        )
        self._local_params = self.params
        if local_share is not None and local_share < 1.0 and store is not None:
            b = self.params.burst
            self._local_params = _representable(
                limit_params(
                    self.rate * local_share,
                    self.per,
                    max(1.0, b * local_share) if self.rate else b,
                    self.warmup,
                    cf,
                ),
                self.rate * local_share,
                self.per,
                cf,
                f" (this process's local share, {local_share:g} of the limit)",
            )
        now = self._clock.monotonic()
        self._tat, self._stored = _new_state(now, self.params)
        self._buckets: dict[str, list[float]] = {}
        self._next_sweep = -_INF
        self._lock = threading.Lock()
        self._em = Emitter(self.listeners, None, "")
        self._limit = int(self.params.burst)
        self._max_cost = self.params.burst if self.rate else _INF

    # -- public facts -------------------------------------------------------------------------
    @property
    def quota(self) -> int:
        """Permits per window (``RateLimit-Policy: q=``): the bucket size."""
        return self._limit

    @property
    def window(self) -> float:
        """Seconds a drained bucket takes to refill (``RateLimit-Policy: w=``)."""
        p = self.params
        return 0.0 if p.interval == _INF else p.burst * p.interval

    def describe(self) -> dict[str, Any]:
        """Plain data describing the configuration."""
        p = self.params
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

    # -- the decision (shared by every entry point) ------------------------------------------
    def _check_cost(self, cost: object) -> float:
        if isinstance(cost, bool) or not isinstance(cost, int | float) or not cost >= 0:
            raise ConfigurationError(f"cost must be a number >= 0, got {cost!r}")
        if self.rate and cost > self.params.burst:
            raise ConfigurationError(
                f"cost {cost!r} exceeds burst {self.params.burst:g} of rate limiter "
                f"{self.name!r}: it could never be admitted (raise burst or split the call)"
            )
        return float(cost)

    def _local(
        self, key: str | None, cost: float, max_wait: float, p: LimitParams | None = None
    ) -> tuple[bool, float, float, float, int, float]:
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
                if entry is None:
                    if len(buckets) >= self.max_keys and not self._make_room(now):
                        retry = max(EPS, self._next_sweep - now)
                        return (False, retry, 0.0, 0.0, 0, 0.0)
                    tat, stored = _new_state(now, p)
                else:
                    tat, stored = entry
                ok, tat2, stored2, wait, ct = transition(tat, stored, now, cost, max_wait, p)
                if ok:
                    if entry is None:
                        buckets[key] = [tat2, stored2]
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

    def _make_room(self, now: float) -> bool:
        """Drop buckets that are full again; whether a new key now fits (lock held)."""
        if now < self._next_sweep:
            return False
        p = self.params
        buckets = self._buckets
        earliest = _INF
        dead = []
        for k, (tat, stored) in buckets.items():
            at = fresh_at(tat, stored, p)
            if at <= now:
                dead.append(k)
            elif at < earliest:
                earliest = at
        for k in dead:
            del buckets[k]
        self._next_sweep = earliest if not dead else -_INF
        return len(buckets) < self.max_keys

    def _store_key(self, key: str | None) -> str:
        return f"rl:{self.name}" if key is None else f"rl:{self.name}:{key}"

    def _via_store(
        self, key: str | None, cost: float, max_wait: float, em: Emitter
    ) -> tuple[bool, float, float, float, int, float] | None:
        """Decide through the store; ``None`` means "store failed, admit" (fail open)."""
        store = cast(Store, self.store)
        op = _TakeOp(self._store_key(key), cost, max_wait, self.params)
        try:
            result = store.apply(op)
        except StoreFullError:
            return (False, self.window or 1.0, 0.0, 0.0, 0, 0.0)
        except StoreError as exc:
            return self._store_failed(exc, key, cost, max_wait, em)
        if op.reset:
            state_reset(self.name, em, self.listeners)
        return result

    async def _avia_store(
        self, key: str | None, cost: float, max_wait: float, em: Emitter
    ) -> tuple[bool, float, float, float, int, float] | None:
        store: Any = self.store
        op = _TakeOp(self._store_key(key), cost, max_wait, self.params)
        result: tuple[bool, float, float, float, int, float]
        try:
            aapply = getattr(store, "aapply", None)
            if aapply is not None:
                result = await aapply(op)
            else:
                result = store.apply(op)
        except StoreFullError:
            return (False, self.window or 1.0, 0.0, 0.0, 0, 0.0)
        except StoreError as exc:
            return self._store_failed(exc, key, cost, max_wait, em)
        if op.reset:
            state_reset(self.name, em, self.listeners)
        return result

    def _store_failed(
        self, exc: StoreError, key: str | None, cost: float, max_wait: float, em: Emitter
    ) -> tuple[bool, float, float, float, int, float] | None:
        mode = self.on_store_error
        STORE_LOG.record(self.name, mode, f"{exc}")
        if em:
            em.emit(
                StoreFailed(
                    policy=self.name,
                    pipeline=em.pipeline,
                    operation=em.operation,
                    decision=mode,
                    error_type=error_type(exc) or "",
                )
            )
        if mode == "open":
            return None
        if mode == "closed":
            return (False, self.window or 1.0, 0.0, 0.0, 0, 0.0)
        return cast(
            tuple[bool, float, float, float, int, float],
            _LocalResult(self._local(key, cost, max_wait, self._local_params)),
        )

    def _decide(
        self, key: str | None, cost: float, max_wait: float, em: Emitter
    ) -> tuple[bool, float, float, float, int, float] | None:
        if self.store is None:
            return self._local(key, cost, max_wait)
        return self._via_store(key, cost, max_wait, em)

    def _give_back(self, res: _Reservation) -> bool:
        """Return a reservation (a waiter gave up, a policy inside refused); ``False`` when the
        store failed (the slot simply stays consumed)."""
        if res.via_store:
            try:
                cast(Store, self.store).apply(
                    _RefundOp(self._store_key(res.key), res.cost_time, res.taken, self.params)
                )
            except StoreError:
                return False  # the store is failing anyway
            return True
        # in process: this limiter's own buckets, or (with a store) the local share it used
        # while the store failed
        p = self._local_params
        with self._lock:
            now = self._clock.monotonic()
            if res.key is None:
                self._tat, self._stored = refund(
                    self._tat, self._stored, now, res.cost_time, res.taken, p
                )
            else:
                entry = self._buckets.get(res.key)
                if entry is not None:
                    entry[0], entry[1] = refund(
                        entry[0], entry[1], now, res.cost_time, res.taken, p
                    )
        return True

    def _give_back_soon(self, res: _Reservation) -> None:
        """:meth:`_give_back` from async code: never awaited, never blocking the event loop."""
        if res.via_store:
            op = _RefundOp(self._store_key(res.key), res.cost_time, res.taken, self.params)
            apply_soon(self.store, op)  # on failure the slot simply stays consumed
            return
        self._give_back(res)

    async def _agive_back(self, res: _Reservation) -> bool:
        """:meth:`_give_back`, awaiting the store's round trip when it is async."""
        aapply = getattr(self.store, "aapply", None) if res.via_store else None
        if aapply is None:
            return self._give_back(res)
        try:
            await aapply(_RefundOp(self._store_key(res.key), res.cost_time, res.taken, self.params))
        except StoreError:
            return False  # the slot simply stays consumed; the store is failing anyway
        return True

    def _via(self, r: tuple[Any, ...]) -> bool:
        """Whether decision ``r``'s permits came from the store (not from the local fallback)."""
        return self.store is not None and type(r) is not _LocalResult

    def _max_wait(self) -> float:
        """``max_wait`` capped by the current deadline (never sleep past it)."""
        mw = self.max_wait
        if mw:
            dl = _DEADLINE.get()
            if dl is not None:
                left = dl.remaining()
                if left < mw:
                    return left if left > 0 else 0.0
        return mw

    def _rejected(self, retry_after: float, em: Emitter) -> RateLimitedError:
        ra: float | None = None if retry_after == _INF else round(retry_after, 9)
        if em:
            em.emit(
                CallRejected(
                    policy=self.name,
                    pipeline=em.pipeline,
                    operation=em.operation,
                    reason="rate_limited",
                    retry_after=ra,
                )
            )
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
            em.emit(
                RateLimitWaited(
                    policy=self.name, pipeline=em.pipeline, operation=em.operation, wait=wait
                )
            )

    def _decision(
        self,
        r: tuple[bool, float, float, float, int, float] | None,
        key: str | None,
        t0: float,
        waited: float = 0.0,
    ) -> Decision:
        limit = self._limit
        if r is None:  # failed open: nothing taken
            return _decision_new(Decision, (True, 0.0, limit, limit, 0.0, 0.0, None))
        ok, wait, ct, taken, remaining, reset_after = r
        if ok:
            permit: Permit | None = None
            if ct or taken:  # Permit(...) without its __init__ frame (this is the hot path)
                permit = _permit_new(Permit)
                permit._owner = self
                permit.key = key
                permit.cost_time = ct
                permit.taken = taken
                permit.via_store = self.store is not None and r.__class__ is not _LocalResult
                permit.end = t0 + reset_after
                permit._refunded = False
            return _decision_new(
                Decision,
                (
                    True,
                    0.0,
                    remaining,
                    limit,
                    reset_after,
                    round(waited, 9) if waited else 0.0,
                    permit,
                ),
            )
        return _decision_new(
            Decision, (False, round(wait, 9), remaining, limit, reset_after, 0.0, None)
        )

    def _claim(self, decision: Decision | Permit) -> _Reservation | None:
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
        ct = self._outstanding(permit.cost_time, permit.end)
        return _Reservation(permit.key, ct, permit.taken, permit.via_store)

    def _outstanding(self, cost_time: float, end: float) -> float:
        """What a refund rolls the backlog back by: the part of a permit's ``cost_time`` that
        has not elapsed yet (the backlog is first come, first served: the permit's share of it
        ends at ``end``, and time that passed since is not given back twice)."""
        left = end - self._clock.monotonic()
        if left >= cost_time:
            return cost_time
        return left if left > 0 else 0.0

    # -- refunds (callers outside a composition) ------------------------------------------------
    def refund(self, decision: Decision | Permit) -> bool:
        """Give back what an admitted check took, when the work it admitted was refused elsewhere.

        For callers that take permits themselves (:meth:`try_acquire`, :meth:`acquire`) and
        then learn the work never ran, e.g. a policy further in refused it (inside a
        composition the limiter refunds on its own). The bucket's backlog rolls back by the
        check's own cost, never below "now" (time that passed is not handed out twice; permits
        taken since stay taken) and a warm-up limiter gets its stored tokens back: never more
        than the check took. With a store this is one round trip, to the store the permits
        came from. A decision is refunded at most once.

        Returns:
            ``True`` when the permits were given back; ``False`` when there was nothing to give
            (the decision was refused, took nothing, or was already refunded) or the store
            failed (the permits stay spent).

        Raises:
            ConfigurationError: ``decision`` did not come from this limiter.

        Example:
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

    async def arefund(self, decision: Decision | Permit) -> bool:
        """Async :meth:`refund`: with a Redis store the round trip is awaited.

        Example:
            >>> import asyncio, resilience as rs
            >>> limiter = rs.RateLimiter("ip", rate=1, per=60, clock=rs.testing.FakeClock())
            >>> async def main() -> tuple[bool, bool]:
            ...     d = await limiter.atry_acquire(key="10.0.0.1")
            ...     await limiter.arefund(d)
            ...     return d.allowed, (await limiter.atry_acquire(key="10.0.0.1")).allowed
            >>> asyncio.run(main())
            (True, True)
        """
        res = self._claim(decision)
        return res is not None and await self._agive_back(res)

    # -- keyed API ----------------------------------------------------------------------------
    def try_acquire(self, key: str | None = None, cost: float = 1) -> Decision:
        """Take ``cost`` permits from ``key``'s bucket if available now (never waits).

        Raises:
            ConfigurationError: ``cost`` exceeds ``burst`` (nothing is charged).

        Example:
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
        r: tuple[bool, float, float, float, int, float] | None
        if self.store is None:
            r = self._local(key, cost, 0.0)
        else:
            r = self._via_store(key, cost, 0.0, self._em)
        if r is not None and not r[0] and self._em:
            self._rejected(r[1], self._em)
        return self._decision(r, key, t0)

    async def atry_acquire(self, key: str | None = None, cost: float = 1) -> Decision:
        """Async :meth:`try_acquire` (never waits); with a Redis store the round trip is awaited
        instead of blocking the event loop.

        Example:
            >>> import asyncio, resilience as rs
            >>> limiter = rs.RateLimiter("api", rate=1, clock=rs.testing.FakeClock())
            >>> async def main() -> list[bool]:
            ...     return [(await limiter.atry_acquire(key="k")).allowed for _ in range(2)]
            >>> asyncio.run(main())
            [True, False]
        """
        cost = self._check_cost(cost)
        t0 = self._clock.monotonic()
        r: tuple[bool, float, float, float, int, float] | None
        if self.store is None:
            r = self._local(key, cost, 0.0)
        else:
            r = await self._avia_store(key, cost, 0.0, self._em)
        if r is not None and not r[0] and self._em:
            self._rejected(r[1], self._em)
        return self._decision(r, key, t0)

    def acquire(self, key: str | None = None, cost: float = 1) -> Decision:
        """Take ``cost`` permits, sleeping up to ``max_wait`` for them, or raise.

        Raises:
            RateLimitedError: no slot within ``max_wait`` (or before the current deadline).
            ConfigurationError: ``cost`` exceeds ``burst``.

        Example:
            >>> import resilience as rs
            >>> clock = rs.testing.FakeClock()
            >>> pacer = rs.RateLimiter("pacer", rate=4, burst=1, max_wait=1.0, clock=clock)
            >>> [pacer.acquire().waited for _ in range(3)], clock.monotonic()
            ([0.0, 0.25, 0.25], 0.5)
        """
        return self._acquire_sync(key, self._check_cost(cost), self._em)

    async def aacquire(self, key: str | None = None, cost: float = 1) -> Decision:
        """Async :meth:`acquire`: awaits the slot on the clock (cancellation returns it).

        Example:
            >>> import asyncio, resilience as rs
            >>> clock = rs.testing.FakeClock()
            >>> pacer = rs.RateLimiter("pacer", rate=2, burst=1, max_wait=1.0, clock=clock)
            >>> async def main() -> list[float]:
            ...     return [(await pacer.aacquire()).waited for _ in range(3)]
            >>> asyncio.run(main())
            [0.0, 0.5, 0.5]
        """
        return await self._acquire_async(key, self._check_cost(cost), self._em)

    def _acquire_sync(self, key: str | None, cost: float, em: Emitter) -> Decision:
        t0 = self._clock.monotonic()
        r = self._take_sync(key, cost, em)
        return self._decision(r, key, t0, 0.0 if r is None else r[1])

    async def _acquire_async(self, key: str | None, cost: float, em: Emitter) -> Decision:
        t0 = self._clock.monotonic()
        r = await self._take_async(key, cost, em)
        return self._decision(r, key, t0, 0.0 if r is None else r[1])

    def _take_sync(
        self, key: str | None, cost: float, em: Emitter
    ) -> tuple[bool, float, float, float, int, float] | None:
        """Take (waiting up to ``max_wait``) or raise: the admitted decision (``None``: failed
        open), whose ``cost_time`` and ``taken`` are what a refund gives back."""
        r = self._decide(key, cost, self._max_wait(), em)
        if r is None:
            return r
        if not r[0]:
            raise self._rejected(r[1], em)
        wait = r[1]
        if wait > 0:
            self._waited(wait, em)
            res = _Reservation(key, r[2], r[3], self._via(r))
            try:
                self._clock.sleep(wait)
            except BaseException:
                self._give_back(res)
                raise
        return r

    async def _take_async(
        self, key: str | None, cost: float, em: Emitter
    ) -> tuple[bool, float, float, float, int, float] | None:
        mw = self._max_wait()
        r: tuple[bool, float, float, float, int, float] | None
        if self.store is None:
            r = self._local(key, cost, mw)
        else:
            r = await self._avia_store(key, cost, mw, em)
        if r is None:
            return r
        if not r[0]:
            raise self._rejected(r[1], em)
        wait = r[1]
        if wait > 0:
            self._waited(wait, em)
            res = _Reservation(key, r[2], r[3], self._via(r))
            try:
                await self._clock.asleep(wait)
            except BaseException:
                self._give_back_soon(res)
                raise
        return r

    # -- policy wrappers ----------------------------------------------------------------------
    def _fast_path_ok(self) -> bool:
        return self.store is None and self._key is None and not self.max_wait

    # A call refused by a policy inside this one (its own composition's RejectedError, see
    # resilience._policy.own_refusal) never reached the protected function: its permit is given
    # back (the pure refund(): the TAT rolls back by what is left of the call's cost_time (its
    # share of the first-come-first-served backlog ends at t0 + reset_after), never below now,
    # and warm-up's stored tokens come back), through the store in one round trip when shared.
    # The except clauses cost nothing on the happy path.
    def _wrap_sync(self, fn: Callable[..., Any], em: Emitter) -> Callable[..., Any]:
        chain = em.chain
        give_back = self._give_back
        outstanding = self._outstanding
        if not self._fast_path_ok():
            keyfn = self._key
            take = self._take_sync
            via = self._via
            monotonic = self._clock.monotonic

            def rate_limit_wrapper_slow(*args: Any, **kwargs: Any) -> Any:
                key = None if keyfn is None else keyfn(*args, **kwargs)
                t0 = monotonic()
                r = take(key, 1.0, em)
                try:
                    return fn(*args, **kwargs)
                except RejectedError as exc:
                    if r is not None and own_refusal(exc, chain):
                        ct = outstanding(r[2], t0 + r[5])
                        give_back(_Reservation(key, ct, r[3], via(r)))
                    raise

            return rate_limit_wrapper_slow

        lock = self._lock
        monotonic = self._clock.monotonic
        p = self.params
        rejected = self._rejected
        step = transition

        def rate_limit_wrapper(*args: Any, **kwargs: Any) -> Any:
            lock.acquire()
            try:
                s0 = self._stored
                ok, tat, stored, wait, ct = step(self._tat, s0, monotonic(), 1, 0.0, p)
                if ok:
                    self._tat = tat
                    self._stored = stored
            finally:
                lock.release()
            if not ok:
                raise rejected(wait, em)
            try:
                return fn(*args, **kwargs)
            except RejectedError as exc:
                if own_refusal(exc, chain):
                    give_back(_Reservation(None, outstanding(ct, tat), s0 - stored, False))
                raise

        return rate_limit_wrapper

    def _wrap_async(
        self, fn: Callable[..., Awaitable[Any]], em: Emitter
    ) -> Callable[..., Awaitable[Any]]:
        chain = em.chain
        if not self._fast_path_ok():
            keyfn = self._key
            take = self._take_async
            agive_back = self._agive_back
            via = self._via
            monotonic = self._clock.monotonic
            outstanding = self._outstanding

            async def rate_limit_wrapper_slow(*args: Any, **kwargs: Any) -> Any:
                key = None if keyfn is None else keyfn(*args, **kwargs)
                t0 = monotonic()
                r = await take(key, 1.0, em)
                try:
                    return await fn(*args, **kwargs)
                except RejectedError as exc:
                    if r is not None and own_refusal(exc, chain):
                        ct = outstanding(r[2], t0 + r[5])
                        await agive_back(_Reservation(key, ct, r[3], via(r)))
                    raise

            return rate_limit_wrapper_slow

        lock = self._lock
        monotonic = self._clock.monotonic
        p = self.params
        rejected = self._rejected
        step = transition
        give_back = self._give_back
        outstanding = self._outstanding

        async def rate_limit_wrapper(*args: Any, **kwargs: Any) -> Any:
            lock.acquire()
            try:
                s0 = self._stored
                ok, tat, stored, wait, ct = step(self._tat, s0, monotonic(), 1, 0.0, p)
                if ok:
                    self._tat = tat
                    self._stored = stored
            finally:
                lock.release()
            if not ok:
                raise rejected(wait, em)
            try:
                return await fn(*args, **kwargs)
            except RejectedError as exc:
                if own_refusal(exc, chain):
                    give_back(_Reservation(None, outstanding(ct, tat), s0 - stored, False))
                raise

        return rate_limit_wrapper
