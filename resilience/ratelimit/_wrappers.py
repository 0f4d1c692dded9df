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

import math
from typing import Any, cast

from .._policy import Emitter, own_refusal
from .._types import AsyncFn, SyncFn
from ..errors import RejectedError
from ._buckets import Buckets
from ._core import EPS, transition
from ._decision import MultiReservation, Reservation

__all__ = ["fast_path_ok", "multi_fast_path", "wrap_async", "wrap_sync"]

_INF = math.inf


def fast_path_ok(limiter: Buckets) -> bool:
    """Whether calls can take the in-process, global-bucket, never-waiting, one-window fast
    path (several windows decide through :meth:`Buckets._take_sync` / ``_take_async``)."""
    one_window = getattr(limiter, "_windows", None) is None
    return limiter.store is None and limiter._key is None and not limiter.max_wait and one_window


def multi_fast_path(limiter: Buckets) -> tuple[tuple[int, float, float], ...] | None:
    """The per-window ``(index in the flat state, interval, tolerance of one permit)`` of the
    multi-window fast path (in process, global bucket, never waiting, fixed limits, no warm-up
    and no zero rate on any window: plain GCRA on every window), or ``None``."""
    windows: Any = getattr(limiter, "_windows", None)
    if windows is None or windows.tier is None or limiter.store is not None:
        return None
    tier = windows.tier
    if limiter._key is not None or limiter.max_wait or tier.max_cost < 1.0:
        return None
    if any(p.max_tokens or p.interval == _INF for p in tier.params):
        return None
    return tuple(
        (3 * i, p.interval, (p.burst - 1.0) * p.interval) for i, p in enumerate(tier.params)
    )


# twin: async _take_async=_take_sync, _agive_back=_give_back, agive_back=give_back
# twin: + _multi_async=_multi_sync
def wrap_async(limiter: Buckets, fn: AsyncFn, em: Emitter) -> AsyncFn:
    """The wrapper of ``fn``: one permit per call (see :meth:`RateLimiter.wrap_async`)."""
    chain = em.chain
    outstanding = limiter._outstanding
    spec = multi_fast_path(limiter)
    if spec is not None:
        return _multi_async(limiter, fn, em, spec)
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
    spec = multi_fast_path(limiter)
    if spec is not None:
        return _multi_sync(limiter, fn, em, spec)
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
# twin: async _agive_back=_give_back, agive_back=give_back, _multi_async=_multi_sync
def _multi_async(
    limiter: Buckets, fn: AsyncFn, em: Emitter, spec: tuple[tuple[int, float, float], ...]
) -> AsyncFn:
    """The multi-window fast path (see :func:`multi_fast_path`): the global bucket's flat
    state updated in place, window by window, exactly as :func:`~._windows.take_all` does."""
    chain = em.chain
    outstanding = limiter._outstanding
    give_back = limiter._give_back
    lock = limiter._lock
    monotonic = limiter._clock.monotonic
    rejected = limiter._rejected
    windows: Any = cast(Any, limiter)._windows
    ps = windows.tier.params
    fresh = [x for _, t, _ in spec for x in (0.0, 0.0, t)]
    for i, p in enumerate(ps):
        fresh[3 * i + 1] = p.max_tokens
    zeros = (0.0,) * len(spec)
    eps = EPS

    async def rate_limit_wrapper(*args: Any, **kwargs: Any) -> Any:
        lock.acquire()
        try:
            now = monotonic()
            g = windows.glob
            if g is None:
                g = windows.glob = [ps, fresh.copy()]  # idle: every window at now
                flat = g[1]
                for i, _, _ in spec:
                    flat[i] = now
            flat = g[1]
            retry = 0.0
            ends = []
            for i, interval, tolerance in spec:
                tat = flat[i]
                if now > tat:
                    tat = now
                wait = tat - now - tolerance
                if wait > eps and wait > retry:
                    retry = wait
                ends.append(tat + interval)
            if not retry:
                for (i, _, _), end in zip(spec, ends, strict=True):
                    flat[i] = end
        finally:
            lock.release()
        if retry:
            raise rejected(retry, em)
        try:
            return await fn(*args, **kwargs)
        except RejectedError as exc:
            if own_refusal(exc, chain):
                cts = tuple(
                    [
                        outstanding(t, now + (e - now))
                        for (_, t, _), e in zip(spec, ends, strict=True)
                    ]
                )
                give_back(MultiReservation(None, cts, zeros, False, ps))
            raise

    return rate_limit_wrapper


# twin: end
# twin: sync (generated from the block above by scripts/twins.py; do not edit)
def _multi_sync(
    limiter: Buckets, fn: SyncFn, em: Emitter, spec: tuple[tuple[int, float, float], ...]
) -> SyncFn:
    """The multi-window fast path (see :func:`multi_fast_path`): the global bucket's flat
    state updated in place, window by window, exactly as :func:`~._windows.take_all` does."""
    chain = em.chain
    outstanding = limiter._outstanding
    give_back = limiter._give_back
    lock = limiter._lock
    monotonic = limiter._clock.monotonic
    rejected = limiter._rejected
    windows: Any = cast(Any, limiter)._windows
    ps = windows.tier.params
    fresh = [x for _, t, _ in spec for x in (0.0, 0.0, t)]
    for i, p in enumerate(ps):
        fresh[3 * i + 1] = p.max_tokens
    zeros = (0.0,) * len(spec)
    eps = EPS

    def rate_limit_wrapper(*args: Any, **kwargs: Any) -> Any:
        lock.acquire()
        try:
            now = monotonic()
            g = windows.glob
            if g is None:
                g = windows.glob = [ps, fresh.copy()]  # idle: every window at now
                flat = g[1]
                for i, _, _ in spec:
                    flat[i] = now
            flat = g[1]
            retry = 0.0
            ends = []
            for i, interval, tolerance in spec:
                tat = flat[i]
                if now > tat:
                    tat = now
                wait = tat - now - tolerance
                if wait > eps and wait > retry:
                    retry = wait
                ends.append(tat + interval)
            if not retry:
                for (i, _, _), end in zip(spec, ends, strict=True):
                    flat[i] = end
        finally:
            lock.release()
        if retry:
            raise rejected(retry, em)
        try:
            return fn(*args, **kwargs)
        except RejectedError as exc:
            if own_refusal(exc, chain):
                cts = tuple(
                    [
                        outstanding(t, now + (e - now))
                        for (_, t, _), e in zip(spec, ends, strict=True)
                    ]
                )
                give_back(MultiReservation(None, cts, zeros, False, ps))
            raise

    return rate_limit_wrapper


# twin: end
