"""Clocks: the only module (besides :mod:`resilience.testing`) that reads time or sleeps.

Every time-dependent policy takes ``clock=``. What a policy may ask of it is split by need, and
each capability is a small protocol checked *in full* when the policy is built, so a clock that
lacks a method is refused with :class:`~resilience.ConfigurationError` naming every missing one
(never an ``AttributeError`` at call time, never a method probed for with ``getattr`` later):

* :class:`Clock` -- what every policy needs: two readings (``monotonic()`` for durations and
  deadlines, ``time()`` for wall-clock headers) and sync/async sleeps on the same timeline.
* :class:`DeadlineClock` -- a :class:`Clock` that can also *wait against a deadline*: cancel the
  awaiting task when ``monotonic()`` reaches it (``deadline_scope``), and wait for a worker
  thread's future up to a timeout (``wait_future``). :class:`~resilience.Timeout` and
  :class:`~resilience.Bulkhead` need it.
* :class:`TimerClock` -- a clock that runs callbacks on its own timeline (``call_at``), like
  :class:`~resilience.testing.FakeClock`; idempotency lease renewals follow such a clock, and
  fall back to real-time renewal otherwise (a plain :class:`Clock` is read, not scheduled on).

:class:`SystemClock` is a :class:`DeadlineClock` on real time. Its async deadlines share one
timer per event loop (a lazy heap, :class:`_DeadlineWheel`) -- a fraction of the cost of one
``asyncio.timeout`` per call. That per-loop state lives in a :class:`weakref.WeakKeyDictionary`
keyed by the loop (plus a one-entry cache of the last wheel), never in attributes patched onto
the loop, and the wheel holds no strong reference to its loop, so a finished loop is freed.

:data:`SYSTEM_CLOCK`, what a policy built without ``clock=`` gets, is the *process clock*: a
system clock whose readings test mode (:func:`resilience.testing.set_testing`) can repoint at a
fake clock, reaching the functions decorated before it was switched on. Policies compare it by
identity (the fast paths of :class:`~resilience.Timeout`): it stays the same object in test mode.
"""

from __future__ import annotations

import random as _random
import time as _time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial as _partial
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from types import TracebackType

from ._clock_wheel import _set_wheel_source, _WheelDeadline

__all__ = [
    "Clock",
    "DeadlineClock",
    "TimerClock",
    "SystemClock",
    "SYSTEM_CLOCK",
    "DEFAULT_RANDOM",
    "RandomLike",
]


class RandomLike(Protocol):
    """What ``random=`` needs: a ``random.Random``-like object."""

    def random(self) -> float:  # pragma: no cover - protocol
        """Return a float uniformly drawn from ``[0, 1)``."""
        ...


class DeadlineScope(Protocol):
    """Cancels the current task at a deadline.

    Use either ``async with scope:`` (raises ``TimeoutError`` on expiry, like
    :func:`asyncio.timeout`) or the cheaper sync pair ``scope.enter()`` / ``scope.exit()``, where
    ``exit()`` returns whether the deadline fired (and consumes the cancellation it caused).
    """

    def enter(self) -> None: ...  # pragma: no cover - protocol

    def exit(self) -> bool: ...  # pragma: no cover - protocol

    async def __aenter__(self) -> DeadlineScope: ...  # pragma: no cover - protocol

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...  # pragma: no cover - protocol

    def expired(self) -> bool: ...  # pragma: no cover - protocol


@runtime_checkable
class Clock(Protocol):
    """The time source every policy takes as ``clock=``: two readings and two sleeps.

    Every method is required and checked when a policy is built: a clock missing one is refused
    with :class:`~resilience.ConfigurationError`. Policies that also wait against a deadline
    (:class:`~resilience.Timeout`, :class:`~resilience.Bulkhead`) need a :class:`DeadlineClock`.

    Example:
        >>> import resilience as rs
        >>> clock = rs.testing.FakeClock()
        >>> clock.sleep(2.5)
        >>> clock.monotonic()
        2.5
    """

    def monotonic(self) -> float:
        """Seconds on a monotonic scale (durations, deadlines, windows)."""
        ...

    def time(self) -> float:
        """Epoch seconds (HTTP dates, logs)."""
        ...

    def sleep(self, seconds: float, /) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def asleep(self, seconds: float, /) -> None:
        """Suspend the calling task for ``seconds``."""
        ...


