"""The deadline published to inner code through a context variable.

Timeouts (and adapters receiving an inbound deadline) publish the *absolute* deadline; inner
code and outbound adapters read it with :func:`deadline` / :func:`remaining` and pass the
remaining time on (httpx timeouts, gRPC ``timeout=``). Nested deadlines only ever tighten.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ._clock import Clock, resolve_clock
from ._types import Duration, optional_seconds, seconds

__all__ = ["Deadline", "deadline", "deadline_scope", "remaining"]


class Deadline:
    """An absolute deadline on a clock's monotonic scale (treat it as immutable).

    Example:
        >>> import resilience as rs
        >>> clock = rs.testing.FakeClock()
        >>> with rs.deadline_scope(2.0, clock=clock) as d:
        ...     clock.advance(0.5)
        ...     rs.remaining()
        1.5
    """

    __slots__ = ("at", "clock")

    def __init__(self, at: float, clock: Clock) -> None:
        self.at = at
        self.clock = clock

    def __repr__(self) -> str:
        return f"Deadline(at={self.at!r}, clock={self.clock!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Deadline):
            return NotImplemented
        return self.at == other.at and self.clock is other.clock

    def __hash__(self) -> int:
        return hash((self.at, id(self.clock)))

    def remaining(self) -> float:
        """Seconds left (negative once expired)."""
        return self.at - self.clock.monotonic()

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.clock.monotonic() >= self.at


#: The largest timeout (seconds, about three years) adapters hand to a transport: longer ones
#: overflow (grpcio treats a timeout above ~7e9 s as already expired, a sync socket raises
#: ``OverflowError`` above ~1e10 s), so a far-off deadline is passed on as this.
MAX_TIMEOUT = 1e8

#: Default ``max_deadline`` of the server adapters (ASGI middleware, gRPC server interceptors):
#: no client may set a deadline further away than five minutes.
DEFAULT_MAX_DEADLINE = 300.0


def check_max_deadline(value: Duration | None) -> float | None:
    """Validate a server adapter's ``max_deadline=`` (seconds > 0, or ``None``: no clamp)."""
    return optional_seconds(value, "max_deadline", allow_zero=False)


def clamp_inbound(timeout: float, max_deadline: float | None) -> float:
    """The timeout a server publishes for a client-chosen ``timeout``: at most ``max_deadline``.

    The client picks its deadline, so a server adapter never lets it reach further than
    ``max_deadline`` (a validated :func:`check_max_deadline` value; ``None``: unclamped).

    Example:
        >>> clamp_inbound(1e12, 300.0), clamp_inbound(2.5, 300.0), clamp_inbound(1e12, None)
        (300.0, 2.5, 1000000000000.0)
    """
    if max_deadline is not None and timeout > max_deadline:
        return max_deadline
    return timeout


_DEADLINE: ContextVar[Deadline | None] = ContextVar("resilience_deadline", default=None)


def deadline() -> Deadline | None:
    """The deadline of the current call (the tightest enclosing one), or ``None``.

    Example:
        >>> import resilience as rs
        >>> rs.deadline() is None
        True
    """
    return _DEADLINE.get()


def remaining() -> float | None:
    """Seconds left before the current deadline, or ``None`` when there is none."""
    d = _DEADLINE.get()
    return None if d is None else d.at - d.clock.monotonic()


def tighter(at: float, clock: Clock) -> Deadline:
    """The deadline to publish for a new scope ending at ``at``: never looser than the current."""
    cur = _DEADLINE.get()
    if cur is not None and cur.clock is clock and cur.at <= at:
        return cur
    return Deadline(at, clock)


@contextmanager
def deadline_scope(timeout: Duration, *, clock: Clock | None = None) -> Iterator[Deadline]:
    """Publish a deadline ``timeout`` seconds from now for the code in the ``with`` block.

    It does not enforce anything by itself (use :class:`resilience.Timeout` for that); it lets
    adapters propagate an inbound deadline (an HTTP header, a gRPC deadline) to outbound calls.
    An enclosing tighter deadline wins.
    """
    clk = resolve_clock(clock)
    # runtime input (an inbound header): any non-negative finite timeout, however long
    d = tighter(clk.monotonic() + seconds(timeout, "timeout", maximum=math.inf), clk)
    token = _DEADLINE.set(d)
    try:
        yield d
    finally:
        _DEADLINE.reset(token)
