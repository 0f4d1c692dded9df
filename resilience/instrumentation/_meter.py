""":class:`Meter`: the policy that counts admitted calls and their latencies for :class:`Live`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._policy import Emitter, Policy
from .._types import AsyncFn, SyncFn

if TYPE_CHECKING:
    from ._live import Live

__all__ = ["Meter"]


class Meter(Policy):
    """Counts the calls that reach it (``admitted``), those that raised (``failed``) and their
    latencies, into a :class:`Live` collector under its own ``name``.

    Build it with :meth:`Live.meter` and put it innermost in a pipeline: every call it sees
    was admitted by the policies around it (not refused by a breaker, limiter or bulkhead).
    It costs two clock reads and one locked update per call, only where it is used.

    Example:
        >>> import resilience as rs
        >>> live = rs.instrumentation.Live(clock=rs.testing.FakeClock())
        >>> guarded = rs.Pipeline(rs.Timeout(1), live.meter("search"))
        >>> guarded.call(sum, [1, 2])
        3
        >>> live.snapshot()["policies"][0]["totals"]["admitted"]
        1
    """

    kind = "meter"

    def __init__(self, live: Live, name: str) -> None:
        super().__init__(name=name)
        self._live = live

    # twin: async
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        now = self._live._clock.monotonic
        record = self._live.record_call
        name = self.name

        async def meter_wrapper(*args: Any, **kwargs: Any) -> Any:
            start = now()
            try:
                result = await fn(*args, **kwargs)
            except BaseException:
                record(name, start, now(), False)
                raise
            record(name, start, now(), True)
            return result

        return meter_wrapper

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        now = self._live._clock.monotonic
        record = self._live.record_call
        name = self.name

        def meter_wrapper(*args: Any, **kwargs: Any) -> Any:
            start = now()
            try:
                result = fn(*args, **kwargs)
            except BaseException:
                record(name, start, now(), False)
                raise
            record(name, start, now(), True)
            return result

        return meter_wrapper

    # twin: end