@runtime_checkable
class DeadlineClock(Clock, Protocol):
    """A :class:`Clock` that can also wait against a deadline on its own timeline.

    :class:`~resilience.Timeout` and :class:`~resilience.Bulkhead` need it (to cancel an awaiting
    task, and to stop waiting for a worker thread or a free slot, when the deadline passes).
    :class:`SystemClock` and :class:`~resilience.testing.FakeClock` are both deadline clocks.

    Example:
        >>> import resilience as rs
        >>> isinstance(rs.SystemClock(), rs.DeadlineClock)
        True
        >>> class Readings:  # a plain Clock: fine for Retry, refused by Timeout
        ...     def monotonic(self): return 0.0
        ...     def time(self): return 0.0
        ...     def sleep(self, s): pass
        ...     async def asleep(self, s): pass
        >>> rs.Retry(on=OSError, clock=Readings()).name
        'retry'
        >>> try:
        ...     rs.Timeout(1, clock=Readings())
        ... except rs.ConfigurationError as exc:
        ...     print(str(exc).split("; ")[1])
        Readings lacks deadline_scope() and wait_future()
    """

    def deadline_scope(self, at: float, /) -> DeadlineScope:
        """A scope cancelling the current task when ``monotonic()`` reaches ``at``."""
        ...

    def wait_future(self, future: Future[Any], timeout: float, /) -> bool:
        """Wait up to ``timeout`` seconds (this clock's) for ``future``; return if it is done."""
        ...


@runtime_checkable
class TimerClock(Protocol):
    """A clock that runs callbacks when its own time reaches them (e.g. a fake clock).

    Idempotency lease renewals are scheduled with ``call_at`` on such a clock; on any other
    clock they run on a real-time background timer.
    """

    def call_at(self, at: float, callback: Callable[[], None], /) -> Callable[[], None]:
        """Run ``callback`` when ``monotonic()`` reaches ``at``; return a cancel function."""
        ...


_CLOCK_METHODS = ("monotonic", "time", "sleep", "asleep")
_DEADLINE_METHODS = (*_CLOCK_METHODS, "deadline_scope", "wait_future")


def _check_methods(clock: object, kind: str, methods: tuple[str, ...]) -> None:
    missing = [m for m in methods if not callable(getattr(clock, m, None))]
    if missing:
        from .errors import ConfigurationError

        named = [f"{m}()" for m in missing]
        lacks = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
        what = type(clock).__name__
        raise ConfigurationError(
            f"clock must provide {', '.join(m + '()' for m in methods)} (a {kind}); "
            f"{what} lacks {lacks}"
        )


class SystemClock:
    """The real clock, a :class:`DeadlineClock`: :func:`time.monotonic`, :func:`time.time`, sleeps.

    Example:
        >>> import resilience as rs
        >>> rs.SystemClock().monotonic() > 0
        True
    """

    __slots__ = ()

    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)

    def sleep(self, seconds: float, /) -> None:
        """Block the calling thread (no-op for ``seconds <= 0``)."""
        if seconds > 0:
            _time.sleep(seconds)

    async def asleep(self, seconds: float, /) -> None:
        """Suspend the calling task."""
        import asyncio

        await asyncio.sleep(max(0.0, seconds))

    def deadline_scope(self, at: float, /) -> DeadlineScope:
        """Cancel the task at monotonic time ``at`` (one shared timer per event loop)."""
        return _WheelDeadline(at)

    def wait_future(self, future: Future[Any], timeout: float, /) -> bool:
        """Wait for a future in real time."""
        from concurrent.futures import wait

        done, _ = wait([future], timeout=max(0.0, timeout))
        return bool(done)


