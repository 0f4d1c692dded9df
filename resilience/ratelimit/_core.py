"""The pure core of the rate limiter: GCRA, Guava/Sentinel warm-up and pacing as functions.

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
reservation back with :func:`refund`. The Redis store mirrors these functions in Lua
(``bucket.lua``, ``take.lua``, ``refund.lua``, ``save.lua``), number for number.

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

import math

from ._options import LimitParams
from ._options import limit_params as limit_params  # the examples use it

__all__ = ["EPS", "fresh_at", "new_state", "refund", "status", "transition"]

#: Float slack (seconds) in admission checks, so sums of intervals that are exactly on the
#: boundary are not rejected over rounding noise.
EPS = 1e-9
_INF = math.inf


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


def new_state(now: float, p: LimitParams) -> tuple[float, float]:
    """A brand-new bucket: idle, and cold (full of stored tokens) when warm-up is on."""
    return (now, p.max_tokens)
