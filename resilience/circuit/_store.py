"""The breaker's store operations: the pure core on a stored state, or its Lua twin (private).

Each operation is a :class:`resilience.stores.StoreOp`: ``apply`` runs :mod:`._core` on a copy
of the stored list (a :class:`resilience.MemoryStore`, or any store running Python operations),
``LUA`` is ``breaker.lua`` for :class:`resilience.RedisStore`, and ``parse`` reads its reply. All
three carry the successes this process has not reported yet (``pending``, see
:func:`._core.flush`); ``reset`` is set when the stored state was undecodable and was rewritten.

Example:
    >>> import resilience as rs
    >>> breaker = rs.CircuitBreaker("db", failure_count=1)
    >>> store = rs.MemoryStore()
    >>> permit, retry_after_us, transition = store.apply(_AcquireOp("cb:db", breaker))
    >>> permit, transition
    (0, None)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from ..stores._lua import script
from . import _core as core
from ._options import US, Options

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker

__all__ = ["NO_PENDING", "_AcquireOp", "_ManualOp", "_RecordOp", "_ReleaseOp", "ttl_of"]

LUA = script(__package__, "breaker.lua")
FORCED_TTL = float("inf")  # store TTL of a breaker forced open by open(): none

#: No successes waiting to be reported: ``(permit, successes, stale)``.
NO_PENDING = (-1, 0, 0)


def ttl_of(st: list[int], opts: Options) -> float:
    """How long a stored state lives: forever when forced open (no timer), else ``ttl_s``."""
    if core.forced_open(st):
        return FORCED_TTL
    return opts.ttl_s


def _transition_of(f: int, t: int, r: int) -> core.Transition | None:
    return None if f < 0 else (f, t, r)


def _last(first: core.Transition | None, then: core.Transition | None) -> core.Transition | None:
    """The transition a script reports: the operation's, else the flush's (the last one)."""
    return first if then is None else then


class _AcquireOp:
    """StoreOp: :func:`._core.flush` of ``pending``, then
    :func:`._core.acquire`, on the stored state."""

    __slots__ = ("breaker", "key", "pending", "reset")
    LUA: ClassVar[str] = LUA

    def __init__(
        self, key: str, breaker: CircuitBreaker, pending: tuple[int, int, int] = NO_PENDING
    ) -> None:
        self.key = key
        self.breaker = breaker
        self.pending = pending
        self.reset = False  # set by parse: the stored state was undecodable and was rewritten

    def apply(
        self, state: Any | None, now: float, /
    ) -> tuple[Any | None, tuple[int, int, core.Transition | None], float | None]:
        o = self.breaker._opts
        old = core.initial_state(o.cfg) if state is None else state
        st = list(old)
        now_us = round(now * US)
        flushed = core.flush(st, o.cfg, now_us, self.pending)
        permit, retry_us, tr = core.acquire(st, o.cfg, now_us)
        result = (permit, retry_us, _last(flushed, tr))
        if st == old:  # CLOSED, nothing flushed: read-only (the Lua twin writes nothing either)
            return state, result, None
        return st, result, ttl_of(st, o)

    def lua_args(self) -> tuple[bytes, str, int, int, int]:
        """The packed configuration, the operation code and the pending successes."""
        return (self.breaker._opts.lua, "a", *self.pending)

    def parse(self, reply: Any) -> tuple[int, int, core.Transition | None]:
        """``[permit, retry_after_us, from, to, reason, reset]``."""
        permit, retry_us, f, t, r, reset = reply
        self.reset = reset == 1
        return int(permit), int(retry_us), _transition_of(int(f), int(t), int(r))


class _RecordOp:
    """StoreOp: :func:`._core.record` on the stored state."""

    __slots__ = ("breaker", "key", "outcome", "pending", "permit", "reset")
    LUA: ClassVar[str] = LUA

    def __init__(
        self,
        key: str,
        breaker: CircuitBreaker,
        permit: int,
        outcome: int,
        pending: tuple[int, int, int] = NO_PENDING,
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
        o = self.breaker._opts
        old = core.initial_state(o.cfg) if state is None else state
        st = list(old)
        now_us = round(now * US)
        flushed = core.flush(st, o.cfg, now_us, self.pending)
        result = _last(flushed, core.record(st, o.cfg, now_us, self.permit, self.outcome))
        if st == old:  # nothing recorded (a released permit in CLOSED): keep the entry as is
            return state, result, None
        return st, result, ttl_of(st, o)

    def lua_args(self) -> tuple[bytes, str, int, int, int, int, int]:
        """The packed configuration, the operation code, the permit, the outcome and the
        pending successes."""
        return (self.breaker._opts.lua, "r", self.permit, self.outcome, *self.pending)

    def parse(self, reply: Any) -> core.Transition | None:
        """``[from, to, reason, reset]`` (``-1``: no transition)."""
        f, t, r, reset = reply
        self.reset = reset == 1
        return _transition_of(int(f), int(t), int(r))


class _ReleaseOp(_RecordOp):
    """StoreOp: :class:`_RecordOp` giving a permit back (``RELEASE``) without waiting for the
    reply (``apply_soon``); ``on_reply(op, transition)`` handles the reply when it is parsed, as
    the caller of an awaited record would (a rewritten state is reported)."""

    __slots__ = ("on_reply",)

    def __init__(
        self,
        key: str,
        breaker: CircuitBreaker,
        permit: int,
        on_reply: Callable[[_RecordOp, core.Transition | None], object],
    ) -> None:
        super().__init__(key, breaker, permit, core.RELEASE)
        self.on_reply = on_reply

    def parse(self, reply: Any) -> core.Transition | None:
        """``[from, to, reason, reset]``, handed to ``on_reply`` too."""
        tr = super().parse(reply)
        self.on_reply(self, tr)
        return tr


class _ManualOp:
    """StoreOp: :func:`._core.manual` (``action`` ``M_TICK``: only :func:`._core.tick`),
    returning the transition and a :func:`._core.snapshot`."""

    __slots__ = ("action", "breaker", "key", "pending", "reset")
    LUA: ClassVar[str] = LUA

    def __init__(
        self,
        key: str,
        breaker: CircuitBreaker,
        action: int,
        pending: tuple[int, int, int] = NO_PENDING,
    ) -> None:
        self.key = key
        self.breaker = breaker
        self.action = action
        self.pending = pending
        self.reset = False

    def apply(
        self, state: Any | None, now: float, /
    ) -> tuple[Any | None, tuple[core.Transition | None, tuple[int, ...]], float | None]:
        o = self.breaker._opts
        st = core.initial_state(o.cfg) if state is None else list(state)
        now_us = round(now * US)
        flushed = core.flush(st, o.cfg, now_us, self.pending)
        if self.action != core.M_TICK:
            tr = core.manual(st, o.cfg, now_us, self.action)
        else:
            tr = core.tick(st, o.cfg, now_us)
        tr = _last(flushed, tr)
        return st, (tr, (*core.snapshot(st, o.cfg, now_us), now_us)), ttl_of(st, o)

    def lua_args(self) -> tuple[bytes, str, int, int, int, int]:
        """The packed configuration, the operation code, the action and the pending
        successes."""
        return (self.breaker._opts.lua, "m", self.action, *self.pending)

    def parse(self, reply: Any) -> tuple[core.Transition | None, tuple[int, ...]]:
        """``[from, to, reason, *snapshot, now, reset]``."""
        f, t, r, *snap, reset = reply
        self.reset = reset == 1
        return _transition_of(int(f), int(t), int(r)), tuple(int(v) for v in snap)