#: The process clock's readings: :func:`time.monotonic` / :func:`time.time` themselves, wrapped
#: in a :func:`functools.partial` (a C-level call) that test mode repoints at the fake clock.
#: Policies bind ``SYSTEM_CLOCK.monotonic`` once, when a function is decorated; binding these
#: objects keeps test mode able to reach functions decorated before it was switched on.
_MONOTONIC: _partial[float] = _partial(_time.monotonic)
_TIME: _partial[float] = _partial(_time.time)
#: The fake clock of test mode (``None`` outside it); see :func:`resilience.testing.set_testing`.
_virtual: Clock | None = None


def _virtual_monotonic() -> float:
    fake = _virtual
    return _time.monotonic() if fake is None else fake.monotonic()


def _virtual_time() -> float:
    fake = _virtual
    return _time.time() if fake is None else fake.time()


class _ProcessClock(SystemClock):
    """:data:`SYSTEM_CLOCK`, what every policy built without ``clock=`` uses: the system clock,
    or, in test mode, the readings and sleeps of the test mode's fake clock.

    Waits for other work (``deadline_scope``, ``wait_future``) stay on real time in test mode,
    for as many seconds as the fake clock would wait: code that really hangs still ends.
    """

    __slots__ = ()

    monotonic = staticmethod(_MONOTONIC)
    time = staticmethod(_TIME)

    # twin: async
    async def asleep(self, seconds: float, /) -> None:
        """Wait ``seconds`` (in test mode: advance the fake clock at once, without waiting)."""
        fake = _virtual
        if fake is None:
            await SystemClock.asleep(self, seconds)
        else:
            await fake.asleep(seconds)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def sleep(self, seconds: float, /) -> None:
        """Wait ``seconds`` (in test mode: advance the fake clock at once, without waiting)."""
        fake = _virtual
        if fake is None:
            SystemClock.sleep(self, seconds)
        else:
            fake.sleep(seconds)

    # twin: end

    def __repr__(self) -> str:
        return "SYSTEM_CLOCK" if _virtual is None else f"SYSTEM_CLOCK(testing, {_virtual!r})"


def _repoint(reading: _partial[float], fn: Callable[[], float]) -> None:
    """Make ``reading()`` call ``fn()``: the same partial object, so every binding follows."""
    target: Any = reading  # partial.__setstate__ is not in the stubs
    target.__setstate__((fn, (), None, None))


def _set_virtual(fake: Clock | None) -> None:
    """Make ``fake`` the process clock's readings and sleeps (``None``: the system clock's).

    Only :mod:`resilience.testing` calls it. The deadline wheel converts deadlines read on the
    process clock to loop time while a fake clock is in place (so a fast-path
    :class:`~resilience.Timeout` still ends after its seconds of real time).
    """
    global _virtual
    if fake is not None:
        _check_methods(fake, "Clock", _CLOCK_METHODS)
        _virtual = fake
        _set_wheel_source(_MONOTONIC)
        _repoint(_MONOTONIC, _virtual_monotonic)
        _repoint(_TIME, _virtual_time)
    else:
        _repoint(_MONOTONIC, _time.monotonic)
        _repoint(_TIME, _time.time)
        _set_wheel_source(None)
        _virtual = None


SYSTEM_CLOCK: SystemClock = _ProcessClock()
DEFAULT_RANDOM: RandomLike = _random.Random()


def resolve_clock(clock: Clock | None) -> Clock:
    """Return ``clock`` or the system clock, checking every :class:`Clock` method."""
    if clock is None:
        return SYSTEM_CLOCK
    _check_methods(clock, "Clock", _CLOCK_METHODS)
    return clock


def resolve_deadline_clock(clock: Clock | None) -> DeadlineClock:
    """Return ``clock`` or the system clock, checking every :class:`DeadlineClock` method."""
    if clock is None:
        return SYSTEM_CLOCK
    _check_methods(clock, "DeadlineClock", _DEADLINE_METHODS)
    return cast("DeadlineClock", clock)


def resolve_random(rnd: RandomLike | None) -> RandomLike:
    """Return ``rnd`` or the module's default generator."""
    if rnd is None:
        return DEFAULT_RANDOM
    if not callable(getattr(rnd, "random", None)):
        from .errors import ConfigurationError

        raise ConfigurationError(f"random must be a random.Random instance, got {rnd!r}")
    return rnd
