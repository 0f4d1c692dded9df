"""Rate limiting: GCRA token bucket, Guava/Sentinel warm-up, uniform pacing, keyed limits.

One state machine covers Sentinel's four flow-control behaviours (reject, warm-up, pacing,
warm-up + pacing); :mod:`resilience.ratelimit._core` documents the math. The package:

==================  =============================================================================
``_options.py``     option validation and the bucket parameters (:func:`limit_params`)
``_core.py``        the pure decision: :func:`transition`, :func:`refund`, :func:`status`,
                    :func:`fresh_at`
``_store.py``       the store operations (a check, a refund) and their Lua twins, composed from
                    ``bucket.lua`` + ``take.lua`` / ``refund.lua`` + ``save.lua``
``_buckets.py``     in-process buckets, store round trips and fallbacks, refunds
``_table.py``       the keyed buckets' table and its full-table policy (eviction, families)
``_wrappers.py``    the decorator / pipeline wrappers (the fast path)
``_decision.py``    :class:`Decision`, :class:`Window` and :class:`Permit`
``_limits.py``      :class:`Limit` (one window) and the :class:`Tier` a key resolves to
``_windows.py``     several windows, one decision: the pure multi-window check, its store ops
``_tiered.py``      the multi-window / per-key-tier machinery of the limiter
``_limiter.py``     :class:`RateLimiter`, the policy
==================  =============================================================================

Example:
    >>> import resilience as rs
    >>> limiter = rs.RateLimiter("api", rate=2, clock=rs.testing.FakeClock())
    >>> [limiter.try_acquire(key="k").allowed for _ in range(3)]
    [True, True, False]
"""

from __future__ import annotations

from ._core import fresh_at, refund, status, transition
from ._decision import Decision, Permit, Window
from ._limiter import RateLimiter
from ._limits import Limit
from ._options import LimitParams, limit_params

# the private store operations, re-exported for resilience.stores.base's doctest and the tests
from ._store import _RefundOp, _TakeOp  # noqa: F401

__all__ = [
    "Decision",
    "Limit",
    "LimitParams",
    "Permit",
    "RateLimiter",
    "Window",
    "fresh_at",
    "limit_params",
    "refund",
    "status",
    "transition",
]
