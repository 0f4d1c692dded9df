"""What adapters share: the caller's scope and the memory bounds of retained outcomes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from .._types import positive_int
from ..errors import ConfigurationError

__all__ = [
    "MAX_BUFFERED_BYTES",
    "MAX_RESPONSE_BYTES",
    "BufferBudget",
    "CallerScope",
    "CURRENT_CALLER",
    "caller_scope",
]

#: Largest outcome (serialized response, encoded result) an idempotency record retains, in
#: bytes; a larger one is recorded as *not retained* (duplicates are refused, not replayed).
MAX_RESPONSE_BYTES = 1 << 20
#: Default bound on request bytes buffered for fingerprinting, summed over in-flight requests.
MAX_BUFFERED_BYTES = 64 << 20


@dataclass(slots=True)
class CallerScope:
    """The caller an adapter is serving: idempotency records claimed meanwhile are its own.

    Attributes:
        principal: who is calling (a hash of a credential, a tenant id; never a constant).
        replayed: set when a record claimed in this scope was replayed (adapters turn it into
            their replay marker, e.g. ``idempotent-replayed: true`` gRPC trailing metadata).
    """

    principal: str
    replayed: bool = False


#: The :class:`CallerScope` being served (``None`` outside any). :func:`caller_scope` is the way
#: in for a block; an adapter whose caller's scope spans callbacks (a server interceptor entering
#: it per request and leaving it before the handler's own streaming code) sets and resets this
#: variable itself: ``token = CURRENT_CALLER.set(CallerScope(principal))``, then
#: ``CURRENT_CALLER.reset(token)``.
CURRENT_CALLER: ContextVar[CallerScope | None] = ContextVar(
    "resilience_idempotency_caller", default=None
)


@contextmanager
def caller_scope(principal: str) -> Iterator[CallerScope]:
    """Scope the idempotency records claimed inside the block to ``principal``.

    While it is active, :meth:`IdempotencyRecords.key` (and so every :class:`Idempotent`
    policy) includes ``principal`` in the store key: the same idempotency key sent by two
    callers names two records, and one caller's stored outcome is never replayed to another.
    The gRPC server interceptor enters it around its ``idempotency=`` policy; use it in your
    own adapters (a queue consumer serving several tenants, an RPC framework).

    Example:
        >>> import resilience as rs
        >>> runs = []
        >>> pay = rs.Idempotent(key=lambda k: k, clock=rs.testing.FakeClock())(
        ...     lambda k: runs.append(k) or len(runs))
        >>> with caller_scope("alice"):
        ...     first = pay("order-1")
        >>> with caller_scope("alice") as alice:
        ...     again = pay("order-1")
        >>> with caller_scope("bob"):
        ...     other = pay("order-1")
        >>> first, again, alice.replayed, other
        (1, 1, True, 2)
    """
    value: object = principal
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"principal must be a non-empty str, got {principal!r}")
    scope = CallerScope(value)
    token = CURRENT_CALLER.set(scope)
    try:
        yield scope
    finally:
        CURRENT_CALLER.reset(token)


class BufferBudget:
    """A bound on bytes held in memory at once, shared by every request of an adapter.

    Adapters that must read a whole request before deciding (fingerprinting) :meth:`reserve`
    its bytes as they arrive and :meth:`release` them when the request is done; a reservation
    that would exceed ``limit`` is refused (answer "busy, retry later" instead of growing).
    Thread-safe; cheap (one lock, no I/O).

    Example:
        >>> budget = BufferBudget(100)
        >>> budget.reserve(60), budget.reserve(60), budget.in_use
        (True, False, 60)
        >>> budget.release(60)
        >>> budget.in_use
        0
    """

    __slots__ = ("_lock", "in_use", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = positive_int(limit, "max_buffered_bytes")
        self.in_use = 0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> bool:
        """Take ``n`` more bytes; ``False`` (nothing taken) when that would exceed ``limit``."""
        with self._lock:
            if self.in_use + n > self.limit:
                return False
            self.in_use += n
            return True

    def release(self, n: int) -> None:
        """Give back ``n`` bytes taken by :meth:`reserve`."""
        with self._lock:
            self.in_use = max(0, self.in_use - n)
