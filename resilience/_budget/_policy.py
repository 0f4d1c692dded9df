"""RetryBudget and RetryThrottle, per process or shared through a store (private module)."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Literal

from .._clock import Clock, resolve_clock
from .._types import (
    Duration,
    check_listeners,
    check_name,
    positive_int,
    positive_number,
    seconds,
)
from ..errors import ConfigurationError
from ..events import Listener
from ..stores.base import Store
from ._shared import Shared
from ._store import RatioResult, TokensResult, _RatioOp, _TokensOp, ratio_config

__all__ = ["RetryBudget", "RetryThrottle"]

_MODES = ("local", "open", "closed")
CALLS, UNCALLS, UNRETRIES = 0, 1, 2  # a shared RetryBudget's pending counters
SUCCESSES, FAILURES = 0, 1  # a shared RetryThrottle's


def _shared_options(
    kind: str, name: str | None, store: Store | None, on_store_error: str, listeners: object
) -> tuple[str, tuple[Listener, ...]]:
    """Validate the options of sharing a budget (the name is ``""`` without one)."""
    if store is not None and not callable(getattr(store, "apply", None)):
        raise ConfigurationError(f"store must be a resilience.stores.Store, got {store!r}")
    if store is not None and name is None:
        raise ConfigurationError(
            f"a {kind} with a store needs a name= (its key in the store is the name)"
        )
    if on_store_error not in _MODES:
        raise ConfigurationError(
            f"on_store_error must be 'local', 'open' or 'closed', got {on_store_error!r}"
        )
    return ("" if name is None else check_name(name)), check_listeners(listeners)


class RetryBudget:
    """Retries as a fraction of recent calls (Finagle / tower ratio budget).

    Over the last ``ttl`` seconds (kept in ``buckets`` time buckets), a retry is allowed when
    ``retries < ratio * calls + min_per_second * ttl``.

    With a ``store`` (a :class:`~resilience.RedisStore` for a fleet), every process using the
    same ``name`` shares one window: the bound holds for the fleet's calls and retries, not per
    process. Each retry decision is one round trip (it also carries the calls this process
    counted since its previous one; with no decision to carry them, they are sent in the
    background at most every 0.1 s).

    Args:
        ratio: retries allowed per call, in ``[0, 1000]`` (0.2 means 20 % extra load).
        min_per_second: retries per second always allowed, even with little traffic.
        ttl: how long a deposit counts (1 to 60 seconds).
        buckets: the window's time buckets (it slides one bucket at a time).
        name: the budget's name (required with a store: its key there is ``"rb:<name>"``).
        store: ``None`` (per process) or a :class:`resilience.stores.Store` sharing the window.
        on_store_error: with a store, when it fails: ``"local"`` (the default: decide on this
            process's own window), ``"open"`` (allow the retry) or ``"closed"`` (refuse it).
        clock: time source (with a store, the store's clock decides the window).
        listeners: event listeners (:class:`~resilience.events.StoreFailed`).

    Example:
        >>> import resilience as rs
        >>> clock = rs.testing.FakeClock()
        >>> budget = rs.RetryBudget(ratio=0.1, min_per_second=0, clock=clock)
        >>> for _ in range(20):
        ...     budget.deposit()
        >>> [budget.try_withdraw() for _ in range(3)]
        [True, True, False]
    """

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        ttl: Duration = 10.0,
        buckets: int = 10,
        name: str | None = None,
        store: Store | None = None,
        on_store_error: Literal["local", "open", "closed"] = "local",
        clock: Clock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        self.ratio = positive_number(ratio, "ratio", allow_zero=True)
        if self.ratio > 1000:
            raise ConfigurationError(f"ratio must be <= 1000, got {ratio!r}")
        self.min_per_second = positive_number(min_per_second, "min_per_second", allow_zero=True)
        self.ttl = seconds(ttl, "ttl", allow_zero=False)
        if not 1 <= self.ttl <= 60:
            raise ConfigurationError(f"ttl must be between 1 and 60 seconds, got {ttl!r}")
        buckets = positive_int(buckets, "buckets", maximum=1000)
        self.name, self.listeners = _shared_options(
            "RetryBudget", name, store, on_store_error, listeners
        )
        self.store = store
        self.on_store_error = on_store_error
        self._clock = resolve_clock(clock)
        self._n = buckets
        self._width = self.ttl / buckets
        self._calls = [0] * buckets
        self._retries = [0] * buckets
        self._epoch = [-1] * buckets  # which bucket index (time // width) each slot holds
        self._lock = threading.Lock()
        self._cfg = ratio_config(
            ttl=self.ttl, buckets=buckets, ratio=self.ratio, reserve=self.min_per_second * self.ttl
        )
        self._key = f"rb:{self.name}"
        self._shared = None if store is None else Shared(self, store, 3)

    def _slot(self) -> int:
        idx = math.floor(self._clock.monotonic() / self._width)
        slot = idx % self._n
        if self._epoch[slot] != idx:
            self._epoch[slot] = idx
            self._calls[slot] = 0
            self._retries[slot] = 0
        return slot

    def _live(self) -> tuple[int, int]:
        idx = math.floor(self._clock.monotonic() / self._width)
        calls = retries = 0
        for s in range(self._n):
            if idx - self._n < self._epoch[s] <= idx:
                calls += self._calls[s]
                retries += self._retries[s]
        return calls, retries

    def deposit(self) -> None:
        """Count one call."""
        with self._lock:
            self._calls[self._slot()] += 1
        if self._shared is not None:
            self._shared.count(CALLS)

    def record(self, success: bool) -> None:
        """Outcomes do not matter to a ratio budget."""

    def _withdraw_local(self) -> bool:
        with self._lock:
            slot = self._slot()
            calls, retries = self._live()
            if retries + 1 > self.ratio * calls + self.min_per_second * self.ttl:
                return False
            self._retries[slot] += 1
            return True

    def _store_op(self, pending: list[int], withdraw: bool) -> _RatioOp:
        calls, uncalls, unretries = pending
        return _RatioOp(
            self._key,
            self._cfg,
            calls=calls,
            uncalls=uncalls,
            unretries=unretries,
            withdraw=withdraw,
        )

    def _allowed(self, result: RatioResult) -> bool:
        if result[0]:
            with self._lock:  # this process's own count, for on_store_error="local"
                self._retries[self._slot()] += 1
        return result[0]

    # twin: async atry_withdraw=try_withdraw
    async def atry_withdraw(self) -> bool:
        """Take one retry if the budget allows it (with a store: one round trip)."""
        shared = self._shared
        if shared is None:
            return self._withdraw_local()
        return await shared.atry_withdraw()

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def try_withdraw(self) -> bool:
        """Take one retry if the budget allows it (with a store: one round trip)."""
        shared = self._shared
        if shared is None:
            return self._withdraw_local()
        return shared.try_withdraw()

    # twin: end

    def refund(self, *, retry: bool = False) -> None:
        """Give back what a refused attempt took: the retry it withdrew (``retry=True``), or the
        deposit of a call none of whose attempts reached the dependency (``retry=False``).

        Taken from the newest bucket still counting one (nothing once it has expired), so a
        refused call neither pays for nor earns retries.

        Example:
            >>> import resilience as rs
            >>> budget = rs.RetryBudget(ratio=1, min_per_second=0, clock=rs.testing.FakeClock())
            >>> budget.deposit()
            >>> budget.refund()  # that call was refused before reaching the dependency
            >>> budget.snapshot()["calls"], budget.try_withdraw()
            (0, False)
        """
        with self._lock:
            counts = self._retries if retry else self._calls
            idx = math.floor(self._clock.monotonic() / self._width)
            n = self._n
            for back in range(n):
                slot = (idx - back) % n
                if self._epoch[slot] == idx - back and counts[slot] > 0:
                    counts[slot] -= 1
                    break
        shared = self._shared
        if shared is not None:
            shared.count(UNRETRIES if retry else UNCALLS)

    def snapshot(self) -> dict[str, float]:
        """Calls and retries counted in the window (with a store: the fleet's, one round trip;
        raises :class:`~resilience.StoreError` when it fails)."""
        if self._shared is not None:
            _, calls, retries = self._shared.read()
        else:
            with self._lock:
                calls, retries = self._live()
        return {"calls": calls, "retries": retries, "ratio": self.ratio}

    def __repr__(self) -> str:
        shared = "" if self.store is None else f", name={self.name!r}, store={self.store!r}"
        return (
            f"RetryBudget(ratio={self.ratio!r}, min_per_second={self.min_per_second!r}, "
            f"ttl={self.ttl!r}{shared})"
        )


class RetryThrottle:
    """gRFC A6 retry throttling: a token bucket fed by successes, drained by failures.

    With a ``store``, every process using the same ``name`` shares one bucket (kept in exact
    thousandths of a token, like gRPC; it expires after 10 idle minutes, and a missing bucket is
    a full one). Each retry decision is one round trip carrying the outcomes this process saw
    since its previous one (successes are counted before failures); with no decision to carry
    them, they are sent in the background at most every 0.1 s.

    Args:
        max_tokens: bucket size, in ``(0, 1000]``; tokens start full.
        token_ratio: tokens a success adds (``> 0``, kept to 3 decimals like gRPC).
        name: the throttle's name (required with a store: its key there is ``"rt:<name>"``).
        store: ``None`` (per process) or a :class:`resilience.stores.Store` sharing the bucket.
        on_store_error: with a store, when it fails: ``"local"`` (the default: decide on this
            process's own bucket), ``"open"`` (allow the retry) or ``"closed"`` (refuse it).
        clock: when the background sends are due.
        listeners: event listeners (:class:`~resilience.events.StoreFailed`).

    Example:
        >>> import resilience as rs
        >>> throttle = rs.RetryThrottle(max_tokens=10, token_ratio=0.1)
        >>> for _ in range(5):
        ...     throttle.record(False)
        >>> throttle.try_withdraw()  # 5 tokens left: not above 10 / 2
        False
    """

    def __init__(
        self,
        *,
        max_tokens: float = 10.0,
        token_ratio: float = 0.1,
        name: str | None = None,
        store: Store | None = None,
        on_store_error: Literal["local", "open", "closed"] = "local",
        clock: Clock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        mt = positive_number(max_tokens, "max_tokens")
        if mt > 1000:
            raise ConfigurationError(f"max_tokens must be <= 1000, got {max_tokens!r}")
        tr = positive_number(token_ratio, "token_ratio")
        self.max_tokens = mt
        self.token_ratio = max(round(tr, 3), 0.001)
        self.name, self.listeners = _shared_options(
            "RetryThrottle", name, store, on_store_error, listeners
        )
        self.store = store
        self.on_store_error = on_store_error
        self._clock = resolve_clock(clock)
        self._tokens = mt
        self._lock = threading.Lock()
        self._max_milli = round(mt * 1000)
        self._ratio_milli = round(self.token_ratio * 1000)
        self._key = f"rt:{self.name}"
        self._shared = None if store is None else Shared(self, store, 2)

    @property
    def tokens(self) -> float:
        """This process's own token count (see :meth:`snapshot` for a shared bucket's)."""
        return self._tokens

    def deposit(self) -> None:
        """Calls do not earn tokens by themselves; outcomes do."""

    def record(self, success: bool) -> None:
        """A success adds ``token_ratio``; a failure removes 1 (clamped to ``[0, max]``)."""
        with self._lock:
            if success:
                self._tokens = min(self.max_tokens, self._tokens + self.token_ratio)
            else:
                self._tokens = max(0.0, self._tokens - 1.0)
        if self._shared is not None:
            self._shared.count(SUCCESSES if success else FAILURES)

    def _withdraw_local(self) -> bool:
        return self._tokens > self.max_tokens / 2

    def _store_op(self, pending: list[int], withdraw: bool) -> _TokensOp:
        return _TokensOp(self._key, self._max_milli, self._ratio_milli, *pending)

    def _allowed(self, result: TokensResult) -> bool:
        return result[0]

    # twin: async atry_withdraw=try_withdraw
    async def atry_withdraw(self) -> bool:
        """A retry is allowed only while tokens > ``max_tokens / 2`` (it costs nothing itself;
        with a store: one round trip)."""
        shared = self._shared
        if shared is None:
            return self._withdraw_local()
        return await shared.atry_withdraw()

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def try_withdraw(self) -> bool:
        """A retry is allowed only while tokens > ``max_tokens / 2`` (it costs nothing itself;
        with a store: one round trip)."""
        shared = self._shared
        if shared is None:
            return self._withdraw_local()
        return shared.try_withdraw()

    # twin: end

    def refund(self, *, retry: bool = False) -> None:
        """Nothing to give back: a refused attempt records no outcome and took no token."""

    def snapshot(self) -> dict[str, float]:
        """The tokens (with a store: the fleet's, one round trip; raises
        :class:`~resilience.StoreError` when it fails)."""
        shared = self._shared
        tokens = self._tokens if shared is None else shared.read()[1] / 1000
        return {"tokens": tokens, "max_tokens": self.max_tokens}

    def __repr__(self) -> str:
        shared = "" if self.store is None else f", name={self.name!r}, store={self.store!r}"
        return (
            f"RetryThrottle(max_tokens={self.max_tokens!r}, "
            f"token_ratio={self.token_ratio!r}{shared})"
        )
