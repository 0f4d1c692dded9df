"""The deadline published to inner code through a context variable.

Timeouts (and adapters receiving an inbound deadline, with :func:`deadline_scope` or
:func:`publish_deadline`) publish the *absolute* deadline; inner code and outbound adapters
read it with :func:`deadline` / :func:`remaining` and bound their waits and timeouts with
:func:`cap_to_deadline`. Nested deadlines only ever tighten.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import overload

from ._clock import Clock, resolve_clock
from ._types import Duration, seconds

__all__ = [
    "Deadline",
    "cap_to_deadline",
    "deadline",
    "deadline_scope",
    "publish_deadline",
    "remaining",
    "reset_deadline",
]


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


#: The largest timeout (seconds, about three years) :func:`cap_to_deadline` returns: longer
#: ones overflow transports (grpcio treats a timeout above ~7e9 s as already expired, a sync
#: socket raises ``OverflowError`` above ~1e10 s), so a far-off deadline is passed on as this.
MAX_TIMEOUT = 1e8


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


@overload
def cap_to_deadline(seconds: float) -> float: ...
@overload
def cap_to_deadline(seconds: None = None) -> float | None: ...
def cap_to_deadline(seconds: float | None = None) -> float | None:
    """``seconds``, or less when the current deadline comes sooner: how long a wait may last.

    The one place a wait (a bulkhead's or limiter's ``max_wait``, a lease wait) or an outbound
    timeout (an httpx request's, a gRPC attempt's ``timeout=``) is bounded by the deadline of
    the current call. The result is never negative (``0.0`` once the deadline has passed) and
    never above :data:`MAX_TIMEOUT` (10**8 s, what transports can represent). With ``None``
    (no bound of your own) it is the time left, or ``None`` when no deadline is published.

    Example:
        >>> import resilience as rs
        >>> clock = rs.testing.FakeClock()
        >>> rs.cap_to_deadline(30.0), rs.cap_to_deadline()
        (30.0, None)
        >>> with rs.deadline_scope(2.0, clock=clock):
        ...     clock.advance(0.5)
        ...     rs.cap_to_deadline(30.0), rs.cap_to_deadline(1.0), rs.cap_to_deadline()
        (1.5, 1.0, 1.5)
        >>> with rs.deadline_scope(1.0, clock=clock):
        ...     clock.advance(5)
        ...     rs.cap_to_deadline(30.0)
        0.0
    """
    d = _DEADLINE.get()
    if d is None:
        if seconds is None or seconds <= MAX_TIMEOUT:
            return seconds
        return MAX_TIMEOUT
    left = d.at - d.clock.monotonic()
    if seconds is not None and seconds < left:
        left = seconds
    if left <= 0:
        return 0.0
    return left if left < MAX_TIMEOUT else MAX_TIMEOUT


def publish_deadline(timeout: Duration, *, clock: Clock | None = None) -> Token[Deadline | None]:
    """Publish a deadline ``timeout`` seconds from now in the current context; returns the token
    that :func:`reset_deadline` takes to withdraw it.

    For adapters whose scope does not fit a ``with`` block (a server interceptor publishing a
    client's deadline around a streaming handler); prefer :func:`deadline_scope` otherwise. Like
    it, it enforces nothing, and an enclosing tighter deadline (on the same clock) wins. Any
    non-negative timeout is accepted, however long (it is runtime input, e.g. a header).

    Example:
        >>> import resilience as rs
        >>> clock = rs.testing.FakeClock()
        >>> token = rs.publish_deadline(3.0, clock=clock)
        >>> rs.remaining()
        3.0
        >>> rs.reset_deadline(token)
        >>> rs.remaining() is None
        True
    """
    clk = resolve_clock(clock)
    if type(timeout) is not float or not 0.0 <= timeout < math.inf:
        timeout = seconds(timeout, "timeout", maximum=math.inf)
    return _DEADLINE.set(tighter(clk.monotonic() + timeout, clk))


def reset_deadline(token: Token[Deadline | None]) -> None:
    """Withdraw a deadline published by :func:`publish_deadline` (in the same context)."""
    _DEADLINE.reset(token)


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
    token = publish_deadline(timeout, clock=clock)
    try:
        d = _DEADLINE.get()
        assert d is not None
        yield d
    finally:
        _DEADLINE.reset(token)
