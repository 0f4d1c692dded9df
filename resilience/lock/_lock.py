"""``rs.Lock``: a fenced lease lock on a store (see :mod:`resilience.lock`)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal, ParamSpec, TypeVar, overload

from .._clock import Clock, resolve_clock
from .._deadline import cap_to_deadline
from .._policy import Emitter, Policy, refusal
from .._types import AsyncFn, Duration, SyncFn, seconds
from ..errors import ConfigurationError, LockHeldError, StoreError
from ..events import Listener, LockLost, LockRejected
from ..idempotency._options import check_store
from ..stores.memory import MemoryStore
from . import _beat
from ._ops import AcquireOp, ReleaseOp, RenewOp

__all__ = ["Held", "KeyedLock", "Lock"]

P = ParamSpec("P")
T = TypeVar("T")

_log = logging.getLogger("resilience")

#: the first poll of a waiting acquisition, and the cap its doubling backoff reaches
FIRST_POLL = 0.005
MAX_POLL = 0.25


class Held:
    """One acquisition of a :class:`Lock` (what ``hold`` / ``ahold`` yield).

    Attributes:
        key: the lock's key.
        fence: the fencing token: strictly greater than every earlier hold's of this key. Pass
            it to the resource you protect and have it refuse writes with a smaller fence.
        lock: the :class:`Lock` it was acquired from.
    """

    __slots__ = (
        "_beat",
        "_em",
        "_lost",
        "_owner",
        "_released",
        "_skey",
        "_valid_until",
        "fence",
        "key",
        "lock",
    )

    def __init__(
        self, lock: Lock, key: str, skey: str, owner: str, fence: int, sent: float, em: Emitter
    ) -> None:
        self.lock = lock
        self.key = key
        self.fence = fence
        self._skey = skey
        self._owner = owner
        self._em = em
        self._lost = False
        self._released = False
        self._valid_until = sent + lock.ttl
        self._beat: _beat.Beat | None = None

    @property
    def lost(self) -> bool:
        """Whether this hold may no longer be exclusive: a renewal or the release was refused
        (the lease ended, or another holder took over), or, as read on the lock's clock, the
        lease ran out since the last renewal that succeeded (a paused process, a store that
        did not answer). After the release, only a refused release counts."""
        if self._lost:
            return True
        return not self._released and self.lock._clock.monotonic() >= self._valid_until

    def check(self) -> None:
        """Raise :class:`~resilience.LockHeldError` (``lost=True``) if :attr:`lost`: call it
        before each step a stale holder must not take."""
        if self.lost:
            raise LockHeldError(
                f"lock {self.lock.name!r}: the hold of {self.key!r} (fence {self.fence}) was lost",
                policy=self.lock.name,
                key=self.key,
                fence=self.fence,
                lost=True,
            )

    def _renewed(self, ok: bool, sent: float) -> None:
        if self._released:  # a renewal that crossed the release: it says nothing of the hold
            return
        if ok:
            self._valid_until = sent + self.lock.ttl
        else:
            self._lose("renewal_refused")

    def _lose(self, reason: Literal["renewal_refused", "release_refused"]) -> None:
        first = not self._lost
        self._lost = True
        self._stop()
        em = self._em
        if first and em:
            em.emit(LockLost(**em.origin(self.lock.name), reason=reason, fence=self.fence))

    def _stop(self) -> None:
        beat = self._beat
        if beat is not None:
            self._beat = None
            beat.stop()

    def __repr__(self) -> str:
        return f"Held({self.key!r}, fence={self.fence}, lost={self.lost})"


class Lock(Policy):
    """A distributed lock with fencing tokens: at most one holder per key, fleet-wide.

    ``with lock.hold(key) as held`` (``async with lock.ahold(key)``) acquires the key for
    ``ttl`` seconds, renews it every ``ttl / 3`` seconds while the block runs (a shared thread
    for sync holds, a task for async ones), and releases it on exit, only if this hold still
    owns it (compare-and-free on owner and fence). If the key is held, the caller polls (with a
    doubling backoff from 5 ms to 250 ms, on ``clock``) for up to ``wait`` seconds, never past
    the current :func:`resilience.deadline`, then gets :class:`~resilience.LockHeldError`
    whose ``retry_after`` is the holder's remaining lease. Every acquire, renewal and release
    is one store round trip.

    As a decorator, ``@lock`` serialises every call of the function, and
    ``@lock(key=lambda order_id: order_id)`` serialises calls per key (the key function gets
    the call's arguments).

    Store failures: an acquisition that cannot reach the store raises
    :class:`~resilience.StoreError` (a lock fails closed). A renewal that fails is logged and
    retried at the next beat; a release that fails is logged (the lease then expires after at
    most ``ttl``).

    Args:
        name: the lock's name (events; part of the store key).
        store: where locks live: a :class:`~resilience.RedisStore` for a fleet, default a
            :class:`~resilience.MemoryStore` on ``clock`` (one process) with
            ``on_full="evict_oldest"``: a held key's entry is never evicted; a freed one may
            make room for a new key (its fences then restart from the clock, still higher).
        ttl: the lease in seconds: a holder that stops renewing (crashed, paused, cut off)
            loses the key after it.
        wait: seconds an acquisition may wait for a held key (0: refuse at once).
        keep: how long an unused key's fence counter is kept after its last acquisition or
            renewal (default one day). A fresh counter starts from the store clock in
            microseconds, so fences keep increasing even past it (see the docs).
        clock: time source for waits, local lease checks and heartbeats.
        listeners: event listeners (:class:`~resilience.events.LockRejected`,
            :class:`~resilience.events.LockLost`).

    Example:
        >>> import resilience as rs
        >>> lock = rs.Lock("orders", ttl=30, clock=rs.testing.FakeClock())
        >>> with lock.hold("order-7") as held:
        ...     print(held.fence, held.lost)
        1 False
        >>> with lock.hold("order-7") as held:
        ...     print(held.fence)
        2
    """

    kind = "lock"

    def __init__(
        self,
        name: str,
        *,
        store: Any = None,
        ttl: Duration = 30.0,
        wait: Duration = 0.0,
        keep: Duration = 86_400.0,
        clock: Clock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(name=name, listeners=listeners)
        self.ttl = seconds(ttl, "ttl", allow_zero=False)
        if self.ttl < 0.003:
            raise ConfigurationError(f"ttl must be at least 0.003 seconds, got {ttl!r}")
        self.wait = seconds(wait, "wait")
        self.keep = seconds(keep, "keep")
        self._clock = resolve_clock(clock)
        if store is None:  # held entries are pinned; freed ones make room for new keys
            store = MemoryStore(clock=self._clock, on_full="evict_oldest")
        self.store = check_store(store)
        self._prefix = f"lock:{self.name}:"
        self._em = Emitter(self.listeners, None, self.name)

    def describe(self) -> dict[str, Any]:
        """Plain data describing the configuration."""
        return {
            "kind": self.kind,
            "name": self.name,
            "ttl": self.ttl,
            "wait": self.wait,
            "keep": self.keep,
        }

    def _refused(self, key: str, fence: int, left: float, em: Emitter) -> LockHeldError:
        if em:
            em.emit(LockRejected(**em.origin(self.name), reason="lock_held", retry_after=left))
        return refusal(
            LockHeldError(
                f"lock {self.name!r}: {key!r} is held (fence {fence}, {left:.3f} s left)",
                policy=self.name,
                retry_after=left,
                key=key,
                fence=fence,
            ),
            em,
        )

    def _start_beat(self, held: Held) -> None:
        held._beat = _beat.start(self._clock, self.ttl / 3, lambda: self._renew(held))

    def _astart_beat(self, held: Held) -> None:
        held._beat = _beat.astart(self._clock, self.ttl / 3, lambda: self._arenew(held))

    # twin: async _aacquire=_acquire, aapply=apply, _astart_beat=_start_beat
    async def _aacquire(self, key: str, em: Emitter) -> Held:
        clock = self._clock
        skey = self._prefix + key
        owner = secrets.token_hex(8)
        op = AcquireOp(skey, owner, self.ttl, self.keep)
        start = clock.monotonic()
        budget = cap_to_deadline(self.wait)
        delay = FIRST_POLL
        while True:
            sent = clock.monotonic()
            acquired, fence, left = await self.store.aapply(op)
            if acquired:
                held = Held(self, key, skey, owner, fence, sent, em)
                self._astart_beat(held)
                return held
            remaining = budget - (clock.monotonic() - start)
            if remaining <= 0:
                raise self._refused(key, fence, left, em)
            await clock.asleep(min(delay, remaining, max(left, FIRST_POLL)))
            delay = min(delay * 2, MAX_POLL)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def _acquire(self, key: str, em: Emitter) -> Held:
        clock = self._clock
        skey = self._prefix + key
        owner = secrets.token_hex(8)
        op = AcquireOp(skey, owner, self.ttl, self.keep)
        start = clock.monotonic()
        budget = cap_to_deadline(self.wait)
        delay = FIRST_POLL
        while True:
            sent = clock.monotonic()
            acquired, fence, left = self.store.apply(op)
            if acquired:
                held = Held(self, key, skey, owner, fence, sent, em)
                self._start_beat(held)
                return held
            remaining = budget - (clock.monotonic() - start)
            if remaining <= 0:
                raise self._refused(key, fence, left, em)
            clock.sleep(min(delay, remaining, max(left, FIRST_POLL)))
            delay = min(delay * 2, MAX_POLL)

    # twin: end
    # twin: async _arenew=_renew, aapply=apply
    async def _arenew(self, held: Held) -> None:
        """One heartbeat: extend the lease (a store failure is logged, retried next beat)."""
        if held._lost:
            held._stop()
            return
        sent = self._clock.monotonic()
        op = RenewOp(held._skey, held._owner, held.fence, self.ttl, self.keep)
        try:
            ok = await self.store.aapply(op)
        except StoreError as exc:
            _log.warning("resilience: could not renew lock %r: %s", self.name, exc)
            return
        held._renewed(ok, sent)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def _renew(self, held: Held) -> None:
        """One heartbeat: extend the lease (a store failure is logged, retried next beat)."""
        if held._lost:
            held._stop()
            return
        sent = self._clock.monotonic()
        op = RenewOp(held._skey, held._owner, held.fence, self.ttl, self.keep)
        try:
            ok = self.store.apply(op)
        except StoreError as exc:
            _log.warning("resilience: could not renew lock %r: %s", self.name, exc)
            return
        held._renewed(ok, sent)

    # twin: end
    # twin: async _arelease=_release, aapply=apply
    async def _arelease(self, held: Held) -> None:
        """Free the key if this hold still owns it (a store failure is logged)."""
        held._released = True
        held._stop()
        try:
            ok = await self.store.aapply(ReleaseOp(held._skey, held._owner, held.fence, self.keep))
        except StoreError as exc:
            _log.warning("resilience: could not release lock %r: %s", self.name, exc)
            return
        if not ok:
            held._lose("release_refused")

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def _release(self, held: Held) -> None:
        """Free the key if this hold still owns it (a store failure is logged)."""
        held._released = True
        held._stop()
        try:
            ok = self.store.apply(ReleaseOp(held._skey, held._owner, held.fence, self.keep))
        except StoreError as exc:
            _log.warning("resilience: could not release lock %r: %s", self.name, exc)
            return
        if not ok:
            held._lose("release_refused")

    # twin: end
    # twin: async _aacquire=_acquire, _arelease=_release, ahold=hold
    @asynccontextmanager
    async def ahold(self, key: object) -> AsyncIterator[Held]:
        """Hold ``key`` for the block (see the class documentation); yields a :class:`Held`."""
        held = await self._aacquire(str(key), self._em)
        try:
            yield held
        finally:
            await self._arelease(held)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    @contextmanager
    def hold(self, key: object) -> Iterator[Held]:
        """Hold ``key`` for the block (see the class documentation); yields a :class:`Held`."""
        held = self._acquire(str(key), self._em)
        try:
            yield held
        finally:
            self._release(held)

    # twin: end
    # twin: async
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        return KeyedLock(self, None).wrap_async(fn, em)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        return KeyedLock(self, None).wrap_sync(fn, em)

    # twin: end

    @overload
    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]: ...

    @overload
    def __call__(self, fn: None = None, *, key: Callable[..., object]) -> KeyedLock: ...

    def __call__(
        self, fn: Callable[P, T] | None = None, *, key: Callable[..., object] | None = None
    ) -> Callable[P, T] | KeyedLock:
        """``@lock``: one call of the function at a time; ``@lock(key=fn)``: one per key."""
        if fn is not None:
            return super().__call__(fn)
        if not callable(key):
            raise ConfigurationError(f"key must be a callable of the call's arguments, got {key!r}")
        return KeyedLock(self, key)


class KeyedLock(Policy):
    """A :class:`Lock` applied per key of a call (``lock(key=...)``): a policy of its own,
    usable as a decorator or in a :class:`~resilience.Pipeline`."""

    kind = "lock"

    def __init__(self, lock: Lock, key: Callable[..., object] | None) -> None:
        super().__init__(name=lock.name, listeners=lock.listeners)
        self.lock = lock
        self.key = key

    def describe(self) -> dict[str, Any]:
        """The lock's configuration."""
        return self.lock.describe()

    # twin: async _aacquire=_acquire, _arelease=_release
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        key = self.key
        acquire = self.lock._aacquire
        release = self.lock._arelease

        async def lock_wrapper(*args: Any, **kwargs: Any) -> Any:
            held = await acquire("" if key is None else str(key(*args, **kwargs)), em)
            try:
                return await fn(*args, **kwargs)
            finally:
                await release(held)

        return lock_wrapper

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        key = self.key
        acquire = self.lock._acquire
        release = self.lock._release

        def lock_wrapper(*args: Any, **kwargs: Any) -> Any:
            held = acquire("" if key is None else str(key(*args, **kwargs)), em)
            try:
                return fn(*args, **kwargs)
            finally:
                release(held)

        return lock_wrapper

    # twin: end
