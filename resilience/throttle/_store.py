"""The adaptive throttle's store operation: the core on a stored window, or its Lua twin
(private).

One operation per decision: the accepts this process has not reported yet are counted, then
the request, and the rejection is decided with the caller's uniform draw, all in one round
trip (``draw=None``: a snapshot, no request).

Example:
    >>> import resilience as rs
    >>> from resilience.throttle._core import config
    >>> cfg = config(window_us=60_000_000, buckets=10, k=2.0, cap=1.0)
    >>> store = rs.MemoryStore()
    >>> # no accepts reported: after one request, p = 1/2 is above the draw 0.1
    >>> [store.apply(_ThrottleOp("thr:api", cfg, 0, 0.1))[0] for _ in range(3)]
    [False, True, True]
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..stores._lua import script
from . import _core as core

__all__ = ["Decision", "_ThrottleOp"]

LUA = script(__package__, "throttle.lua")

#: ``(rejected, retry_after_us, requests, accepts)``: the window after the operation.
Decision = tuple[bool, int, int, int]


class _ThrottleOp:
    """StoreOp: :func:`._core.decide` (or :func:`._core.snapshot` when ``draw`` is ``None``)
    on the stored window, after counting ``accepted`` late-reported accepts."""

    __slots__ = ("accepted", "cfg", "draw", "key", "reset")
    LUA: ClassVar[str] = LUA

    def __init__(self, key: str, cfg: core.Config, accepted: int, draw: float | None) -> None:
        self.key = key
        self.cfg = cfg
        self.accepted = accepted
        self.draw = draw
        self.reset = False  # set by parse: the stored state was undecodable and was rewritten

    def apply(self, state: Any | None, now: float, /) -> tuple[Any | None, Decision, float | None]:
        cfg = self.cfg
        now_us = round(now * 1_000_000)
        draw = self.draw
        if draw is None:
            if state is None and not self.accepted:
                return None, (False, 0, 0, 0), None
            st = core.fresh(cfg, now_us) if state is None else list(state)
            req, acc = core.snapshot(st, cfg, now_us, self.accepted)
            if not self.accepted:  # a read (the Lua twin writes nothing either)
                return state, (False, 0, req, acc), None
            return st, (False, 0, req, acc), cfg.window_us / 1e6
        st = core.fresh(cfg, now_us) if state is None else list(state)
        rejected = draw < core.decide(st, cfg, now_us, self.accepted)
        retry = core.retry_us(cfg, now_us) if rejected else 0
        return st, (rejected, retry, st[core.REQ], st[core.ACC]), cfg.window_us / 1e6

    def lua_args(self) -> tuple[int, int, str, str, int, str]:
        """The window's shape, k, the cap, the late accepts and the draw (``''``: none)."""
        c = self.cfg
        draw = "" if self.draw is None else repr(self.draw)
        return (c.buckets, c.bucket_us, repr(c.k), repr(c.cap), self.accepted, draw)

    def parse(self, reply: Any) -> Decision:
        """``[rejected, retry_after_us, requests, accepts, reset]``."""
        rejected, retry, req, acc, reset = reply
        self.reset = reset == 1
        return rejected == 1, int(retry), int(req), int(acc)
