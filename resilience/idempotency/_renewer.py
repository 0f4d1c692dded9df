"""The shared lease renewer: one daemon thread for sync claims, the event loop for async ones."""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._clock import SYSTEM_CLOCK
from ..errors import StoreError

if TYPE_CHECKING:  # pragma: no cover
    import asyncio

    from ._records import Claim, IdempotencyRecords

_log = logging.getLogger("resilience")


class _Beat:
    """One running claim's lease renewal; :meth:`stop` is idempotent and cheap."""

    __slots__ = ("cancel", "claim", "due", "ident", "interval", "records", "stopped")

    def __init__(self, records: IdempotencyRecords, claim: Claim, interval: float) -> None:
        self.records = records
        self.claim = claim
        self.interval = interval
        self.stopped = False
        self.due = 0.0
        self.ident = 0
        self.cancel: Callable[[], object] | None = None

    def stop(self) -> None:
        self.stopped = True
        cancel = self.cancel
        if cancel is not None:
            self.cancel = None
            cancel()


class _NoBeat:
    __slots__ = ()

    def stop(self) -> None:
        return None


_NO_BEAT = _NoBeat()


#: what is logged when a renewal raises (not a store failure: a bug); that claim's heartbeat
#: stops, on the thread, a fake clock's timers and the event loop alike
_RAISED = (
    "resilience: renewing an idempotency lease raised; that claim's lease is no longer renewed"
)

#: the renewer thread wakes at least this often, so a far (or unrepresentable) due time never
#: blocks it nor overflows the wait
_RENEWER_MAX_WAIT = 60.0


class _Renewer:
    """One daemon thread renewing every running sync claim on a real-time clock.

    Registration and removal are O(1) dict operations (no thread or timer per call); the thread
    sleeps until the earliest due renewal (at most :data:`_RENEWER_MAX_WAIT`).

    The thread is shared by every policy of the process, so no single entry can stop it: an
    entry whose interval cannot be scheduled is refused at registration (logged), an entry
    whose renewal raises is logged and dropped, and the loop itself survives any error (a dead
    thread would also be restarted by the next registration).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._beats: dict[int, _Beat] = {}
        self._thread: threading.Thread | None = None
        self._alive = False
        self._wake_at = float("inf")
        self._seq = itertools.count(1)

    def add(self, beat: _Beat) -> None:
        now = SYSTEM_CLOCK.monotonic()
        interval = beat.interval
        due = now + interval
        if not (interval > 0 and math.isfinite(due)):
            _log.warning(
                "resilience: an idempotency lease renewal every %r s cannot be scheduled; "
                "this claim's lease is not renewed",
                interval,
            )
            return
        beat.due = due
        ident = beat.ident = next(self._seq)
        with self._cond:
            self._beats[ident] = beat
            beat.cancel = lambda: self._remove(ident)
            if not self._alive:
                self._alive = True
                self._thread = threading.Thread(
                    target=self._run, name="resilience-idempotency-renewer", daemon=True
                )
                self._thread.start()
            if due < self._wake_at:
                self._cond.notify()

    def _remove(self, ident: int) -> None:
        with self._cond:
            self._beats.pop(ident, None)

    def _run(self) -> None:  # pragma: no cover - timing dependent; exercised by real-time tests
        try:
            while True:
                try:
                    self._step()
                except Exception:  # never let the thread die: every other lease depends on it
                    _log.exception("resilience: the idempotency lease renewer failed; continuing")
                    with self._cond:
                        self._cond.wait(0.1)
        finally:  # only a BaseException gets here: the next registration starts a new thread
            with self._cond:
                self._alive = False

    def _step(self) -> None:  # pragma: no cover - timing dependent
        with self._cond:
            now = SYSTEM_CLOCK.monotonic()
            due = [b for b in self._beats.values() if b.due <= now]
            if not due:
                self._wake_at = min((b.due for b in self._beats.values()), default=now + 60)
                delay = self._wake_at - now
                if not delay < _RENEWER_MAX_WAIT:  # also catches inf and nan
                    delay = _RENEWER_MAX_WAIT
                self._cond.wait(max(delay, 0.0))
                self._wake_at = float("inf")
                return
            for b in due:
                b.due = now + b.interval
        for b in due:
            if b.stopped:
                continue
            try:
                renew_quietly(b.records, b.claim)
            except Exception:  # one entry's failure is that entry's: drop it, keep the others
                _log.exception(_RAISED)
                self._remove(b.ident)


_RENEWER = _Renewer()


def _new_beat(records: IdempotencyRecords, claim: Claim) -> _Beat | None:
    """The renewal of a claim this process holds, or None: nothing to renew."""
    if not records.heartbeat or claim.status != "claimed":
        return None
    return _Beat(records, claim, records.lease / 3)


def start(records: IdempotencyRecords, claim: Claim) -> _Beat | _NoBeat:
    """:meth:`IdempotencyRecords.start_heartbeat`: the shared thread, or a fake clock's timers."""
    beat = _new_beat(records, claim)
    if beat is None:
        return _NO_BEAT
    if records._fake_timers:
        _fake_tick(records, beat, sync=True)
    else:
        _RENEWER.add(beat)
    return beat


