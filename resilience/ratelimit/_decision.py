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

if TYPE_CHECKING:
    from ._buckets import Buckets

__all__ = ["Decision", "LocalResult", "Permit", "Reservation", "decision_new", "permit_new"]


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


class Decision(NamedTuple):
    """The outcome of one rate-limit check (enough for the IETF ``RateLimit`` fields).

    Attributes:
        allowed: whether the call may proceed.
        retry_after: seconds until the same call would be admitted (0.0 when allowed).
        remaining: whole permits left right now (``RateLimit: r=``).
        limit: the quota, ``burst`` permits (``RateLimit-Policy: q=``).
        reset_after: seconds until the bucket is full again (``RateLimit: t=``).
        waited: seconds the caller waited (or must wait) for its slot (pacing).
        permit: what the check took (``None`` when it took nothing: refused, ``cost=0``, or
            admitted because the store failed open); pass the decision to
            :meth:`RateLimiter.refund` to give it back when the work was refused elsewhere.

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


class Reservation(NamedTuple):
    key: str | None
    cost_time: float
    taken: float
    via_store: bool


class LocalResult(tuple):  # type: ignore[type-arg]
    """A decision taken in process while the store failed (``on_store_error="local"``): its
    permits come from this process's buckets, and a refund goes back there, not to the store."""

    __slots__ = ()


#: ``object.__new__``: a :class:`Permit` whose slots :meth:`RateLimiter._decision` fills.
permit_new: Callable[[type[Permit]], Permit] = object.__new__

#: ``tuple.__new__`` builds a :class:`Decision` without running its Python-level ``__new__``.
decision_new: Callable[[type[Decision], tuple[Any, ...]], Decision] = tuple.__new__
