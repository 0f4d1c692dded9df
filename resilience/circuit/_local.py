"""The in-process breaker's wrappers: the closed state's fast path (private).

The wrappers take no lock to get a permit in CLOSED (:func:`._core.acquire` is read-only there:
the permit is the token, one atomic list read), and record a fast success with
:func:`._core.count_success` when the permit is current (CLOSED, same generation) and the clock
is below ``breaker._edge[0]``, the bound :func:`._core.fast_success_until` computed under the
lock after every :func:`._core.record` (see ``CircuitBreaker._record_local``). Everything else
goes through :func:`._core.record` under the lock.

The one specialised fast path: ``count_success`` is inlined (two list increments on the core's
named indices, bound as locals) because a function call there costs ~450 instructions, +9% of
the whole closed-state call (``python -m benchmarks.instr --only breaker/closed``).

Example:
    >>> import resilience as rs
    >>> breaker = rs.CircuitBreaker("db", failure_ratio=0.5)
    >>> breaker(lambda: "ok")(), breaker.metrics.calls
    ('ok', 1)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .._policy import Emitter
from . import _core as core

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker

__all__ = ["wrap_async", "wrap_sync"]


def wrap_sync(b: CircuitBreaker, fn: Callable[..., Any], em: Emitter) -> Callable[..., Any]:
    st = b._st
    lock = b._lock
    mono = b._clock.monotonic
    edge = b._edge
    acquire = b._acquire_local
    settle = b._settle_local
    record = b._record_local
    token, not_closed, cur, calls = core.TOKEN, core.STATE_BITS, core.CUR, core.CALLS
    on_result = b._on_result
    slow_s = b.slow_call_duration

    if slow_s is None and on_result is None:

        def circuit_wrapper(*args: Any, **kwargs: Any) -> Any:
            permit = st[token]
            if permit & not_closed:
                permit = acquire(em)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                settle(permit, exc, 0.0, em)
                raise
            with lock:
                now = mono()
                if now < edge[0] and permit == st[token]:
                    st[st[cur]] += 1  # core.count_success(st), inlined
                    st[calls] += 1
                    return result
            record(permit, core.SUCCESS, em, now)
            return result

        return circuit_wrapper

    timed = slow_s is not None
    limit = slow_s or 0.0
    failure, slow_bit = core.FAILURE, core.SLOW_BIT

    def general_circuit_wrapper(*args: Any, **kwargs: Any) -> Any:
        permit = st[token]
        if permit & not_closed:
            permit = acquire(em)
        start = mono() if timed else 0.0
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            settle(permit, exc, start, em)
            raise
        outcome = failure if on_result is not None and on_result(result) else 0
        with lock:
            now = mono()
            if timed and now - start > limit:
                outcome |= slow_bit
            if not outcome and now < edge[0] and permit == st[token]:
                st[st[cur]] += 1  # core.count_success(st), inlined
                st[calls] += 1
                return result
        record(permit, outcome, em, now)
        return result

    return general_circuit_wrapper


def wrap_async(
    b: CircuitBreaker, fn: Callable[..., Awaitable[Any]], em: Emitter
) -> Callable[..., Awaitable[Any]]:
    st = b._st
    lock = b._lock
    mono = b._clock.monotonic
    edge = b._edge
    acquire = b._acquire_local
    settle = b._settle_local
    record = b._record_local
    token, not_closed, cur, calls = core.TOKEN, core.STATE_BITS, core.CUR, core.CALLS
    failure, slow_bit = core.FAILURE, core.SLOW_BIT
    on_result = b._on_result
    slow_s = b.slow_call_duration
    timed = slow_s is not None
    limit = slow_s or 0.0

    async def circuit_wrapper(*args: Any, **kwargs: Any) -> Any:
        permit = st[token]
        if permit & not_closed:
            permit = acquire(em)
        start = mono() if timed else 0.0
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            settle(permit, exc, start, em)
            raise
        outcome = failure if on_result is not None and on_result(result) else 0
        with lock:
            now = mono()
            if timed and now - start > limit:
                outcome |= slow_bit
            if not outcome and now < edge[0] and permit == st[token]:
                st[st[cur]] += 1  # core.count_success(st), inlined
                st[calls] += 1
                return result
        record(permit, outcome, em, now)
        return result

    return circuit_wrapper
