"""The adaptive throttle's store operation: the core on a stored window, or its Lua twin
(private).

One operation per decision: the finished calls this process has not reported yet (``done``,
``accepted`` of them accepted) are counted, the rejection is decided with the caller's uniform
draw and a rejected request counted, all in one round trip (``draw=None``: a snapshot).

Example:
    >>> import resilience as rs
    >>> from resilience.throttle._core import config
    >>> cfg = config(window_us=60_000_000, buckets=10, k=2.0, cap=1.0)
    >>> store = rs.MemoryStore()
    >>> # each call reports a refused one: p = 1/2, 2/3, ... against the draw 0.55
    >>> [store.apply(_ThrottleOp("thr:api", cfg, 1, 0, 0.55))[0] for _ in range(3)]
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
    """StoreOp: :func:`._core.decide` then :func:`._core.reject` when ``draw`` is below the
    probability (or :func:`._core.snapshot` when ``draw`` is ``None``) on the stored window."""

    __slots__ = ("accepted", "cfg", "done", "draw", "key", "reset")
    LUA: ClassVar[str] = LUA

    def __init__(
        self, key: str, cfg: core.Config, done: int, accepted: int, draw: float | None
    ) -> None:
        self.key = key
        self.cfg = cfg
        self.done = done
        self.accepted = accepted
        self.draw = draw
        self.reset = False  # set by parse: the stored state was undecodable and was rewritten

    def apply(self, state: Any | None, now: float, /) -> tuple[Any | None, Decision, float | None]:
        cfg = self.cfg
        now_us = round(now * 1_000_000)
        draw = self.draw
        done, accepted = self.done, self.accepted
        if draw is None:
            if state is None and not done:
                return None, (False, 0, 0, 0), None
            st = core.fresh(cfg, now_us) if state is None else list(state)
            req, acc = core.snapshot(st, cfg, now_us, done, accepted)
            if not done:  # a read (the Lua twin writes nothing either)
                return state, (False, 0, req, acc), None
            return st, (False, 0, req, acc), cfg.window_us / 1e6
        st = core.fresh(cfg, now_us) if state is None else list(state)
        rejected = draw < core.decide(st, cfg, now_us, done, accepted)
        retry = 0
        if rejected:
            core.reject(st, cfg, now_us)
            retry = core.retry_us(cfg, now_us)
        elif not done:  # nothing counted (the Lua twin writes nothing either)
            return (state, (False, 0, st[core.REQ], st[core.ACC]), None)
        return st, (rejected, retry, st[core.REQ], st[core.ACC]), cfg.window_us / 1e6

    def lua_args(self) -> tuple[int, int, str, str, int, int, str]:
        """The window's shape, k, the cap, the finished and accepted calls and the draw
        (``''``: none)."""
        c = self.cfg
        draw = "" if self.draw is None else repr(self.draw)
        return (c.buckets, c.bucket_us, repr(c.k), repr(c.cap), self.done, self.accepted, draw)

    def parse(self, reply: Any) -> Decision:
        """``[rejected, retry_after_us, requests, accepts, reset]``."""
        rejected, retry, req, acc, reset = reply
        self.reset = reset == 1
        return rejected == 1, int(retry), int(req), int(acc)
