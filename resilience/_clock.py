"""Clocks: the only module (besides :mod:`resilience.testing`) that reads time or sleeps.

Every time-dependent policy takes ``clock=``. A clock provides two readings (``monotonic`` for
durations and deadlines, ``time`` for wall-clock headers), sync and async sleeps on the same
timeline, and an async deadline scope that cancels the awaiting task when the deadline passes.
"""

from __future__ import annotations

import random as _random
import time as _time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from types import TracebackType

__all__ = ["Clock", "SystemClock", "SYSTEM_CLOCK", "DEFAULT_RANDOM", "RandomLike"]


class RandomLike(Protocol):
    """What ``random=`` needs: a ``random.Random``-like object."""

    def random(self) -> float:  # pragma: no cover - protocol
        """Return a float uniformly drawn from ``[0, 1)``."""
        ...


class DeadlineScope(Protocol):
    """An async context manager that cancels the current task at a deadline."""

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
    """The time source every policy takes as ``clock=``.

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

    def deadline_scope(self, at: float, /) -> DeadlineScope:
        """An async context manager raising ``TimeoutError`` when ``monotonic()`` passes ``at``."""
        ...

    def wait_future(self, future: Future[Any], timeout: float, /) -> bool:
        """Wait up to ``timeout`` seconds for ``future``; return whether it is done."""
        ...


class _AsyncioDeadline:
    """Wraps :func:`asyncio.timeout` with a deadline on some clock's monotonic scale."""

    __slots__ = ("_arm", "_at", "_cm", "_disarm")

    def __init__(self, at: float, arm: Callable[[_AsyncioDeadline], Callable[[], None]]) -> None:
        self._at = at
        self._arm = arm
        self._cm: Any = None

    async def __aenter__(self) -> _AsyncioDeadline:
        import asyncio

        self._cm = asyncio.timeout(None)
        await self._cm.__aenter__()
        self._disarm = self._arm(self)
        return self

    def expire_now(self) -> None:
        import asyncio

        cm = self._cm
        if cm is not None and cm.when() is None:
            cm.reschedule(asyncio.get_running_loop().time())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._disarm()
        result: bool | None = await self._cm.__aexit__(exc_type, exc, tb)
        return result

    def expired(self) -> bool:
        return bool(self._cm is not None and self._cm.expired())


def _never() -> None:
    return None


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`time.time`, real sleeps.

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
        """Cancel the task at monotonic time ``at`` (asyncio's loop clock is monotonic too)."""

        def arm(scope: _AsyncioDeadline) -> Callable[[], None]:
            import asyncio

            loop = asyncio.get_running_loop()
            scope._cm.reschedule(loop.time() + (at - _time.monotonic()))
            return _never

        return _AsyncioDeadline(at, arm)

    def wait_future(self, future: Future[Any], timeout: float, /) -> bool:
        """Wait for a future in real time."""
        from concurrent.futures import wait

        done, _ = wait([future], timeout=max(0.0, timeout))
        return bool(done)


SYSTEM_CLOCK = SystemClock()
DEFAULT_RANDOM: RandomLike = _random.Random()


def resolve_clock(clock: Clock | None) -> Clock:
    """Return ``clock`` or the system clock, checking the protocol."""
    if clock is None:
        return SYSTEM_CLOCK
    from .errors import ConfigurationError

    for attr in ("monotonic", "time", "sleep", "asleep"):
        if not callable(getattr(clock, attr, None)):
            raise ConfigurationError(
                f"clock must provide monotonic(), time(), sleep() and asleep(); "
                f"{clock!r} has no {attr}()"
            )
    return clock


def resolve_random(rnd: RandomLike | None) -> RandomLike:
    """Return ``rnd`` or the module's default generator."""
    if rnd is None:
        return DEFAULT_RANDOM
    if not callable(getattr(rnd, "random", None)):
        from .errors import ConfigurationError

        raise ConfigurationError(f"random must be a random.Random instance, got {rnd!r}")
    return rnd
