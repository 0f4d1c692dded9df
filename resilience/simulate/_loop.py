"""A virtual-time asyncio event loop on a :class:`~resilience.testing.FakeClock`.

The loop's ``time()`` is the fake clock's ``monotonic()``. When nothing is ready to run, the
selector does not block: it advances the fake clock straight to the next due timer (an asyncio
``call_at`` or a fake-clock deadline), so a simulated minute of concurrent traffic runs in a
fraction of a second while every task still sees correctly ordered, consistent time. Policies
use the clock as usual: ``asleep`` is ``asyncio.sleep`` on this loop and async deadlines are
asyncio timeouts on it.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from ..testing import FakeClock

__all__ = ["SimClock", "run_virtual"]

T = TypeVar("T")


class SimClock(FakeClock):
    """A fake clock whose async sleeps and deadlines are timers of a virtual-time loop.

    Use it inside :func:`run_virtual`: ``asleep`` parks the task until virtual time reaches the
    wake-up time (other tasks run meanwhile), unlike :class:`FakeClock`, whose sleeps advance
    time at once for everyone. Sleeps are not recorded. Async deadlines are the fake clock's
    timers, which the loop fires when virtual time reaches them.

    Example:
        >>> clock = SimClock()
        >>> async def main() -> float:
        ...     await clock.asleep(90.0)
        ...     return clock.monotonic()
        >>> run_virtual(main(), clock)
        90.0
    """

    async def asleep(self, seconds: float, /) -> None:
        """Suspend the task for ``seconds`` of virtual time."""
        await asyncio.sleep(max(0.0, seconds))


class _VirtualSelector(selectors.BaseSelector):
    """Delegates I/O registration; ``select`` polls without blocking, then advances time."""

    def __init__(self, clock: FakeClock) -> None:
        self._sel = selectors.DefaultSelector()
        self._clock = clock

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._sel.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._sel.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._sel.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = self._sel.select(0)
        if events or timeout == 0:
            return events
        clock = self._clock
        nxt = clock._next_timer()
        target = nxt if timeout is None else clock.monotonic() + timeout
        if nxt is not None and target is not None and nxt < target:
            target = nxt
        if target is None:
            raise RuntimeError("simulation stalled: no task can run and no timer is armed")
        clock._advance_to(max(target, clock.monotonic()))
        return []

    def close(self) -> None:
        self._sel.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._sel.get_map()


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(_VirtualSelector(clock))
        self._sim_clock = clock

    def time(self) -> float:
        return self._sim_clock.monotonic()


def run_virtual(coro: Coroutine[Any, Any, T], clock: FakeClock) -> T:
    """Run ``coro`` to completion on a new virtual-time loop driven by ``clock``.

    Example:
        >>> import asyncio
        >>> clock = SimClock()
        >>> async def two_sleepers() -> list[float]:
        ...     async def nap(s: float) -> float:
        ...         await clock.asleep(s)
        ...         return clock.monotonic()
        ...     return list(await asyncio.gather(nap(3600), nap(60)))
        >>> run_virtual(two_sleepers(), clock)
        [3600.0, 60.0]
    """
    loop = _VirtualLoop(clock)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
