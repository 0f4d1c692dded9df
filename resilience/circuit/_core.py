"""The circuit breaker's state machine as pure next-state functions (private).

This module is the specification of the breaker: :class:`resilience.CircuitBreaker` runs these
functions under its own lock (in-process) or inside store operations (``store=``), and the Redis
store runs their Lua twin (``breaker.lua`` in this package). Everything here is integer
arithmetic over a flat list of integers and a frozen configuration, so a Lua script can mirror
it line by line:

* time is an integer number of microseconds (``now``) on the caller's (or the store's) clock;
* the state is one flat ``list[int]`` (layout below), JSON- and Lua-representable;
* :func:`acquire`, :func:`record`, :func:`tick` and :func:`manual` update that list in place and
  return their result; they read nothing else (no clock, no globals, no randomness). The store
  operations copy the list first, so ``StoreOp.apply`` stays pure.

State layout (indices)::

    TOKEN    generation * 4 + state code (CLOSED 0, OPEN 1, HALF_OPEN 2). A permit *is* the
             token it was granted under; an outcome whose permit differs from the current token
             is stale (it started in an older generation) and decides nothing.
    UNTIL    OPEN: when probes may start (-1: forced open by ``open()``, no timer);
             HALF_OPEN: when outstanding probes time out (-1: no probe outstanding).
    OPENS    consecutive openings since the last close (selects the open duration).
    PERMITS  HALF_OPEN: probe permits not granted yet.
    PASSED   HALF_OPEN: probes that reported success. Alias STREAK: CLOSED: the failures
             recorded since the last success (``consecutive_failures``; reset on closing).
    LAST     CLOSED: the bucket number of the newest bucket in the ring.
    CUR      the index in this list of that bucket's ``calls`` (``RING + 3 * (LAST % buckets)``).
    CALLS, FAILS, SLOW   totals over the buckets in the window.
    REJECTED, STALE      counters: calls refused, outcomes ignored as stale.
    RING...  ``buckets`` triples (calls, failures, slow calls); bucket ``k`` lives at slot
             ``k % buckets``.

Window rules (pinned): bucket ``k`` covers ``[k * b, (k + 1) * b)`` microseconds, ``b = window /
buckets``. At time ``now`` (bucket ``e = now // b``) the window is buckets ``e - buckets + 1`` to
``e``: a call recorded at ``t`` counts until the clock reaches ``(t // b + buckets) * b``, i.e.
for between ``window - b`` and ``window``. Outcomes are placed by the time they are recorded.

Threshold rules (pinned): nothing trips while ``calls < min_calls``; then the breaker opens when
``failures / calls >= failure_ratio``, ``failures >= failure_count`` or ``slow / calls >=
slow_call_ratio`` (checked in that order; the first one met is the reason). A call is slow when
its duration is ``> slow_call_duration`` (the caller decides and passes the ``SLOW`` bit).

Streak rule (pinned): with ``consecutive_failures``, a failure recorded in CLOSED adds one to
STREAK and any other outcome (a success, slow or not) sets it to 0; the breaker opens when
``STREAK >= consecutive_failures``, checked before the window's thresholds and regardless of
``min_calls`` and of the window (a streak never expires).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "NEVER",
    "NO_TIMER",
    "OPEN",
    "REFUSED",
    "Config",
    "acquire",
    "count_success",
    "fast_success_until",
    "flush",
    "forced_open",
    "granted",
    "initial_state",
    "manual",
    "record",
    "snapshot",
    "state_of",
    "tick",
    "transition_names",
]

# state codes (low two bits of the token)
CLOSED, OPEN, HALF_OPEN = 0, 1, 2
STATE_BITS = 3  # token & STATE_BITS is the state code; token >> 2 the generation
STATE_NAMES = ("closed", "open", "half_open")

# outcome bits passed to record(); RELEASE gives a permit back without an outcome
SUCCESS, FAILURE, SLOW_BIT = 0, 1, 2
RELEASE = -1

# transition reasons
REASONS = (
    "",
    "failure_ratio",
    "failure_count",
    "slow_call_ratio",
    "probe_failed",
    "probes_succeeded",
    "open_for_elapsed",
    "half_open_timeout",
    "manual",
    "consecutive_failures",
)
R_FAILURE_RATIO, R_FAILURE_COUNT, R_SLOW_RATIO = 1, 2, 3
R_PROBE_FAILED, R_PROBES_SUCCEEDED, R_OPEN_ELAPSED, R_HALF_OPEN_TIMEOUT, R_MANUAL = 4, 5, 6, 7, 8
R_CONSECUTIVE = 9

# sentinels: the permit of a refused call; UNTIL / retry_after_us when no timer runs (forced
# open, or no probe outstanding); fast_success_until() when count_success() is never exact
REFUSED = -1
NO_TIMER = -1  # any negative UNTIL reads as "no timer"
NEVER = -1

# manual actions (M_TICK: none, only the time-driven transitions, as tick())
M_TICK, M_OPEN, M_CLOSE, M_RESET = 0, 1, 2, 3

TOKEN, UNTIL, OPENS, PERMITS, PASSED, LAST = 0, 1, 2, 3, 4, 5
CALLS, FAILS, SLOW, REJECTED, STALE, CUR, RING = 6, 7, 8, 9, 10, 11, 12
STREAK = PASSED  # CLOSED only (PASSED is HALF_OPEN's): the stored layout stays the same

#: A transition: (from state code, to state code, reason code).
Transition = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Config:
    """The breaker's configuration in the units the state machine uses (µs, counts, ratios).

    ``failure_ratio``, ``slow_call_ratio`` are ``0.0`` and ``failure_count``,
    ``consecutive_failures`` are ``0`` when not configured. ``open_us`` is the open duration of
    the 1st, 2nd, ... consecutive opening (the last one repeats). ``bad_mask`` says which
    outcome bits make a half-open probe fail.
    """

    failure_ratio: float
    failure_count: int
    slow_call_ratio: float
    min_calls: int
    buckets: int
    bucket_us: int
    open_us: tuple[int, ...]
    half_open_calls: int
    half_open_timeout_us: int
    bad_mask: int
    consecutive_failures: int = 0

    @property
    def windowed(self) -> bool:
        """Whether a threshold reads the window (so a success may trip the breaker)."""
        return bool(self.failure_ratio or self.failure_count or self.slow_call_ratio)


def state_of(token: int) -> int:
    """The state code of a token, i.e. of the state a permit was granted in.

    Example:
        >>> state_of(4 * 7 + HALF_OPEN) == HALF_OPEN
        True
    """
    return token & STATE_BITS


def granted(permit: int) -> bool:
    """Whether :func:`acquire` granted ``permit`` (a token) rather than refusing the call."""
    return permit >= 0


def forced_open(st: list[int]) -> bool:
    """OPEN with no timer: held open by ``manual(M_OPEN)`` until closed (nothing probes)."""
    return st[TOKEN] & STATE_BITS == OPEN and st[UNTIL] < 0


def transition_names(tr: Transition) -> tuple[str, str, str]:
    """``(from state, to state, reason)`` of a transition, as events spell them.

    Example:
        >>> transition_names((CLOSED, OPEN, R_FAILURE_COUNT))
        ('closed', 'open', 'failure_count')
    """
    return STATE_NAMES[tr[0]], STATE_NAMES[tr[1]], REASONS[tr[2]]


def initial_state(cfg: Config) -> list[int]:
    """A fresh CLOSED state, generation 0, empty window."""
    return [CLOSED, NO_TIMER, 0, 0, 0, 0, 0, 0, 0, 0, 0, RING] + [0] * (3 * cfg.buckets)


def _clear_window(st: list[int], cfg: Config, now: int) -> None:
    e = now // cfg.bucket_us
    st[LAST] = e
    st[CUR] = RING + (e % cfg.buckets) * 3
    st[CALLS] = st[FAILS] = st[SLOW] = st[STREAK] = 0
    for i in range(RING, RING + 3 * cfg.buckets):
        st[i] = 0


def _roll(st: list[int], cfg: Config, e: int) -> None:
    """Advance the ring so that bucket ``e`` is the newest (expired buckets are emptied)."""
    n = cfg.buckets
    last = st[LAST]
    if e - last >= n:
        st[CALLS] = st[FAILS] = st[SLOW] = 0
        for i in range(RING, RING + 3 * n):
            st[i] = 0
    else:
        for k in range(last + 1, e + 1):
            i = RING + (k % n) * 3
            st[CALLS] -= st[i]
            st[FAILS] -= st[i + 1]
            st[SLOW] -= st[i + 2]
            st[i] = st[i + 1] = st[i + 2] = 0
    st[LAST] = e
    st[CUR] = RING + (e % n) * 3


def _goto(st: list[int], cfg: Config, now: int, to: int, reason: int) -> Transition:
    """Enter state ``to`` in a new generation."""
    frm = st[TOKEN] & STATE_BITS
    st[TOKEN] = ((st[TOKEN] >> 2) + 1) << 2 | to
    if to == OPEN:
        opens = st[OPENS] + 1
        st[OPENS] = opens
        table = cfg.open_us
        st[UNTIL] = now + table[min(opens, len(table)) - 1]
    elif to == HALF_OPEN:
        st[UNTIL] = NO_TIMER
        st[PERMITS] = cfg.half_open_calls
        st[PASSED] = 0
    else:
        st[UNTIL] = NO_TIMER
        st[OPENS] = 0
        _clear_window(st, cfg, now)
    return (frm, to, reason)


def tick(st: list[int], cfg: Config, now: int) -> Transition | None:
    """Apply the time-driven transitions due at ``now`` (at most one)."""
    tok = st[TOKEN]
    code = tok & STATE_BITS
    if code == OPEN:
        until = st[UNTIL]
        if until >= 0 and now >= until:
            return _goto(st, cfg, now, HALF_OPEN, R_OPEN_ELAPSED)
    elif code == HALF_OPEN:
        until = st[UNTIL]
        if until >= 0 and now >= until:
            return _goto(st, cfg, now, OPEN, R_HALF_OPEN_TIMEOUT)
    return None


def acquire(st: list[int], cfg: Config, now: int) -> tuple[int, int, Transition | None]:
    """Ask for a permit: ``(permit, retry_after_us, transition)``.

    ``permit >= 0`` is the token to pass back to :func:`record`; ``REFUSED`` means rejected, with
    ``retry_after_us`` the time until the state may admit calls again (``NO_TIMER``: unknown). In
    CLOSED this is read-only, which lets the in-process breaker take it without its lock.
    """
    tr = tick(st, cfg, now)
    tok = st[TOKEN]
    code = tok & STATE_BITS
    if code == CLOSED:
        return tok, 0, tr
    if code == HALF_OPEN and st[PERMITS] > 0:
        st[PERMITS] -= 1
        if st[UNTIL] < 0:
            st[UNTIL] = now + cfg.half_open_timeout_us
        return tok, 0, tr
    st[REJECTED] += 1
    until = st[UNTIL]
    return REFUSED, (until - now if until >= 0 else NO_TIMER), tr


def _evaluate(st: list[int], cfg: Config) -> int:
    calls = st[CALLS]
    if calls < cfg.min_calls:
        return 0
    fails = st[FAILS]
    if cfg.failure_ratio and fails / calls >= cfg.failure_ratio:
        return R_FAILURE_RATIO
    if cfg.failure_count and fails >= cfg.failure_count:
        return R_FAILURE_COUNT
    if cfg.slow_call_ratio and st[SLOW] / calls >= cfg.slow_call_ratio:
        return R_SLOW_RATIO
    return 0


def record(st: list[int], cfg: Config, now: int, permit: int, outcome: int) -> Transition | None:
    """Report the outcome of a call admitted with ``permit``.

    ``outcome`` is a bit set (``FAILURE``, ``SLOW_BIT``; ``0`` is a fast success) or ``RELEASE``
    (the call was cancelled or raised an ignored exception: no outcome, the permit is returned).
    Outcomes carrying a stale permit change nothing but the ``STALE`` counter.
    """
    tok = st[TOKEN]
    if permit != tok:
        if outcome != RELEASE:
            st[STALE] += 1
        return None
    code = tok & STATE_BITS
    if code == CLOSED:
        if outcome == RELEASE:
            return None
        e = now // cfg.bucket_us
        if e > st[LAST]:
            _roll(st, cfg, e)
        i = st[CUR]
        st[i] += 1
        st[CALLS] += 1
        if outcome:
            if outcome & FAILURE:
                st[i + 1] += 1
                st[FAILS] += 1
            if outcome & SLOW_BIT:
                st[i + 2] += 1
                st[SLOW] += 1
        if cfg.consecutive_failures:
            if outcome & FAILURE:
                st[STREAK] += 1
                if st[STREAK] >= cfg.consecutive_failures:
                    return _goto(st, cfg, now, OPEN, R_CONSECUTIVE)
            else:
                st[STREAK] = 0
        if st[FAILS] or st[SLOW]:
            reason = _evaluate(st, cfg)
            if reason:
                return _goto(st, cfg, now, OPEN, reason)
        return None
    if code == HALF_OPEN:
        if outcome == RELEASE:
            st[PERMITS] += 1
            if st[PERMITS] + st[PASSED] >= cfg.half_open_calls:
                st[UNTIL] = NO_TIMER  # nothing outstanding: no half-open timeout armed
            return None
        if outcome & cfg.bad_mask:
            return _goto(st, cfg, now, OPEN, R_PROBE_FAILED)
        st[PASSED] += 1
        if st[PASSED] >= cfg.half_open_calls:
            return _goto(st, cfg, now, CLOSED, R_PROBES_SUCCEEDED)
    return None


def fast_success_until(st: list[int], cfg: Config) -> int:
    """The last µs at which :func:`count_success` is exact, ``NEVER`` when it never is.

    That is 1 µs before the newest bucket ends while the window holds no failure and no slow
    call and no failure streak is running (so a success can neither roll the ring, nor trip
    anything, nor end a streak). The bucket number only grows and the window only gets dirty
    through :func:`record`, so a bound computed after the last :func:`record` stays valid until
    the next one.
    """
    if cfg.consecutive_failures and st[STREAK]:
        return NEVER
    if (st[FAILS] or st[SLOW]) and cfg.windowed:
        return NEVER
    return (st[LAST] + 1) * cfg.bucket_us - 1


def count_success(st: list[int]) -> None:
    """``record(st, cfg, now, st[TOKEN], SUCCESS)`` for ``now <= fast_success_until(st, cfg)``.

    The closed state's success in its cheapest form: one more call in the newest bucket and in
    the totals (the caller checked that the permit is current and the bound).

    Example:
        >>> cfg = Config(0.5, 0, 0.0, 10, 10, 6_000_000, (30_000_000,), 1, 30_000_000, FAILURE)
        >>> st = initial_state(cfg)
        >>> 0 <= fast_success_until(st, cfg)
        True
        >>> count_success(st)
        >>> snapshot(st, cfg, 0)[1]  # calls
        1
    """
    st[st[CUR]] += 1
    st[CALLS] += 1


def flush(st: list[int], cfg: Config, now: int, pending: tuple[int, int, int]) -> Transition | None:
    """Record successes reported late: ``pending = (permit, successes, stale)``.

    A shared breaker reports the successes of CLOSED-state calls with its next operation (one
    round trip per call instead of two): ``successes`` calls admitted with ``permit`` succeeded,
    and ``stale`` more succeeded with permits of older generations. Each success is recorded
    at ``now`` exactly as :func:`record` would (a success can trip the breaker, when it brings
    the window to ``min_calls``); the last transition is returned.
    """
    permit, successes, stale = pending
    if stale:
        st[STALE] += stale
    tr = None
    for _ in range(successes):
        t = record(st, cfg, now, permit, SUCCESS)
        if t is not None:
            tr = t
    return tr


def manual(st: list[int], cfg: Config, now: int, action: int) -> Transition | None:
    """``M_OPEN`` (held open until closed), ``M_CLOSE`` or ``M_RESET`` (close, clear counters)."""
    code = st[TOKEN] & STATE_BITS
    if action == M_OPEN:
        tr = _goto(st, cfg, now, OPEN, R_MANUAL) if code != OPEN else None
        st[UNTIL] = NO_TIMER
        return tr
    tr = _goto(st, cfg, now, CLOSED, R_MANUAL) if code != CLOSED else None
    if action == M_RESET:
        _clear_window(st, cfg, now)
        st[OPENS] = st[REJECTED] = st[STALE] = 0
    return tr


def snapshot(st: list[int], cfg: Config, now: int) -> tuple[int, ...]:
    """``(state code, calls, failures, slow, rejected, stale, opens, until, streak)`` at ``now``.

    ``streak`` is the failures in a row since the last success (CLOSED; 0 in the other states).
    Rolls the window so that expired buckets are excluded (an equivalent state).
    """
    code = st[TOKEN] & STATE_BITS
    streak = 0
    if code == CLOSED:
        e = now // cfg.bucket_us
        if e > st[LAST]:
            _roll(st, cfg, e)
        streak = st[STREAK]
    return (
        code,
        st[CALLS],
        st[FAILS],
        st[SLOW],
        st[REJECTED],
        st[STALE],
        st[OPENS],
        st[UNTIL],
        streak,
    )
