"""The store's fault model: a fail-fast breaker that detects an outage (not a slow moment),
probes once at a time, and leaves a key's own script errors with that key."""

from __future__ import annotations

import threading
from typing import Any, cast

from ..._clock import Clock
from ...errors import StoreError
from ._ops import RedisOp, redis_errors

__all__ = ["NO_LOOP", "WRONG_LOOP", "Breaker", "is_key_error", "key_error", "parse_reply"]

#: What a given async client raises when it is used from another event loop (an async call
#: turns it into :meth:`Breaker.wrong_loop`'s error); a sync client has no event loop, so the
#: sync twin of such a call catches :data:`NO_LOOP`, nothing.
WRONG_LOOP: tuple[type[RuntimeError], ...] = (RuntimeError,)
NO_LOOP: tuple[type[RuntimeError], ...] = ()


class Breaker:
    """The store's fail-fast breaker around the backend (thread-safe, tiny).

    * **An outage, not a slow reply.** Only sequential evidence counts: a failure is counted
      when its call started after the previous counted failure (``epoch`` unchanged since the
      call began), so calls that time out together in one slow moment count once, and
      ``threshold`` counted failures in a row (no success in between) open the breaker.
    * **Quick recovery.** While open, every call fails fast except one probe at a time, admitted
      ``interval`` seconds after the last failure; the first probe that reaches the backend
      closes the breaker.
    * Per-key errors (a script error, an unparsable reply) prove the backend answers: they close
      it too and are never counted.

    A call reads ``epoch`` and runs :meth:`check` (only when ``failures``) before it starts, then
    reports :meth:`success` (only when ``failures``), :meth:`failed` (a redis-py or socket error),
    :meth:`wrong_loop` or :meth:`abandon` (cancelled).

    Example:
        >>> import resilience as rs
        >>> clock = rs.testing.FakeClock()
        >>> b = Breaker(threshold=1, interval=0.05, clock=clock)
        >>> b.failure(b.epoch, probe=False)
        >>> b.check()
        Traceback (most recent call last):
        ...
        resilience.errors.StoreError: redis store unavailable (failing fast after errors)
        >>> clock.advance(0.05)
        >>> b.check()  # this call is the probe
        True
    """

    __slots__ = (
        "clock",
        "epoch",
        "failures",
        "interval",
        "lock",
        "next_probe",
        "probing",
        "threshold",
    )

    def __init__(self, threshold: int, interval: float, clock: Clock) -> None:
        self.threshold = threshold
        self.interval = interval
        self.clock = clock
        self.failures = 0  # counted failures in a row (the hot path reads only this)
        self.epoch = 0  # bumped by every counted failure
        self.probing = False
        self.next_probe = float("-inf")
        self.lock = threading.Lock()

    def check(self) -> bool:
        """Whether this call is the probe; raises :class:`StoreError` when failing fast."""
        if self.failures < self.threshold:
            return False
        now = self.clock.monotonic()
        with self.lock:
            if self.failures < self.threshold:
                return False
            if self.probing or now < self.next_probe:
                raise StoreError("redis store unavailable (failing fast after errors)")
            self.probing = True
        return True

    def success(self) -> None:
        with self.lock:
            self.failures = 0
            self.probing = False
            self.next_probe = float("-inf")

    def failure(self, epoch: int, probe: bool) -> None:
        """A backend failure of a call that began at ``epoch`` (``probe``: it was the probe)."""
        with self.lock:
            if probe:
                self.probing = False
            if probe or epoch == self.epoch:
                self.epoch += 1
                self.failures += 1
                if self.failures >= self.threshold:
                    self.next_probe = self.clock.monotonic() + self.interval

    def abandon(self) -> None:
        """The probe ended without an answer either way (cancelled): let another call probe."""
        with self.lock:
            self.probing = False

    def failed(self, op: Any, exc: BaseException, epoch: int, probe: bool) -> StoreError:
        """The :class:`StoreError` for ``op``'s call that raised the redis-py (or socket) error
        ``exc``, counted as a backend failure unless it is the key's own (:func:`is_key_error`)."""
        if is_key_error(exc):
            self.success()  # the server answered
            return key_error(op, exc)
        self.failure(epoch, probe)
        return StoreError(f"redis store failed: {type(exc).__name__}: {exc}")

    def wrong_loop(self, exc: RuntimeError, probe: bool) -> StoreError:
        """The :class:`StoreError` for a given async client used from another event loop."""
        if probe:
            self.abandon()
        return StoreError(
            f"redis store: the async client cannot be used from this event loop ({exc}); "
            "build the store with RedisStore.from_url to get one client per event loop"
        )


#: Error codes of replies that describe the server's state, not one key's script: they count
#: as backend failures. (redis-py maps some to subclasses of ``ResponseError``; the rest keep
#: their code at the start of the message.)
SERVER_STATE_CODES = (
    "BUSY",
    "CLUSTERDOWN",
    "LOADING",
    "MASTERDOWN",
    "MISCONF",
    "NOAUTH",
    "NOPERM",
    "NOREPLICAS",
    "OOM",
    "READONLY",
    "TRYAGAIN",
    "UNBLOCKED",
)


def is_key_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a deterministic error of one key's script (not a backend failure).

    A script that raises (a poisoned value it cannot represent, a wrong type, a bug) fails the
    same way on every retry and on any other connection, and says nothing about the server's
    health; ``OOM``, ``READONLY``, ``BUSY``... do.
    """
    errors = redis_errors()
    return type(exc) is errors.ResponseError and not str(exc).startswith(SERVER_STATE_CODES)


def key_error(op: Any, exc: BaseException) -> StoreError:
    """The :class:`StoreError` of an error that belongs to ``op``'s key only."""
    return StoreError(
        f"redis store: the operation on {op.key!r} failed ({type(exc).__name__}: {exc}); "
        "the store keeps serving other keys"
    )


def parse_reply(op: Any, reply: Any) -> Any:
    """``op.parse(reply)``; a reply the op cannot read is that key's problem (:func:`key_error`)."""
    try:
        return cast("RedisOp[Any]", op).parse(reply)
    except Exception as exc:
        raise key_error(op, exc) from exc
