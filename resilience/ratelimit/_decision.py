"""What a check returns: :class:`Decision` and the :class:`Permit` a refund gives back.

Example:
    >>> import resilience as rs
    >>> d = rs.RateLimiter("api", rate=5, clock=rs.testing.FakeClock()).try_acquire()
    >>> d.allowed, d.permit.refunded
    (True, False)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ._options import LimitParams

if TYPE_CHECKING:
    from ._buckets import Buckets

__all__ = [
    "Decision",
    "LocalResult",
    "MultiPermit",
    "MultiReservation",
    "Permit",
    "Reservation",
    "Window",
    "decision_new",
    "permit_new",
]


class Permit:
    """What one admitted check took from its bucket: :meth:`RateLimiter.refund` gives it back.

    Opaque; found on :attr:`Decision.permit`. It remembers the bucket (``key``), the backlog
    the check added and the warm-up tokens it took, so a refund gives back exactly that (never
    more), through the store the permits came from, and at most once (``refunded``).

    Example:
        >>> import resilience as rs
        >>> limiter = rs.RateLimiter("api", rate=5, clock=rs.testing.FakeClock())
        >>> permit = limiter.try_acquire(key="alice").permit
        >>> permit.key, permit.refunded
        ('alice', False)
    """

    __slots__ = ("_owner", "_refunded", "cost_time", "end", "key", "taken", "via_store")

    def __init__(
        self,
        owner: Buckets,
        key: str | None,
        cost_time: float,
        taken: float,
        via_store: bool,
        end: float,
    ) -> None:
        self._owner = owner
        self.key = key
        self.cost_time = cost_time
        self.taken = taken
        self.via_store = via_store
        #: When (on the limiter's clock, at the latest) this permit's share of the backlog ends.
        self.end = end
        self._refunded = False

    @property
    def refunded(self) -> bool:
        """Whether the permits were given back (a permit is refunded at most once)."""
        return self._refunded

    def __repr__(self) -> str:
        state = "refunded" if self.refunded else "held"
        return f"<Permit of {self._owner.name!r} key={self.key!r} {state}>"


class MultiPermit(Permit):
    """A :class:`Permit` of a multi-window limiter: what each window was charged (a refund
    gives every window back its own share)."""

    __slots__ = ("cost_times", "ends", "ps", "takens")

    cost_times: tuple[float, ...]
    takens: tuple[float, ...]
    ends: tuple[float, ...]
    #: the parameters of the windows charged (the key's tier at the time)
    ps: tuple[LimitParams, ...]


class Window(NamedTuple):
    """One window's part of a multi-window :class:`Decision` (one ``RateLimit`` item each).

    Attributes:
        name: the window's name (:attr:`resilience.Limit.name`).
        limit: its quota, whole permits (``RateLimit-Policy: q=``).
        window: seconds a drained window takes to refill (``RateLimit-Policy: w=``).
        remaining: whole permits left in it right now (``RateLimit: r=``).
        reset_after: seconds until it is full again (``RateLimit: t=``).
        retry_after: seconds until it would admit the call (0.0 where it admitted it).

    Example:
        >>> import resilience as rs
        >>> limiter = rs.RateLimiter("api", limits=[rs.Limit(2), rs.Limit(5, per=60)],
        ...     clock=rs.testing.FakeClock())
        >>> [(w.name, w.remaining) for w in limiter.try_acquire().windows]
        [('1s', 1), ('60s', 4)]
    """

    name: str
    limit: int
    window: float
    remaining: int
    reset_after: float
    retry_after: float


class Decision(NamedTuple):
    """The outcome of one rate-limit check (enough for the IETF ``RateLimit`` fields).

    Attributes:
        allowed: whether the call may proceed.
        retry_after: seconds until the same call would be admitted (0.0 when allowed).
        remaining: whole permits left right now (``RateLimit: r=``).
        limit: the quota, ``burst`` permits (``RateLimit-Policy: q=``).
        reset_after: seconds until the bucket is full again (``RateLimit: t=``).
            With several windows, ``remaining``, ``limit`` and ``reset_after`` are those of
            the window with the fewest permits left, and ``retry_after`` is the latest of the
            windows that refused.
        waited: seconds the caller waited (or must wait) for its slot (pacing).
        permit: what the check took (``None`` when it took nothing: refused, ``cost=0``, or
            admitted because the store failed open); pass the decision to
            :meth:`RateLimiter.refund` to give it back when the work was refused elsewhere.
        windows: with several windows (``limits=``), each window's :class:`Window`, in order;
            empty for a one-window limiter (the decision's own fields describe it).

    Example:
        >>> import resilience as rs
        >>> limiter = rs.RateLimiter("api", rate=5, clock=rs.testing.FakeClock())
        >>> d = limiter.try_acquire(key="alice")
        >>> d.allowed, d.remaining, d.limit
        (True, 4, 5)
    """

    allowed: bool
    retry_after: float
    remaining: int
    limit: int
    reset_after: float
    waited: float = 0.0
    permit: Permit | None = None
    windows: tuple[Window, ...] = ()


class Reservation(NamedTuple):
    key: str | None
    cost_time: float
    taken: float
    via_store: bool


class MultiReservation(NamedTuple):
    key: str | None
    cost_times: tuple[float, ...]
    takens: tuple[float, ...]
    via_store: bool
    ps: tuple[LimitParams, ...]


class LocalResult(tuple):  # type: ignore[type-arg]
    """A decision taken in process while the store failed (``on_store_error="local"``): its
    permits come from this process's buckets, and a refund goes back there, not to the store."""

    __slots__ = ()


#: ``object.__new__``: a :class:`Permit` whose slots :meth:`RateLimiter._decision` fills.
permit_new: Callable[[type[Permit]], Permit] = object.__new__

#: ``tuple.__new__`` builds a :class:`Decision` without running its Python-level ``__new__``.
decision_new: Callable[[type[Decision], tuple[Any, ...]], Decision] = tuple.__new__
