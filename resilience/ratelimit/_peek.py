"""The permits a limiter would admit now, read without charging (:meth:`RateLimiter.remaining`).

A peek decides nothing: no permit is taken, no bucket is created (in process or in the store),
no event is emitted. :class:`_StatusOp` and :class:`_StatusAllOp` are store operations that
keep the stored state as it is; their Lua twins are the take scripts' parts (``bucket.lua`` /
``windows.lua``, ``status.lua``) ending in a save that writes nothing. A multi-window limiter
reports its tightest window (the least ``remaining``).

Example:
    >>> from resilience.ratelimit import limit_params
    >>> _StatusOp("rl:api", limit_params(rate=2)).apply([11.0, 0.0], 10.0)
    ([11.0, 0.0], (0, 1.0), None)
"""

from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import StoreError
from ._core import new_state, status
from ._options import LimitParams
from ._store import _packed
from ._windows import _compose, _state, ttl_of

if TYPE_CHECKING:
    from ._buckets import Buckets

__all__ = ["_StatusAllOp", "_StatusOp", "apeek", "peek"]

_PAIR = struct.Struct("<dd")
_INF = math.inf


class _StatusOp:
    """The store operation reading one bucket's ``(remaining, reset_after)``; writes nothing."""

    __slots__ = ("key", "p")

    BINARY_REPLY: ClassVar[bool] = True
    LUA_STANDALONE: ClassVar[bool] = True
    LUA: ClassVar[str] = _compose(
        "clock",
        "bucket",
        "local at, as = tat, stored\n",
        "status",
        "local write, reply = false, struct.pack('<dd', remaining, reset_after)\n",
        "save",
    )

    def __init__(self, key: str, p: LimitParams) -> None:
        self.key = key
        self.p = p

    def apply(self, state: Any | None, now: float, /) -> tuple[Any | None, tuple[int, float], None]:
        tat, stored = new_state(now, self.p) if state is None else (state[0], state[1])
        return state, status(tat, now, self.p, stored), None

    def lua_args(self) -> tuple[bytes]:
        """The bucket parameters (and two unused numbers), packed (the script's ARGV[2])."""
        return (_packed(self.p, 0.0, 0.0),)

    def parse(self, reply: Any) -> tuple[int, float]:
        """Two packed doubles: remaining, reset_after."""
        remaining, reset_after = _PAIR.unpack(reply)
        return int(remaining), reset_after


def _tightest(state: list[float] | None, now: float, ps: tuple[LimitParams, ...]) -> int:
    old = _state(state, now, ps)
    return min(status(old[3 * i], now, p, old[3 * i + 1])[0] for i, p in enumerate(ps))


class _StatusAllOp:
    """The store operation reading a multi-window bucket's tightest ``remaining``."""

    __slots__ = ("key", "ps")

    BINARY_REPLY: ClassVar[bool] = True
    LUA_STANDALONE: ClassVar[bool] = True
    LUA: ClassVar[str] = _compose(
        "clock",
        "windows",
        "local least = INF\nfor i = 1, n do\n",
        "window",
        "local at, as = tat, stored\n",
        "status",
        "if remaining < least then least = remaining end\nend\n"
        "local k, write, reply = n, false, struct.pack('<dd', least, 0)\n",
        "save_all",
    )

    def __init__(self, key: str, ps: tuple[LimitParams, ...]) -> None:
        self.key = key
        self.ps = ps

    def apply(self, state: Any | None, now: float, /) -> tuple[Any | None, tuple[int, float], None]:
        return state, (_tightest(state, now, self.ps), 0.0), None

    def lua_args(self) -> tuple[bytes]:
        """Per window: its parameters (and two unused numbers), packed."""
        return (b"".join([_packed(p, 0.0, 0.0) for p in self.ps]),)

    def parse(self, reply: Any) -> tuple[int, float]:
        """Two packed doubles: the least remaining, 0."""
        remaining, _ = _PAIR.unpack(reply)
        return int(remaining), 0.0


def _local(lim: Buckets, key: str | None, share: bool) -> int:
    """The in-process answer (``share``: the local share a store outage falls back to)."""
    windows: Any = getattr(lim, "_windows", None)
    with lim._lock:
        now = lim._clock.monotonic()
        if windows is not None:
            tier = windows.tier_for(key)
            entry = windows.entries.get(key)
            state = None
            if entry is not None and ttl_of(entry[1], now, entry[0]) > 0:
                state = entry[1]
            return _tightest(state, now, tier.local if share else tier.params)
        p = lim._local_params if share else lim.params
        if key is None:
            tat, stored = lim._tat, lim._stored
        else:
            entry = lim._table.get(key)  # on probation or protected; its recency untouched
            tat, stored = new_state(now, p) if entry is None else (entry[0], entry[1])
    return status(tat, now, p, stored)[0]


def _op(lim: Buckets, key: str | None) -> Any:
    windows: Any = getattr(lim, "_windows", None)
    if windows is None:
        return _StatusOp(lim._store_key(key), lim.params)
    return _StatusAllOp(lim._store_key(key), windows.tier_for(key).params)


def _failed(lim: Buckets, key: str | None) -> int:
    """A store that failed: what the limiter's ``on_store_error`` would do with a check."""
    mode = lim.on_store_error
    if mode == "open":
        return lim._limit
    if mode == "closed":
        return 0
    return _local(lim, key, share=True)


# twin: async apeek=peek, _aapply=_apply
async def apeek(lim: Buckets, key: str | None) -> int:
    """The whole permits ``key``'s bucket would admit now (see :meth:`RateLimiter.remaining`)."""
    if lim.store is None:
        return _local(lim, key, share=False)
    try:
        remaining, _ = await lim._aapply(_op(lim, key))
    except StoreError:
        return _failed(lim, key)
    return int(remaining)


# twin: end
# twin: sync (generated from the block above by scripts/twins.py; do not edit)
def peek(lim: Buckets, key: str | None) -> int:
    """The whole permits ``key``'s bucket would admit now (see :meth:`RateLimiter.remaining`)."""
    if lim.store is None:
        return _local(lim, key, share=False)
    try:
        remaining, _ = lim._apply(_op(lim, key))
    except StoreError:
        return _failed(lim, key)
    return int(remaining)


# twin: end
