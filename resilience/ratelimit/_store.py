"""The limiter's store operations: a check and a refund, each with its Lua twin.

:class:`_TakeOp` and :class:`_RefundOp` run the pure core (:mod:`._core`) on a bucket's stored
``[tat, stored]`` in a :class:`~resilience.MemoryStore`; on Redis the same numbers come from
their scripts, composed from this package's ``.lua`` files: ``clock.lua`` + ``bucket.lua``
(parameters, state) + ``take.lua``, ``report.lua``, ``status.lua``, ``reply.lua`` or
``refund.lua`` + ``save.lua`` (write back, reply); the multi-window scripts of
:mod:`._windows` run the same parts once per window. Both scripts are standalone (no store
prelude, no closures: the take runs on every decision). Parameters travel as packed doubles
and the take's reply is six packed doubles: no decimal formatting or parsing on either side.

Example:
    >>> from resilience.ratelimit import limit_params
    >>> op = _TakeOp("rl:api", 1.0, 0.0, limit_params(rate=2))
    >>> state, result, ttl = op.apply(None, 10.0)
    >>> state, result, ttl
    ([10.5, 0.0], (True, 0.0, 0.5, 0.0, 1, 0.5), 0.5)
"""

from __future__ import annotations

import functools
import struct
from typing import Any, ClassVar

from ..stores._lua import script
from ._core import fresh_at, new_state, refund, status, transition
from ._options import LimitParams

__all__ = ["_RefundOp", "_TakeOp"]

_PARAMS = struct.Struct("<8d")
_REPLY = struct.Struct("<6d")


def _compose(*steps: str) -> str:
    """One bucket script: the shared clock and state load, the ``steps`` and the shared save."""
    return "".join(script(__package__, f"{n}.lua") for n in ("clock", "bucket", *steps, "save"))


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
    LUA_STANDALONE: ClassVar[bool] = True
    LUA: ClassVar[str] = _compose("take", "report", "status", "reply")

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
        tat, stored = new_state(now, p) if state is None else (state[0], state[1])
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

    LUA_STANDALONE: ClassVar[bool] = True
    LUA: ClassVar[str] = _compose("refund")

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
