"""Several windows, one decision: the pure multi-window check and refund, and their store ops.

A bucket of a multi-window limiter is a flat list ``[tat0, stored0, interval0, tat1, ...]``:
per window its state and the emission interval it was charged at. :func:`take_all` runs the
one-window :func:`~._core.transition` on every window: the call is admitted only if every
window admits it, and then every window is charged; otherwise nothing changes and
``retry_after`` is the latest of the windows that refused. :func:`refund_all` gives back what
each window was charged. A key that changed tier keeps the permits each window spent: a window
charged at another interval has its backlog rescaled to the new one (warm-up tokens capped at
the new maximum); windows the state lacks start fresh, extra ones are dropped. The Redis twins
run the very same Lua as the one-window scripts (``take.lua``, ``report.lua``, ``status.lua``,
``refund.lua``) once per window, between ``windows.lua`` / ``window.lua`` and ``keep.lua`` /
``save_all.lua``: one script, one round trip, for every window.

Example:
    >>> from resilience.ratelimit import limit_params
    >>> ps = (limit_params(rate=2), limit_params(rate=3, per=60))
    >>> state, result = take_all(None, 10.0, 1.0, 0.0, ps)
    >>> state, result[0], [w[0] for w in result[4]]
    ([10.5, 0.0, 0.5, 30.0, 0.0, 20.0], True, [1, 2])
"""

from __future__ import annotations

import functools
import math
import struct
from typing import Any, ClassVar

from ..stores._lua import script
from ._core import fresh_at, new_state, refund, status, transition
from ._options import LimitParams
from ._store import _packed

__all__ = ["MultiResult", "_RefundAllOp", "_TakeAllOp", "refund_all", "take_all"]

_INF = math.inf

#: ``(allowed, wait_or_retry_after, cost_times, takens, windows)``; ``windows`` holds each
#: window's ``(remaining, reset_after, retry_after)`` (``retry_after`` 0.0 where it admitted).
MultiResult = tuple[
    bool, float, tuple[float, ...], tuple[float, ...], tuple[tuple[int, float, float], ...]
]


@functools.lru_cache(maxsize=1024)
def _packed_all(ps: tuple[LimitParams, ...], a: float, b: float) -> bytes:
    """Every window's parameters and an operation's two numbers, as one script argument."""
    return b"".join([_packed(p, a, b) for p in ps])


@functools.lru_cache(maxsize=64)
def _reply_struct(n: int) -> struct.Struct:
    """The packed reply of a take on ``n`` windows (``2 + 5 * n`` doubles)."""
    return struct.Struct(f"<{2 + 5 * n}d")


