"""State stores: where shared policy state lives.

Every change to shared state is a :class:`StoreOp`: a small object whose pure ``apply(state, now)``
returns the new state, the caller's result and a TTL. The in-memory store runs it under a lock;
the Redis store (``resilience-policies[redis]``) runs a Lua twin of the same function
atomically, in one round trip, on the server's clock. The pure function is the specification
both must follow.
"""

from __future__ import annotations

from .base import AsyncStore, Store, StoreFullError, StoreOp
from .memory import MemoryStore

__all__ = ["AsyncStore", "MemoryStore", "Store", "StoreFullError", "StoreOp"]
