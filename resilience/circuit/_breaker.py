"""Circuit breakers: error ratio, error count and slow-call ratio over a sliding time window.

A breaker is CLOSED (calls run and their outcomes are recorded), OPEN (calls are refused with
:class:`resilience.CircuitOpenError` without running) or HALF_OPEN (a fixed number of probe
calls run; their outcomes decide what comes next).

Pinned rules (see :mod:`resilience._circuit_core` for the state machine itself):

* **Window.** ``window`` seconds split into ``buckets`` equal buckets (default 10). A call counts
  from the moment its outcome is recorded until its bucket is ``buckets`` buckets old: between
  ``window - window/buckets`` and ``window`` seconds.
* **Thresholds.** Nothing trips while the window holds fewer than ``min_calls`` calls. Then the
  breaker opens when ``failures / calls >= failure_ratio``, ``failures >= failure_count`` or
  ``slow / calls >= slow_call_ratio`` (any configured one). A call is slow when its duration is
  strictly greater than ``slow_call_duration``, whether it succeeded or failed.
* **Half-open.** After ``open_for`` seconds exactly ``half_open_calls`` probes are admitted
  (other callers are refused). A probe that fails (or is slow, when ``slow_call_ratio`` is set)
  reopens the breaker at once; when every probe has succeeded it closes, with an empty window.
* **Never stuck.** A probe cancelled or ending with an ignored exception gives its permit back;
  probes that never report are bounded by ``half_open_timeout``: once it has passed since the
  first probe was admitted, the breaker reopens (and later admits fresh probes).
* **Generations.** Every transition starts a new generation and a permit remembers the one it
  was granted in. Outcomes of calls admitted in an older generation (e.g. started while CLOSED,
  finished after the breaker opened) are ignored; they are counted as ``stale``.
* **What counts.** An exception matching ``on`` (default: any :class:`Exception`) or a result
  matching ``on_result`` is a failure; any other exception (and ``CancelledError``,
  ``KeyboardInterrupt``...) records nothing and releases the permit.
* **Our own refusals do not count.** A :class:`resilience.RejectedError` raised by a policy
  *inside* the breaker's composition (an inner rate limiter, bulkhead, adaptive concurrency or
  breaker, in the same :class:`resilience.Pipeline` or stacked on the same function) never
  reached the dependency: it records nothing (neither failure nor success, nor slow) and
  releases the permit, like an ignored exception. A ``RejectedError`` raised by the protected
  function itself (e.g. a client library's refusal) is an ordinary exception, matched against
  ``on``. ``count_rejections=True`` counts inner refusals too (matched against ``on``).
"""

from __future__ import annotations

import enum
import struct
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from . import _core as core
from .._clock import Clock, RandomLike, resolve_clock, resolve_random
from .._degraded import STORE_LOG, state_reset
from .._policy import Emitter, Policy, own_refusal, refusal
from .._types import (
    MAX_SECONDS,
    Duration,
    ExceptionSpec,
    exception_predicate,
    positive_int,
    ratio,
    result_predicate,
    seconds,
)
from ..errors import CircuitOpenError, ConfigurationError, StoreError
from ..events import CallRejected, CircuitStateChanged, Listener, StoreFailed, emit, error_type
from ..stores.base import Store, apply_soon

__all__ = ["CircuitBreaker", "CircuitMetrics", "CircuitState"]

_US = 1_000_000.0
_MAX_BUCKETS = 1000  # the state (3 numbers per bucket) is read and written by every decision
_OPEN_TABLE = 32  # dynamic open durations are tabulated for this many consecutive openings
_FORCED_TTL = float("inf")  # store TTL of a breaker forced open by open(): none
_LOCAL = -2  # in store mode, permits from the local fallback are encoded as _LOCAL - token
_NEVER = float("-inf")
_UNGUARDED = -1  # in store mode, a call let through unguarded (on_store_error="open")