def _state(state: list[float] | None, now: float, ps: tuple[LimitParams, ...]) -> list[float]:
    """``state`` with one ``(tat, stored, interval)`` per window of ``ps``: a window charged at
    another interval keeps the permits it spent (its backlog rescaled), missing ones fresh."""
    flat: list[float] = []
    m = 0 if state is None else min(len(state) // 3, len(ps))
    for i, p in enumerate(ps):
        if i < m:
            assert state is not None
            tat, stored, was = state[3 * i], state[3 * i + 1], state[3 * i + 2]
            interval = p.interval
            if was != interval and tat > now and was != _INF and interval != _INF:
                tat = now + (tat - now) * (interval / was)
            if stored > p.max_tokens:
                stored = p.max_tokens
            flat += (tat, stored, interval)
        else:
            flat += (*new_state(now, p), p.interval)
    return flat


def take_all(
    state: list[float] | None,
    now: float,
    cost: float,
    max_wait: float,
    ps: tuple[LimitParams, ...],
) -> tuple[list[float], MultiResult]:
    """The multi-window decision: ``(state to keep, result)`` (the state is unchanged when
    refused; see :data:`MultiResult`)."""
    old = _state(state, now, ps)
    steps = [
        transition(old[3 * i], old[3 * i + 1], now, cost, max_wait, p) for i, p in enumerate(ps)
    ]
    ok = all(s[0] for s in steps)
    wait = 0.0
    for s in steps:
        if s[0] is ok and s[3] > wait:  # admitted: the longest wait; refused: the latest retry
            wait = s[3]
    new = [x for s, p in zip(steps, ps, strict=True) for x in (s[1], s[2], p.interval)]
    if not ok:
        new = old
    wins = []
    for i, p in enumerate(ps):
        remaining, reset_after = status(new[3 * i], now, p, new[3 * i + 1])
        wins.append((remaining, reset_after, 0.0 if steps[i][0] else steps[i][3]))
    if ok:
        cts = tuple(s[4] for s in steps)
        takens = tuple(old[3 * i + 1] - s[2] for i, s in enumerate(steps))
    else:
        cts = takens = (0.0,) * len(ps)
    return new, (ok, wait, cts, takens, tuple(wins))


def ttl_of(state: list[float], now: float, ps: tuple[LimitParams, ...]) -> float:
    """Seconds until every window of ``state`` is fresh again (the bucket can be dropped)."""
    n = len(state) // 3
    return max(fresh_at(state[3 * i], state[3 * i + 1], ps[i]) for i in range(n)) - now


def refund_all(
    state: list[float],
    now: float,
    cost_times: tuple[float, ...],
    takens: tuple[float, ...],
    ps: tuple[LimitParams, ...],
) -> list[float]:
    """Give a multi-window reservation back to every window of ``state`` it charged (the
    windows of ``ps``; carried over like :func:`take_all` does, others dropped)."""
    m = min(len(state) // 3, len(ps))
    ps = ps[:m]
    old = _state(state, now, ps)
    out: list[float] = []
    for i, p in enumerate(ps):
        at, st = refund(old[3 * i], old[3 * i + 1], now, cost_times[i], takens[i], p)
        out += (at, st, p.interval)
    return out


def _compose(*parts: str) -> str:
    return "".join(p if "\n" in p else script(__package__, f"{p}.lua") for p in parts)


class _TakeAllOp:
    """The store operation for one multi-window check (:func:`take_all`); one round trip."""

    __slots__ = ("cost", "key", "max_wait", "ps", "reset")

    BINARY_REPLY: ClassVar[bool] = True
    LUA_STANDALONE: ClassVar[bool] = True
    LUA: ClassVar[str] = _compose(
        "clock",
        "windows",
        "local all_ok, wmax, rmax, T = true, 0.0, 0.0, {}\nfor i = 1, n do\n",
        "window",
        "take",
        "decide",
        "end\nlocal out = {}\nfor i = 1, n do\n",
        "window",
        "local w, ok = T[i], all_ok\nlocal tat2, stored2, cost_time = w[4], w[5], w[7]\n",
        "report",
        "status",
        "keep",
        "collect",
        "end\nlocal k, write, flag = n, all_ok or present, 0\nif all_ok then flag = 1 end\n"
        "local reply = struct.pack('<' .. string.rep('d', 2 + 5 * n), flag + 2 * reset,\n"
        "  all_ok and wmax or rmax, unpack(out))\n",
        "save_all",
    )

    def __init__(self, key: str, cost: float, max_wait: float, ps: tuple[LimitParams, ...]) -> None:
        self.key = key
        self.cost = cost
        self.max_wait = max_wait
        self.ps = ps
        self.reset = False  # set by parse: the stored state was undecodable and was rewritten

    def apply(self, state: Any | None, now: float, /) -> tuple[Any | None, MultiResult, Any]:
        ps = self.ps
        new, result = take_all(state, now, self.cost, self.max_wait, ps)
        if not result[0] and state is None:
            return None, result, None
        ttl = ttl_of(new, now, ps)
        return (new, result, ttl) if ttl > 0 else (None, result, None)

    def lua_args(self) -> tuple[bytes]:
        """Per window: its parameters, cost and max_wait, packed (the script's ARGV[2])."""
        return (_packed_all(self.ps, self.cost, self.max_wait),)

    def parse(self, reply: Any) -> MultiResult:
        """The Lua reply: ``2 + 5 * windows`` packed doubles (see ``collect.lua``)."""
        n = len(self.ps)
        v = _reply_struct(n).unpack(reply)
        ok = v[0]
        if ok >= 2.0:
            self.reset = True
            ok -= 2.0
        w = v[2:]
        return (
            ok == 1.0,
            v[1],
            w[0::5],
            w[1::5],
            tuple([(int(w[5 * i + 2]), w[5 * i + 3], w[5 * i + 4]) for i in range(n)]),
        )


class _RefundAllOp:
    """The store operation giving a multi-window reservation back (:func:`refund_all`)."""

    __slots__ = ("cost_times", "key", "ps", "takens")

    LUA_STANDALONE: ClassVar[bool] = True
    LUA: ClassVar[str] = _compose(
        "clock",
        "windows",
        "for i = 1, m do\n",
        "window",
        "refund",
        "keep",
        "end\nlocal k, write, reply = m, true, nil\n",
        "save_all",
    )

    def __init__(
        self,
        key: str,
        cost_times: tuple[float, ...],
        takens: tuple[float, ...],
        ps: tuple[LimitParams, ...],
    ) -> None:
        self.key = key
        self.cost_times = cost_times
        self.takens = takens
        self.ps = ps

    def apply(self, state: Any | None, now: float, /) -> tuple[Any | None, None, float | None]:
        if state is None:
            return None, None, None
        new = refund_all(state, now, self.cost_times, self.takens, self.ps)
        ttl = ttl_of(new, now, self.ps) if new else 0.0
        return (new, None, ttl) if ttl > 0 else (None, None, None)

    def lua_args(self) -> tuple[bytes]:
        """Per window: its parameters, cost_time and taken tokens, packed."""
        return (
            b"".join(
                [
                    _packed(p, ct, tk)
                    for p, ct, tk in zip(self.ps, self.cost_times, self.takens, strict=True)
                ]
            ),
        )

    def parse(self, reply: Any) -> None:
        """No result."""