def astart(records: IdempotencyRecords, claim: Claim) -> _Beat | _NoBeat:
    """:meth:`IdempotencyRecords.astart_heartbeat`: timers of the running event loop."""
    beat = _new_beat(records, claim)
    if beat is None:
        return _NO_BEAT
    import asyncio

    _schedule_async(records, beat, asyncio.get_running_loop())
    return beat


def _fake_tick(records: IdempotencyRecords, beat: _Beat, *, sync: bool, loop: Any = None) -> None:
    """Schedule the next renewal on a clock with ``call_at`` (a FakeClock)."""
    clock: Any = records.clock
    if sync:

        def fire() -> None:
            if not beat.stopped:
                try:
                    renew_quietly(records, beat.claim)
                except Exception:
                    _log.exception(_RAISED)
                    return
                _fake_tick(records, beat, sync=True)

    else:

        def fire() -> None:
            if not beat.stopped and not loop.is_closed():
                loop.call_soon_threadsafe(_spawn_renewal, records, beat, loop)

    beat.cancel = clock.call_at(clock.monotonic() + beat.interval, fire)


def _schedule_async(
    records: IdempotencyRecords, beat: _Beat, loop: asyncio.AbstractEventLoop
) -> None:
    if beat.stopped:
        return
    if records._fake_timers:
        _fake_tick(records, beat, sync=False, loop=loop)
    else:
        beat.cancel = loop.call_later(beat.interval, _spawn_renewal, records, beat, loop).cancel


def _spawn_renewal(
    records: IdempotencyRecords, beat: _Beat, loop: asyncio.AbstractEventLoop
) -> None:
    if beat.stopped:
        return
    task = loop.create_task(_arenew_and_reschedule(records, beat, loop))
    records._pending.add(task)
    task.add_done_callback(records._pending.discard)


async def _arenew_and_reschedule(
    records: IdempotencyRecords, beat: _Beat, loop: asyncio.AbstractEventLoop
) -> None:
    try:
        await arenew_quietly(records, beat.claim)
    except Exception:  # as on the renewer thread: logged, and this claim's renewals stop
        _log.exception(_RAISED)
        return
    _schedule_async(records, beat, loop)


# twin: async arenew_quietly=renew_quietly, arenew=renew
async def arenew_quietly(records: IdempotencyRecords, claim: Claim) -> bool:
    """A heartbeat's renewal: a store failure is logged (the next beat tries again)."""
    try:
        return await records.arenew(claim)
    except StoreError as exc:
        _log.warning("resilience: could not renew an idempotency lease: %s", exc)
        return False


# twin: end
# twin: sync (generated from the block above by scripts/twins.py; do not edit)
def renew_quietly(records: IdempotencyRecords, claim: Claim) -> bool:
    """A heartbeat's renewal: a store failure is logged (the next beat tries again)."""
    try:
        return records.renew(claim)
    except StoreError as exc:
        _log.warning("resilience: could not renew an idempotency lease: %s", exc)
        return False


# twin: end
