"""The limiter as a decorator: the wrappers built once per decorated function or pipeline.

The fast path (in process, global bucket, no waiting) runs :func:`transition` under the
limiter's lock with everything bound as locals; every other configuration goes through
:meth:`Buckets._take_sync` / :meth:`Buckets._take_async`. A call refused by a policy inside this
one (its own composition's :class:`~resilience.RejectedError`, see
:func:`resilience._policy.own_refusal`) never reached the protected function: its permit is
given back (the pure refund(): the TAT rolls back by what is left of the call's cost_time (its
share of the first-come-first-served backlog ends at ``t0 + reset_after``), never below now,
and warm-up's stored tokens come back), through the store in one round trip when shared. The
except clauses cost nothing on the happy path.

Example:
    >>> import resilience as rs
    >>> limiter = rs.RateLimiter("api", rate=1, clock=rs.testing.FakeClock())
    >>> wrapped = wrap_sync(limiter, lambda: "ok", limiter._em)
    >>> wrapped()
    'ok'
"""

from __future__ import annotations

from typing import Any

from .._policy import Emitter, own_refusal
from .._types import AsyncFn, SyncFn
from ..errors import RejectedError
from ._buckets import Buckets
from ._core import transition
from ._decision import Reservation

__all__ = ["fast_path_ok", "wrap_async", "wrap_sync"]


def fast_path_ok(limiter: Buckets) -> bool:
    """Whether calls can take the in-process, global-bucket, never-waiting, one-window fast
    path (several windows decide through :meth:`Buckets._take_sync` / ``_take_async``)."""
    one_window = getattr(limiter, "_windows", None) is None
    return limiter.store is None and limiter._key is None and not limiter.max_wait and one_window


# twin: async _take_async=_take_sync, _agive_back=_give_back, agive_back=give_back
def wrap_async(limiter: Buckets, fn: AsyncFn, em: Emitter) -> AsyncFn:
    """The wrapper of ``fn``: one permit per call (see :meth:`RateLimiter.wrap_async`)."""
    chain = em.chain
    outstanding = limiter._outstanding
    if not fast_path_ok(limiter):
        keyfn = limiter._key
        take = limiter._take_async
        agive_back = limiter._agive_back
        monotonic = limiter._clock.monotonic

        async def rate_limit_wrapper_slow(*args: Any, **kwargs: Any) -> Any:
            key = None if keyfn is None else keyfn(*args, **kwargs)
            t0 = monotonic()
            r = await take(key, 1.0, em)
            try:
                return await fn(*args, **kwargs)
            except RejectedError as exc:
                if r is not None and own_refusal(exc, chain):
                    await agive_back(limiter._reservation(key, r, t0))
                raise

        return rate_limit_wrapper_slow

    # in process: a refund never waits for a store
    give_back = limiter._give_back
    lock = limiter._lock
    monotonic = limiter._clock.monotonic
    p = limiter.params
    rejected = limiter._rejected
    step = transition

    async def rate_limit_wrapper(*args: Any, **kwargs: Any) -> Any:
        lock.acquire()
        try:
            s0 = limiter._stored
            ok, tat, stored, wait, ct = step(limiter._tat, s0, monotonic(), 1, 0.0, p)
            if ok:
                limiter._tat = tat
                limiter._stored = stored
        finally:
            lock.release()
        if not ok:
            raise rejected(wait, em)
        try:
            return await fn(*args, **kwargs)
        except RejectedError as exc:
            if own_refusal(exc, chain):
                give_back(Reservation(None, outstanding(ct, tat), s0 - stored, False))
            raise

    return rate_limit_wrapper


# twin: end
# twin: sync (generated from the block above by scripts/twins.py; do not edit)
def wrap_sync(limiter: Buckets, fn: SyncFn, em: Emitter) -> SyncFn:
    """The wrapper of ``fn``: one permit per call (see :meth:`RateLimiter.wrap_sync`)."""
    chain = em.chain
    outstanding = limiter._outstanding
    if not fast_path_ok(limiter):
        keyfn = limiter._key
        take = limiter._take_sync
        give_back = limiter._give_back
        monotonic = limiter._clock.monotonic

        def rate_limit_wrapper_slow(*args: Any, **kwargs: Any) -> Any:
            key = None if keyfn is None else keyfn(*args, **kwargs)
            t0 = monotonic()
            r = take(key, 1.0, em)
            try:
                return fn(*args, **kwargs)
            except RejectedError as exc:
                if r is not None and own_refusal(exc, chain):
                    give_back(limiter._reservation(key, r, t0))
                raise

        return rate_limit_wrapper_slow

    # in process: a refund never waits for a store
    give_back = limiter._give_back
    lock = limiter._lock
    monotonic = limiter._clock.monotonic
    p = limiter.params
    rejected = limiter._rejected
    step = transition

    def rate_limit_wrapper(*args: Any, **kwargs: Any) -> Any:
        lock.acquire()
        try:
            s0 = limiter._stored
            ok, tat, stored, wait, ct = step(limiter._tat, s0, monotonic(), 1, 0.0, p)
            if ok:
                limiter._tat = tat
                limiter._stored = stored
        finally:
            lock.release()
        if not ok:
            raise rejected(wait, em)
        try:
            return fn(*args, **kwargs)
        except RejectedError as exc:
            if own_refusal(exc, chain):
                give_back(Reservation(None, outstanding(ct, tat), s0 - stored, False))
            raise

    return rate_limit_wrapper


# twin: end
