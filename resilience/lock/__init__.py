"""A fenced distributed lock: :class:`Lock` (``rs.Lock``), see ``docs/lock.md``.

The rooms: ``_ops`` (the pure state machine and its Lua twins), ``_beat`` (heartbeats) and
``_lock`` (the policy and its holds).
"""

from __future__ import annotations

from ._lock import Held, KeyedLock, Lock

__all__ = ["Held", "KeyedLock", "Lock"]