class CircuitState(enum.Enum):
    """The state of a :class:`CircuitBreaker`.

    Example:
        >>> import resilience as rs
        >>> rs.CircuitBreaker("db", failure_ratio=0.5).state
        <CircuitState.CLOSED: 'closed'>
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_STATES = (CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN)


@dataclass(frozen=True, slots=True)
class CircuitMetrics:
    """A read-only snapshot of a breaker.

    Attributes:
        state: the state at the time of the snapshot.
        calls: calls recorded in the current window (CLOSED; frozen while OPEN/HALF_OPEN).
        failures: failed calls among them.
        slow_calls: slow calls among them.
        failure_ratio: ``failures / calls`` (``None`` when no calls).
        slow_call_ratio: ``slow_calls / calls`` (``None`` when no calls).
        rejected: calls refused since creation (or the last ``reset()``).
        stale: outcomes ignored because their call started in an older generation.
        consecutive_opens: openings since the breaker last closed.
        retry_after: seconds until an OPEN breaker admits probes (``None`` otherwise or when
            forced open by ``open()``).
        forced: ``True`` when the breaker is forced open by ``open()`` (no timer).

    Example:
        >>> import resilience as rs
        >>> breaker = rs.CircuitBreaker("db", failure_count=3)
        >>> breaker.call(lambda: "ok")
        'ok'
        >>> m = breaker.metrics
        >>> m.calls, m.failures, m.failure_ratio
        (1, 0, 0.0)
    """

    state: CircuitState
    calls: int
    failures: int
    slow_calls: int
    failure_ratio: float | None
    slow_call_ratio: float | None
    rejected: int
    stale: int
    consecutive_opens: int
    retry_after: float | None
    forced: bool = False


def _open_table(open_for: object, rnd: RandomLike) -> tuple[int, ...]:
    delay = getattr(open_for, "delay", None)
    if callable(delay):
        out: list[int] = []
        prev: float | None = None
        for n in range(1, _OPEN_TABLE + 1):
            try:
                d = float(delay(n, prev, rnd))
            except (TypeError, ValueError, OverflowError) as exc:
                raise ConfigurationError(
                    f"open_for schedule failed for opening {n}: {exc}"
                ) from None
            if not 0 <= d <= MAX_SECONDS:  # NaN fails too
                raise ConfigurationError(
                    f"open_for schedule produced an invalid duration {d!r} for opening {n}: "
                    f"open durations must be between 0 and {MAX_SECONDS:g} seconds"
                )
            prev = d
            out.append(max(1, round(d * _US)))
        while len(out) > 1 and out[-1] == out[-2]:
            out.pop()
        return tuple(out)
    try:
        return (round(seconds(open_for, "open_for", allow_zero=False) * _US),)  # type: ignore[arg-type]
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{exc} (open_for also accepts a resilience.backoff schedule)"
        ) from None


# -- the Lua twin (RedisStore) ----------------------------------------------------------------
# _circuit_core line by line, 1-based: Lua index = Python index + 1 (CUR keeps the Python value).
# The state is one string value: the list packed as little-endian doubles (exact for integers
# below 2**53) followed by its expiry on the script clock, written with SET PX (one GET, one SET
# per decision). ARGV[2] is the packed configuration (_lua_config), ARGV[3] the operation:
# 'a' acquire, 'r' record (ARGV[4] permit, ARGV[5] outcome), 'm' manual (ARGV[4] action; 0 =
# tick). The last three arguments of every operation are core.flush's pending successes
# (permit, count, stale), recorded (rec(), core.record's twin) before the operation. A
# transition is returned as three integers (-1, -1, -1: none); with pending successes it is the
# operation's, else the flush's last. A forced-open state (open()) is written without PX and
# with expiry inf: it never expires. Every reply ends with ``reset``: 1 when the stored state
# was undecodable (NaN, out of range, a half-open state with no permit and no timeout, another
# type...): it was treated as absent and deleted (the pending successes are then recorded on
# the fresh state).
_LUA = """
local now = now_us()
local c = {struct.unpack('<' .. string.rep('d', #ARGV[2] / 8), ARGV[2])}
local fr, fc, sr, minc, nb, bus, hoc, hot, bad, ttl, held =
  c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11]
local nopen = #c - 12  -- the last value is struct.unpack's next position
local TOKEN, UNTIL, OPENS, PERMITS, PASSED, LAST = 1, 2, 3, 4, 5, 6
local CALLS, FAILS, SLOW, REJ, STALE, CUR, RING = 7, 8, 9, 10, 11, 12, 13
local N = 12 + 3 * nb
local fmt = '<' .. string.rep('d', N + 1)
local function fdiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local st
local reset = 0  -- 1: the stored state was undecodable (treated as absent, deleted, reported)
local function valid()
  -- integers (NaN, infinities and fractions fail v % 1 == 0); only UNTIL and LAST may be < 0
  for i = 1, N do
    local v = st[i]
    if v % 1 ~= 0 or (v < 0 and i ~= UNTIL and i ~= LAST) then return false end
  end
  local code, u, cur = st[TOKEN] % 4, st[UNTIL], st[CUR]
  if code == 3 or u < -1 or cur < 12 or cur >= N or (cur - 12) % 3 ~= 0 then return false end
  if st[LAST] > fdiv(now, bus) + nb then return false end
  if code == 2 and u < 0 and st[PERMITS] <= 0 then return false end  -- no permit, no timeout
  if code ~= 0 and u >= 0 then
    local longest = hot
    for i = 12, 11 + nopen do
      if c[i] > longest then longest = c[i] end
    end
    if u > now + longest then return false end
  end
  return true
end
local raw = redis.pcall('GET', KEYS[1])
if type(raw) == 'string' and #raw == 8 * (N + 1) then
  st = {struct.unpack(fmt, raw)}
  if st[N + 1] <= now then
    st = nil
  else
    st[N + 1], st[N + 2] = nil, nil
    if not valid() then st, reset = nil, 1 end
  end
elseif raw then
  reset = 1  -- another type or length
end
if reset == 1 then redis.call('DEL', KEYS[1]) end
if not st then
  st = {0, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12}
  for i = RING, N do st[i] = 0 end
end
local function clear_window(t)
  local e = fdiv(t, bus)
  st[LAST] = e
  st[CUR] = 12 + (e % nb) * 3
  st[CALLS], st[FAILS], st[SLOW] = 0, 0, 0
  for i = RING, N do st[i] = 0 end
end
local function roll(e)
  local last = st[LAST]
  if e - last >= nb then
    st[CALLS], st[FAILS], st[SLOW] = 0, 0, 0
    for i = RING, N do st[i] = 0 end
  else
    for k = last + 1, e do
      local i = RING + (k % nb) * 3
      st[CALLS] = st[CALLS] - st[i]
      st[FAILS] = st[FAILS] - st[i + 1]
      st[SLOW] = st[SLOW] - st[i + 2]
      st[i], st[i + 1], st[i + 2] = 0, 0, 0
    end
  end
  st[LAST] = e
  st[CUR] = 12 + (e % nb) * 3
end
local tf, tt, tr = -1, -1, -1
local function go(to, reason)
  local tok = st[TOKEN]
  tf, tt, tr = tok % 4, to, reason
  st[TOKEN] = (math.floor(tok / 4) + 1) * 4 + to
  if to == 1 then
    local opens = st[OPENS] + 1
    st[OPENS] = opens
    st[UNTIL] = now + c[11 + math.min(opens, nopen)]
  elseif to == 2 then
    st[UNTIL] = -1
    st[PERMITS] = hoc
    st[PASSED] = 0
  else
    st[UNTIL] = -1
    st[OPENS] = 0
    clear_window(now)
  end
end
local function tick()
  local code = st[TOKEN] % 4
  local until_ = st[UNTIL]
  if code == 1 and until_ >= 0 and now >= until_ then
    go(2, 6)
  elseif code == 2 and until_ >= 0 and now >= until_ then
    go(1, 7)
  end
end
local function evaluate()
  local calls = st[CALLS]
  if calls < minc then return 0 end
  local fails = st[FAILS]
  if fr ~= 0 and fails / calls >= fr then return 1 end
  if fc ~= 0 and fails >= fc then return 2 end
  if sr ~= 0 and st[SLOW] / calls >= sr then return 3 end
  return 0
end
local function save()
  if st[TOKEN] % 4 == 1 and st[UNTIL] < 0 then
    -- forced open (open()): no timer and no TTL; it lasts until close() or reset()
    st[N + 1] = math.huge
    redis.call('SET', KEYS[1], struct.pack(fmt, unpack(st)))
    return
  end
  st[N + 1] = now + ttl
  redis.call('SET', KEYS[1], struct.pack(fmt, unpack(st)), 'PX', math.max(1, math.ceil(ttl / 1000)))
end
local function rec(permit, outcome)  -- core.record; true when the state changed
  local tok = st[TOKEN]
  if permit ~= tok then
    if outcome == -1 then return false end
    st[STALE] = st[STALE] + 1
    return true
  end
  local code = tok % 4
  if code == 0 then
    if outcome == -1 then return false end
    local e = fdiv(now, bus)
    if e > st[LAST] then roll(e) end
    local i = st[CUR] + 1
    st[i] = st[i] + 1
    st[CALLS] = st[CALLS] + 1
    if outcome ~= 0 then
      if bit.band(outcome, 1) ~= 0 then
        st[i + 1] = st[i + 1] + 1
        st[FAILS] = st[FAILS] + 1
      end
      if bit.band(outcome, 2) ~= 0 then
        st[i + 2] = st[i + 2] + 1
        st[SLOW] = st[SLOW] + 1
      end
    end
    if st[FAILS] ~= 0 or st[SLOW] ~= 0 then
      local reason = evaluate()
      if reason ~= 0 then go(1, reason) end
    end
    return true
  end
  if code == 2 then
    if outcome == -1 then
      st[PERMITS] = st[PERMITS] + 1
      if st[PERMITS] + st[PASSED] >= hoc then st[UNTIL] = -1 end
    elseif bit.band(outcome, bad) ~= 0 then
      go(1, 4)
    else
      st[PASSED] = st[PASSED] + 1
      if st[PASSED] >= hoc then go(0, 5) end
    end
    return true
  end
  return false
end
-- core.flush: the last three arguments are successes reported late (permit, count, stale)
local na = #ARGV
local ptok, pn, ps = tonumber(ARGV[na - 2]), tonumber(ARGV[na - 1]), tonumber(ARGV[na])
local dirty = false
if ps > 0 then
  st[STALE] = st[STALE] + ps
  dirty = true
end
for _ = 1, pn do
  if rec(ptok, 0) then dirty = true end
end
local op = ARGV[3]
if op == 'a' then
  tick()
  local tok = st[TOKEN]
  local code = tok % 4
  if code == 0 then
    if tf >= 0 or dirty then save() end
    return {tok, 0, tf, tt, tr, reset}
  end
  if code == 2 and st[PERMITS] > 0 then
    st[PERMITS] = st[PERMITS] - 1
    if st[UNTIL] < 0 then st[UNTIL] = now + hot end
    save()
    return {tok, 0, tf, tt, tr, reset}
  end
  st[REJ] = st[REJ] + 1
  save()
  local u = st[UNTIL]
  if u >= 0 then u = u - now end
  return {-1, u, tf, tt, tr, reset}
end
if op == 'r' then
  if rec(tonumber(ARGV[4]), tonumber(ARGV[5])) or dirty then save() end
  return {tf, tt, tr, reset}
end
local action = tonumber(ARGV[4])
local code = st[TOKEN] % 4
if action == 0 then
  tick()
elseif action == 1 then
  if code ~= 1 then go(1, 8) end
  st[UNTIL] = -1
else
  if code ~= 0 then go(0, 8) end
  if action == 3 then
    clear_window(now)
    st[OPENS], st[REJ], st[STALE] = 0, 0, 0
  end
end
code = st[TOKEN] % 4
if code == 0 then
  local e = fdiv(now, bus)
  if e > st[LAST] then roll(e) end
end
save()
return {tf, tt, tr, code, st[CALLS], st[FAILS], st[SLOW], st[REJ], st[STALE], st[OPENS],
        st[UNTIL], now, reset}
"""


def _transition_of(f: int, t: int, r: int) -> core.Transition | None:
    return None if f < 0 else (f, t, r)


_NO_PENDING = (-1, 0, 0)


def _last(first: core.Transition | None, then: core.Transition | None) -> core.Transition | None:
    """The transition a script reports: the operation's, else the flush's (the last one)."""
    return first if then is None else then


class _AcquireOp:
    """StoreOp: :func:`resilience._circuit_core.flush` of ``pending``, then
    :func:`resilience._circuit_core.acquire`, on the stored state."""

    __slots__ = ("breaker", "key", "pending", "reset")
    LUA: ClassVar[str] = _LUA

    def __init__(
        self, key: str, breaker: CircuitBreaker, pending: tuple[int, int, int] = _NO_PENDING
    ) -> None:
        self.key = key
        self.breaker = breaker
        self.pending = pending
        self.reset = False  # set by parse: the stored state was undecodable and was rewritten

    def apply(
        self, state: Any | None, now: float, /
    ) -> tuple[Any | None, tuple[int, int, core.Transition | None], float | None]:
        b = self.breaker
        old = b._fresh() if state is None else state
        st = list(old)
        now_us = round(now * _US)
        flushed = core.flush(st, b._cfg, now_us, self.pending)
        permit, retry_us, tr = core.acquire(st, b._cfg, now_us)
        result = (permit, retry_us, _last(flushed, tr))
        if st == old:  # CLOSED, nothing flushed: read-only (the Lua twin writes nothing either)
            return state, result, None
        return st, result, b._ttl(st)

    def lua_args(self) -> tuple[bytes, str, int, int, int]:
        """The packed configuration, the operation code and the pending successes."""
        return (self.breaker._lua_config, "a", *self.pending)

    def parse(self, reply: Any) -> tuple[int, int, core.Transition | None]:
        """``[permit, retry_after_us, from, to, reason, reset]``."""
        permit, retry_us, f, t, r, reset = reply
        self.reset = reset == 1
        return int(permit), int(retry_us), _transition_of(int(f), int(t), int(r))


class _RecordOp:
    """StoreOp: :func:`resilience._circuit_core.record` on the stored state."""

    __slots__ = ("breaker", "key", "outcome", "pending", "permit", "reset")
    LUA: ClassVar[str] = _LUA

    def __init__(
        self,
        key: str,
        breaker: CircuitBreaker,
        permit: int,
        outcome: int,
        pending: tuple[int, int, int] = _NO_PENDING,
    ) -> None:
        self.key = key
        self.breaker = breaker
        self.permit = permit
        self.outcome = outcome
        self.pending = pending
        self.reset = False

    def apply(
        self, state: Any | None, now: float, /
    ) -> tuple[Any | None, core.Transition | None, float | None]:
        b = self.breaker
        old = b._fresh() if state is None else state
        st = list(old)
        now_us = round(now * _US)
        flushed = core.flush(st, b._cfg, now_us, self.pending)
        result = _last(flushed, core.record(st, b._cfg, now_us, self.permit, self.outcome))
        if st == old:  # nothing recorded (a released permit in CLOSED): keep the entry as is
            return state, result, None
        return st, result, b._ttl(st)

    def lua_args(self) -> tuple[bytes, str, int, int, int, int, int]:
        """The packed configuration, the operation code, the permit, the outcome and the
        pending successes."""
        return (self.breaker._lua_config, "r", self.permit, self.outcome, *self.pending)

    def parse(self, reply: Any) -> core.Transition | None:
        """``[from, to, reason, reset]`` (``-1``: no transition)."""
        f, t, r, reset = reply
        self.reset = reset == 1
        return _transition_of(int(f), int(t), int(r))


class _ManualOp:
    """StoreOp: :func:`resilience._circuit_core.manual` (``action`` 0: only :func:`tick`),
    returning the transition and a :func:`resilience._circuit_core.snapshot`."""

    __slots__ = ("action", "breaker", "key", "pending", "reset")
    LUA: ClassVar[str] = _LUA

    def __init__(
        self,
        key: str,
        breaker: CircuitBreaker,
        action: int,
        pending: tuple[int, int, int] = _NO_PENDING,
    ) -> None:
        self.key = key
        self.breaker = breaker
        self.action = action
        self.pending = pending
        self.reset = False

    def apply(
        self, state: Any | None, now: float, /
    ) -> tuple[Any | None, tuple[core.Transition | None, tuple[int, ...]], float | None]:
        b = self.breaker
        st = b._fresh() if state is None else list(state)
        now_us = round(now * _US)
        flushed = core.flush(st, b._cfg, now_us, self.pending)
        if self.action:
            tr = core.manual(st, b._cfg, now_us, self.action)
        else:
            tr = core.tick(st, b._cfg, now_us)
        tr = _last(flushed, tr)
        return st, (tr, (*core.snapshot(st, b._cfg, now_us), now_us)), b._ttl(st)

    def lua_args(self) -> tuple[bytes, str, int, int, int, int]:
        """The packed configuration, the operation code, the action and the pending
        successes."""
        return (self.breaker._lua_config, "m", self.action, *self.pending)

    def parse(self, reply: Any) -> tuple[core.Transition | None, tuple[int, ...]]:
        """``[from, to, reason, *snapshot, now, reset]``."""
        f, t, r, *snap, reset = reply
        self.reset = reset == 1
        return _transition_of(int(f), int(t), int(r)), tuple(int(v) for v in snap)


class CircuitBreaker(Policy):
    """Stop calling a failing dependency for a while, then probe it.

    See the module documentation (:mod:`resilience.circuit`) for the pinned rules.

    Args:
        name: the breaker's name (events, metrics, and the key of its state in a store).
        failure_ratio: open when ``failures / calls >= failure_ratio`` (in ``(0, 1]``).
        failure_count: open when ``failures >= failure_count`` in the window.
        slow_call_ratio: open when ``slow / calls >= slow_call_ratio`` (in ``(0, 1]``); needs
            ``slow_call_duration``.
        slow_call_duration: a call taking strictly longer than this is slow.
        min_calls: calls the window must hold before any threshold is evaluated (>= 1). Default:
            10 when a ratio threshold is configured, else 1 (so ``failure_count=5`` alone opens
            after 5 failures).
        window: the sliding window, seconds (default 60).
        buckets: how many buckets the window is split into (default 10); the window must split
            into whole microseconds.
        open_for: how long the breaker stays OPEN before probing (default 30 s); or a
            :mod:`resilience.backoff` schedule giving the duration of the n-th consecutive
            opening (e.g. ``rs.backoff.exponential(initial=10, maximum=300, jitter="none")``),
            tabulated at construction for the first 32 openings.
        half_open_calls: probes admitted in HALF_OPEN (default 1).
        half_open_timeout: the longest a half-open episode waits for its probes' outcomes,
            counted from the first probe; then the breaker reopens. Default: ``open_for`` (its
            first duration for a schedule).
        on: exception types or predicate counted as failures (default :class:`Exception`);
            other exceptions are not recorded and release a half-open permit.
        on_result: predicate over results that count as failures (e.g. an HTTP 503 response).
        count_rejections: also count refusals raised by policies inside the breaker (an inner
            rate limiter's :class:`~resilience.RateLimitedError`, a bulkhead's
            :class:`~resilience.BulkheadFullError`, an inner breaker's
            :class:`~resilience.CircuitOpenError`) as outcomes, matched against ``on``. Default
            ``False``: they never reached the dependency, so they record nothing and release
            the permit.
        store: ``None`` (the default: per-process state, fastest) or a
            :class:`resilience.stores.Store` to share the state (key ``"cb:<name>"``);
            constructing a breaker never writes to it. With a :class:`resilience.RedisStore`
            every process using the same Redis and name shares one window, one state and the
            half-open permits: outcomes from all processes count toward the thresholds, an open
            circuit is open everywhere, and exactly ``half_open_calls`` probes run fleet-wide (a
            probe whose process died holds its permit only until ``half_open_timeout``). A
            successful call in the CLOSED state costs one round trip: its success is reported
            with this process's next operation on the breaker (a failure, a slow call and every
            half-open outcome are sent at once). **Trade-off:** a shared breaker
            sees the dependency's health sooner and avoids a probe storm from every instance,
            but one bad node (its own network or configuration failing its calls) can open the
            circuit for the whole fleet. Share it when failures come from the dependency; keep
            ``store=None`` (per process) when they tend to be local to an instance.
        on_store_error: with a store, what to do when it fails: ``"local"`` (default: use this
            process's own breaker state), ``"open"`` (let the call through unguarded) or
            ``"closed"`` (refuse the call).
        clock: time source (durations, window, open time).
        random: randomness for a jittered ``open_for`` schedule.
        listeners: event listeners (:class:`~resilience.events.CircuitStateChanged`,
            :class:`~resilience.events.CallRejected`, :class:`~resilience.events.StoreFailed`).

    Example:
        >>> import resilience as rs
        >>> clock = rs.testing.FakeClock()
        >>> breaker = rs.CircuitBreaker("payments", failure_count=2, open_for=30, clock=clock)
        >>> def charge() -> None:
        ...     raise ConnectionError("refused")
        >>> for _ in range(2):
        ...     try:
        ...         breaker.call(charge)
        ...     except ConnectionError:
        ...         pass
        >>> breaker.state
        <CircuitState.OPEN: 'open'>
        >>> try:
        ...     breaker.call(charge)
        ... except rs.CircuitOpenError as exc:
        ...     print(exc.retry_after)
        30.0
        >>> clock.advance(30)
        >>> breaker.call(lambda: "probe ok"), breaker.state
        ('probe ok', <CircuitState.CLOSED: 'closed'>)
    """

    kind = "circuit_breaker"

    def __init__(
        self,
        name: str,
        /,
        *,
        failure_ratio: float | None = None,
        failure_count: int | None = None,
        slow_call_ratio: float | None = None,
        slow_call_duration: Duration | None = None,
        min_calls: int | None = None,
        window: Duration = 60.0,
        buckets: int = 10,
        open_for: Any = 30.0,
        half_open_calls: int = 1,
        half_open_timeout: Duration | None = None,
        on: ExceptionSpec = Exception,
        on_result: Callable[[Any], bool] | None = None,
        count_rejections: bool = False,
        store: Store | None = None,
        on_store_error: Literal["local", "open", "closed"] = "local",
        clock: Clock | None = None,
        random: RandomLike | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(name=name, listeners=listeners)
        if failure_ratio is None and failure_count is None and slow_call_ratio is None:
            raise ConfigurationError(
                "CircuitBreaker needs at least one threshold: failure_ratio, failure_count "
                "or slow_call_ratio"
            )
        self.failure_ratio = (
            None if failure_ratio is None else ratio(failure_ratio, "failure_ratio")
        )
        self.failure_count = (
            None if failure_count is None else positive_int(failure_count, "failure_count")
        )
        self.slow_call_ratio = (
            None if slow_call_ratio is None else ratio(slow_call_ratio, "slow_call_ratio")
        )
        if slow_call_ratio is not None and slow_call_duration is None:
            raise ConfigurationError("slow_call_ratio needs slow_call_duration (seconds)")
        if slow_call_duration is not None and slow_call_ratio is None:
            raise ConfigurationError(
                "slow_call_duration has no effect without slow_call_ratio; set both"
            )
        self.slow_call_duration = (
            None
            if slow_call_duration is None
            else seconds(slow_call_duration, "slow_call_duration")
        )
        if min_calls is None:
            min_calls = 10 if (failure_ratio is not None or slow_call_ratio is not None) else 1
        self.min_calls = positive_int(min_calls, "min_calls")
        self.window = seconds(window, "window", allow_zero=False)
        self.buckets = positive_int(buckets, "buckets", maximum=_MAX_BUCKETS)
        window_us = round(self.window * _US)
        if window_us % self.buckets:
            raise ConfigurationError(
                f"window ({self.window:g} s) must split into {self.buckets} buckets of whole "
                "microseconds; change window or buckets"
            )
        self._random = resolve_random(random)
        open_us = _open_table(open_for, self._random)
        self.open_for = open_for if hasattr(open_for, "delay") else open_us[0] / _US
        self.half_open_calls = positive_int(half_open_calls, "half_open_calls")
        self.half_open_timeout = (
            open_us[0] / _US
            if half_open_timeout is None
            else seconds(half_open_timeout, "half_open_timeout", allow_zero=False)
        )
        self._on = exception_predicate(on, "on")
        self._on_result = None if on_result is None else result_predicate(on_result, "on_result")
        if not isinstance(count_rejections, bool):
            raise ConfigurationError(f"count_rejections must be a bool, got {count_rejections!r}")
        self.count_rejections = count_rejections
        if store is not None and not callable(getattr(store, "apply", None)):
            raise ConfigurationError(f"store must be a resilience.stores.Store, got {store!r}")
        self.store = store
        if on_store_error not in ("local", "open", "closed"):
            raise ConfigurationError(
                f"on_store_error must be 'local', 'open' or 'closed', got {on_store_error!r}"
            )
        self.on_store_error = on_store_error
        self._clock = resolve_clock(clock)
        self._cfg = core.Config(
            failure_ratio=self.failure_ratio or 0.0,
            failure_count=self.failure_count or 0,
            slow_call_ratio=self.slow_call_ratio or 0.0,
            min_calls=self.min_calls,
            buckets=self.buckets,
            bucket_us=window_us // self.buckets,
            open_us=open_us,
            half_open_calls=self.half_open_calls,
            half_open_timeout_us=round(self.half_open_timeout * _US),
            bad_mask=(core.FAILURE if (failure_ratio or failure_count) else 0)
            | (core.SLOW_BIT if slow_call_ratio is not None else 0),
        )
        self._ttl_s = (window_us + max(open_us) + self._cfg.half_open_timeout_us) / _US + 60.0
        self._key = f"cb:{self.name}"
        cfg = self._cfg
        self._lua_config = struct.pack(  # the Lua twin's configuration (see _LUA)
            f"<{11 + len(open_us)}d",
            cfg.failure_ratio,
            cfg.failure_count,
            cfg.slow_call_ratio,
            cfg.min_calls,
            cfg.buckets,
            cfg.bucket_us,
            cfg.half_open_calls,
            cfg.half_open_timeout_us,
            cfg.bad_mask,
            round(self._ttl_s * _US),
            0.0,  # unused (a forced-open state has no TTL)
            *open_us,
        )
        self._lock = threading.Lock()
        self._st = core.initial_state(self._cfg)
        self._edge = [_NEVER]  # see _wrap_sync
        self._pending = _NO_PENDING  # store mode: successes not reported yet (see _pend)
        self._pending_lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        """Plain data describing the configuration."""
        return {
            "kind": self.kind,
            "name": self.name,
            "failure_ratio": self.failure_ratio,
            "failure_count": self.failure_count,
            "slow_call_ratio": self.slow_call_ratio,
            "slow_call_duration": self.slow_call_duration,
            "min_calls": self.min_calls,
            "window": self.window,
            "buckets": self.buckets,
            "open_for": self.open_for if isinstance(self.open_for, float) else repr(self.open_for),
            "half_open_calls": self.half_open_calls,
            "half_open_timeout": self.half_open_timeout,
            "count_rejections": self.count_rejections,
            "store": None if self.store is None else type(self.store).__name__,
        }

    # -- helpers for the store operations -----------------------------------------------------
    def _fresh(self) -> list[int]:
        return core.initial_state(self._cfg)

    def _ttl(self, st: list[int]) -> float:
        if st[core.TOKEN] & 3 == core.OPEN and st[core.UNTIL] < 0:
            return _FORCED_TTL
        return self._ttl_s

    def _now(self) -> int:
        return round(self._clock.monotonic() * _US)

    # -- events -------------------------------------------------------------------------------
    def _transition(self, tr: core.Transition, em: Emitter | None) -> None:
        event = CircuitStateChanged(
            policy=self.name,
            pipeline=em.pipeline if em else None,
            operation=em.operation if em else "",
            from_state=core.STATE_NAMES[tr[0]],
            to_state=core.STATE_NAMES[tr[1]],
            reason=core.REASONS[tr[2]],
        )
        if em:
            em.emit(event)
        elif self.listeners:
            emit(self.listeners, event)

    def _rejected(self, retry_us: int, em: Emitter) -> CircuitOpenError:
        # no timer (retry_us < 0) only when forced open: an armed OPEN or a half-open episode
        # with every probe out always has its deadline set
        forced = retry_us < 0
        retry_after = None if forced else retry_us / _US
        if em:
            em.emit(
                CallRejected(
                    policy=self.name,
                    pipeline=em.pipeline,
                    operation=em.operation,
                    reason="circuit_open",
                    retry_after=retry_after,
                )
            )
        if forced:
            return refusal(
                CircuitOpenError(
                    f"circuit breaker {self.name!r} is forced open (by open(); no timer: it "
                    "stays open until close() or reset())",
                    policy=self.name,
                    forced=True,
                ),
                em,
            )
        return refusal(
            CircuitOpenError(
                f"circuit breaker {self.name!r} is open", policy=self.name, retry_after=retry_after
            ),
            em,
        )

    def _store_failed(self, exc: BaseException, em: Emitter | None) -> None:
        STORE_LOG.record(self.name, self.on_store_error, f"{exc}")
        event = StoreFailed(
            policy=self.name,
            pipeline=em.pipeline if em else None,
            operation=em.operation if em else "",
            decision=self.on_store_error,
            error_type=error_type(exc) or "",
        )
        if em:
            em.emit(event)
        elif self.listeners:
            emit(self.listeners, event)

    # -- permit-and-record primitives (in-process state) --------------------------------------
    def _acquire_local(self, em: Emitter) -> int:
        """Take a permit from the local state or raise :class:`CircuitOpenError`."""
        with self._lock:
            permit, retry_us, tr = core.acquire(self._st, self._cfg, self._now())
        if tr is not None:
            self._transition(tr, em)
        if permit < 0:
            raise self._rejected(retry_us, em)
        return permit

    def _record_local(
        self, permit: int, outcome: int, em: Emitter, now: float | None = None
    ) -> None:
        st = self._st
        with self._lock:
            if now is None:
                now = self._clock.monotonic()
            tr = core.record(st, self._cfg, round(now * _US), permit, outcome)
            self._edge[0] = (
                ((st[core.LAST] + 1) * self._cfg.bucket_us - 1) / _US
                if not (st[core.FAILS] or st[core.SLOW])
                else _NEVER
            )
        if tr is not None:
            self._transition(tr, em)

    # -- permit-and-record primitives (store) --------------------------------------------------
    def _store_decide(self, result: tuple[int, int, core.Transition | None], em: Emitter) -> int:
        permit, retry_us, tr = result
        if tr is not None:
            self._transition(tr, em)
        if permit < 0:
            raise self._rejected(retry_us, em)
        return permit

    def _store_fallback(self, exc: StoreError, em: Emitter) -> int:
        self._store_failed(exc, em)
        mode = self.on_store_error
        if mode == "open":
            return _UNGUARDED
        if mode == "closed":
            raise refusal(
                CircuitOpenError(
                    f"circuit breaker {self.name!r}: state store unavailable",
                    policy=self.name,
                    retry_after=None,
                ),
                em,
            ) from exc
        return _LOCAL - self._acquire_local(em)

    # One round trip per call in CLOSED: the success of a call admitted in the CLOSED state is
    # not sent on its own; it is reported with this process's next operation on the breaker
    # (its next permit request, a failure, or a state/metrics read), recorded at that time by
    # core.flush exactly as core.record would. Failures, slow calls and every HALF_OPEN outcome
    # are sent at once (the half-open permits stay counted on the server). Pending successes of
    # an operation that fails are dropped (the script may have run: never count them twice).
    def _pend(self, permit: int) -> None:
        """A CLOSED-state call admitted with ``permit`` succeeded: report it later."""
        with self._pending_lock:
            tok, n, stale = self._pending
            if not n or permit == tok:
                self._pending = (permit, n + 1, stale)
            elif permit > tok:  # a newer generation: the older successes are stale
                self._pending = (permit, 1, stale + n)
            else:
                self._pending = (tok, n, stale + 1)

    def _take_pending(self) -> tuple[int, int, int]:
        pending = self._pending
        if pending is _NO_PENDING:
            return pending
        with self._pending_lock:
            pending, self._pending = self._pending, _NO_PENDING
        return pending

    def _acquire_store(self, em: Emitter) -> int:
        assert self.store is not None
        op = _AcquireOp(self._key, self, self._take_pending())
        try:
            result = self.store.apply(op)
        except StoreError as exc:
            return self._store_fallback(exc, em)
        if op.reset:
            state_reset(self.name, em, self.listeners)
        return self._store_decide(result, em)

    async def _aacquire_store(self, em: Emitter) -> int:
        store = self.store
        assert store is not None
        op = _AcquireOp(self._key, self, self._take_pending())
        try:
            if hasattr(store, "aapply"):
                result = await store.aapply(op)
            else:
                result = store.apply(op)
        except StoreError as exc:
            return self._store_fallback(exc, em)
        if op.reset:
            state_reset(self.name, em, self.listeners)
        return self._store_decide(result, em)

    def _record_later(self, permit: int, outcome: int) -> bool:
        """True when the outcome needs no round trip now (see _pend)."""
        if permit & 3 != core.CLOSED:
            return False
        if outcome == core.SUCCESS:
            self._pend(permit)
            return True
        return outcome == core.RELEASE  # nothing to record in CLOSED

    def _record_store(self, permit: int, outcome: int, em: Emitter) -> None:
        if permit == _UNGUARDED or (outcome == core.RELEASE and permit >= 0 and not permit & 3):
            return  # unguarded, or an ignored outcome in CLOSED: nothing to record (no round trip)
        if permit <= _LOCAL:
            self._record_local(_LOCAL - permit, outcome, em)
            return
        if self._record_later(permit, outcome):
            return
        assert self.store is not None
        op = _RecordOp(self._key, self, permit, outcome, self._take_pending())
        try:
            tr = self.store.apply(op)
        except StoreError as exc:
            self._store_failed(exc, em)
            return
        if op.reset:
            state_reset(self.name, em, self.listeners)
        if tr is not None:
            self._transition(tr, em)

    async def _arecord_store(self, permit: int, outcome: int, em: Emitter) -> None:
        store = self.store
        if (
            permit == _UNGUARDED
            or permit <= _LOCAL
            or (outcome == core.RELEASE and not permit & 3)
            or not hasattr(store, "aapply")
        ):
            self._record_store(permit, outcome, em)
            return
        if self._record_later(permit, outcome):
            return
        assert store is not None
        op = _RecordOp(self._key, self, permit, outcome, self._take_pending())
        try:
            tr = await store.aapply(op)
        except StoreError as exc:
            self._store_failed(exc, em)
            return
        if op.reset:
            state_reset(self.name, em, self.listeners)
        if tr is not None:
            self._transition(tr, em)

    def _release_soon(self, permit: int, em: Emitter) -> None:
        """Give a permit back from async code: never awaited, never blocking the event loop."""
        if permit == _UNGUARDED or permit <= _LOCAL:
            self._record_store(permit, core.RELEASE, em)  # no store involved
            return
        if not permit & 3:
            return  # a CLOSED permit: nothing to give back (the Lua twin writes nothing either)
        op = _RecordOp(self._key, self, permit, core.RELEASE)
        apply_soon(self.store, op, lambda exc: self._store_failed(exc, em))

    # -- wrappers -----------------------------------------------------------------------------
    # The in-process wrappers take no lock to get a permit in CLOSED (core.acquire is read-only
    # there: the permit is the token, one atomic list read), and record a fast success through
    # a fast path of core.record, valid when the permit is current (CLOSED, same generation)
    # and the clock is below ``self._edge[0]``. That bound is recomputed under the lock after
    # every core.record: 1 µs before the newest bucket ends when the window holds no failure
    # and no slow call (so a success cannot trip anything), else -inf. The bucket number only
    # grows and the window only gets dirty through core.record, so a stale bound stays valid.
    # Everything else goes through core.record under the lock.
    def _wrap_sync(self, fn: Callable[..., Any], em: Emitter) -> Callable[..., Any]:
        if self.store is not None:
            return self._wrap_sync_store(fn, em)
        st = self._st
        lock = self._lock
        mono = self._clock.monotonic
        edge = self._edge
        acquire = self._acquire_local
        settle = self._settle_local
        record = self._record_local
        on_result = self._on_result
        slow_s = self.slow_call_duration

        if slow_s is None and on_result is None:

            def circuit_wrapper(*args: Any, **kwargs: Any) -> Any:
                permit = st[0]
                if permit & 3:  # not CLOSED
                    permit = acquire(em)
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    settle(permit, exc, 0.0, em)
                    raise
                with lock:
                    now = mono()
                    if now < edge[0] and permit == st[0]:
                        st[st[11]] += 1
                        st[6] += 1
                        return result
                record(permit, 0, em, now)
                return result

            return circuit_wrapper

        timed = slow_s is not None
        limit = slow_s or 0.0

        def general_circuit_wrapper(*args: Any, **kwargs: Any) -> Any:
            permit = st[0]
            if permit & 3:
                permit = acquire(em)
            start = mono() if timed else 0.0
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                settle(permit, exc, start, em)
                raise
            outcome = 1 if on_result is not None and on_result(result) else 0
            with lock:
                now = mono()
                if timed and now - start > limit:
                    outcome |= 2
                if not outcome and now < edge[0] and permit == st[0]:
                    st[st[11]] += 1
                    st[6] += 1
                    return result
            record(permit, outcome, em, now)
            return result

        return general_circuit_wrapper

    def _wrap_async(
        self, fn: Callable[..., Awaitable[Any]], em: Emitter
    ) -> Callable[..., Awaitable[Any]]:
        if self.store is not None:
            return self._wrap_async_store(fn, em)
        st = self._st
        lock = self._lock
        mono = self._clock.monotonic
        edge = self._edge
        acquire = self._acquire_local
        settle = self._settle_local
        record = self._record_local
        on_result = self._on_result
        slow_s = self.slow_call_duration
        timed = slow_s is not None
        limit = slow_s or 0.0

        async def circuit_wrapper(*args: Any, **kwargs: Any) -> Any:
            permit = st[0]
            if permit & 3:
                permit = acquire(em)
            start = mono() if timed else 0.0
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                settle(permit, exc, start, em)
                raise
            outcome = 1 if on_result is not None and on_result(result) else 0
            with lock:
                now = mono()
                if timed and now - start > limit:
                    outcome |= 2
                if not outcome and now < edge[0] and permit == st[0]:
                    st[st[11]] += 1
                    st[6] += 1
                    return result
            record(permit, outcome, em, now)
            return result

        return circuit_wrapper

    def _settle_local(self, permit: int, exc: BaseException, start: float, em: Emitter) -> None:
        """Record the outcome of a call that raised ``exc`` in the local state."""
        end = self._clock.monotonic()
        outcome = self._outcome(exc, None, start, end, em.chain)
        if outcome == core.RELEASE and not permit & 3:
            return  # an ignored outcome in CLOSED: nothing to record or give back
        self._record_local(permit, outcome, em, end)

    def _outcome(
        self, exc: BaseException | None, result: object, start: float, end: float, chain: object
    ) -> int:
        """The outcome bits of a finished call (``RELEASE`` when it must not be recorded).

        ``chain``: the breaker's composition; a refusal by a policy inside it is released
        unless ``count_rejections``.
        """
        if exc is not None:
            if not (isinstance(exc, Exception) and self._on(exc)) or (
                not self.count_rejections and own_refusal(exc, chain)
            ):
                return core.RELEASE
            outcome = core.FAILURE
        elif self._on_result is not None and self._on_result(result):
            outcome = core.FAILURE
        else:
            outcome = core.SUCCESS
        slow_s = self.slow_call_duration
        if slow_s is not None and end - start > slow_s:
            outcome |= core.SLOW_BIT
        return outcome

    def _wrap_sync_store(self, fn: Callable[..., Any], em: Emitter) -> Callable[..., Any]:
        mono = self._clock.monotonic
        chain = em.chain

        def store_circuit_wrapper(*args: Any, **kwargs: Any) -> Any:
            permit = self._acquire_store(em)
            start = mono()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                self._record_store(permit, self._outcome(exc, None, start, mono(), chain), em)
                raise
            self._record_store(permit, self._outcome(None, result, start, mono(), chain), em)
            return result

        return store_circuit_wrapper

    def _wrap_async_store(
        self, fn: Callable[..., Awaitable[Any]], em: Emitter
    ) -> Callable[..., Awaitable[Any]]:
        mono = self._clock.monotonic
        chain = em.chain

        async def store_circuit_wrapper(*args: Any, **kwargs: Any) -> Any:
            permit = await self._aacquire_store(em)
            start = mono()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                outcome = self._outcome(exc, None, start, mono(), chain)
                if outcome == core.RELEASE:
                    # cancelled: give the permit back without awaiting (we may be cancelled
                    # again) and without blocking the loop on the store
                    self._release_soon(permit, em)
                else:
                    await self._arecord_store(permit, outcome, em)
                raise
            await self._arecord_store(permit, self._outcome(None, result, start, mono(), chain), em)
            return result

        return store_circuit_wrapper

    # -- inspection and manual control --------------------------------------------------------
    def _control(self, action: int) -> tuple[int, ...]:
        """Run a manual action (0: just the time-driven transitions); return a snapshot."""
        tr: core.Transition | None
        if self.store is not None:
            pending = self._take_pending()
            if action not in (0, core.M_OPEN):
                pending = _NO_PENDING  # close/reset start a new window: drop older successes
            op = _ManualOp(self._key, self, action, pending)
            try:
                tr, snap = self.store.apply(op)
                if op.reset:
                    state_reset(self.name, None, self.listeners)
            except StoreError as exc:
                self._store_failed(exc, None)
                if self.on_store_error != "local":
                    raise
                tr, snap = self._control_local(action)
        else:
            tr, snap = self._control_local(action)
        if tr is not None:
            self._transition(tr, None)
        return snap

    def _control_local(self, action: int) -> tuple[core.Transition | None, tuple[int, ...]]:
        with self._lock:
            now = self._now()
            st, cfg = self._st, self._cfg
            tr = core.manual(st, cfg, now, action) if action else core.tick(st, cfg, now)
            return tr, (*core.snapshot(st, cfg, now), now)

    @property
    def state(self) -> CircuitState:
        """The current state (applying any transition that is due by now).

        Example:
            >>> import resilience as rs
            >>> breaker = rs.CircuitBreaker("db", failure_count=1)
            >>> breaker.open()
            >>> breaker.state
            <CircuitState.OPEN: 'open'>
        """
        return _STATES[self._control(0)[0]]

    @property
    def metrics(self) -> CircuitMetrics:
        """A :class:`CircuitMetrics` snapshot of the window and counters."""
        code, calls, fails, slow, rejected, stale, opens, until, now = self._control(0)
        return CircuitMetrics(
            state=_STATES[code],
            calls=calls,
            failures=fails,
            slow_calls=slow,
            failure_ratio=fails / calls if calls else None,
            slow_call_ratio=slow / calls if calls else None,
            rejected=rejected,
            stale=stale,
            consecutive_opens=opens,
            retry_after=(until - now) / _US if code == core.OPEN and until >= 0 else None,
            forced=code == core.OPEN and until < 0,
        )

    def open(self) -> None:
        """Force the breaker open: no timer, no probes, until :meth:`close` or :meth:`reset`.

        A forced open is not a trip: ``open_for`` does not apply, nothing moves it to
        HALF_OPEN, refused calls get a :class:`~resilience.CircuitOpenError` with ``forced=True``
        and ``retry_after=None`` (adapters send no ``Retry-After`` and say "forced open" in the
        problem detail), and ``metrics.forced`` is ``True``. In a store the forced state has
        **no TTL**: it survives any idle period (see the docs' shared-state section).

        Example:
            >>> import resilience as rs
            >>> breaker = rs.CircuitBreaker("db", failure_ratio=0.5)
            >>> breaker.open()
            >>> try:
            ...     breaker.call(print, "never printed")
            ... except rs.CircuitOpenError as exc:
            ...     print(exc.forced, exc.retry_after)
            True None
            >>> breaker.metrics.forced
            True
        """
        self._control(core.M_OPEN)

    def close(self) -> None:
        """Close the breaker with an empty window (in-flight calls' outcomes become stale).

        Example:
            >>> import resilience as rs
            >>> breaker = rs.CircuitBreaker("db", failure_ratio=0.5)
            >>> breaker.open(); breaker.close()
            >>> breaker.state
            <CircuitState.CLOSED: 'closed'>
        """
        self._control(core.M_CLOSE)

    def reset(self) -> None:
        """Close the breaker and clear its window and counters.

        Example:
            >>> import resilience as rs
            >>> breaker = rs.CircuitBreaker("db", failure_ratio=0.5)
            >>> breaker.call(lambda: None)
            >>> breaker.reset()
            >>> breaker.metrics.calls
            0
        """
        self._control(core.M_RESET)
