"""The in-process breaker's wrappers: the closed state's fast path (private).

The wrappers take no lock to get a permit in CLOSED (:func:`._core.acquire` is read-only there:
the permit is the token, one atomic list read), and record a fast success with
:func:`._core.count_success` when the permit is current (CLOSED, same generation) and the clock
is below ``breaker._edge[0]``, the bound :func:`._core.fast_success_until` computed under the
lock after every :func:`._core.record` (see ``CircuitBreaker._record_local``). Everything else
goes through :func:`._core.record` under the lock.

The one specialised fast path: the permit read (``st[TOKEN]``, ``& STATE_BITS``) and
``count_success`` are inlined on the core's indices spelled as literals (checked against
:mod:`._core` at import). Measured with ``python -m benchmarks.instr --only breaker/closed``
(instructions per call, sync): 4965 inlined; 5122 with the named indices bound as closure
variables (+3%: a closure read costs ~30 instructions, there are five); 5436 calling
``count_success`` (+9%).

Example:
    >>> import resilience as rs
    >>> breaker = rs.CircuitBreaker("db", failure_ratio=0.5)
    >>> breaker(lambda: "ok")(), breaker.metrics.calls
    ('ok', 1)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._policy import Emitter
from .._types import AsyncFn, SyncFn
from . import _core as core

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker

__all__ = ["wrap_async", "wrap_sync"]

# TOKEN, STATE_BITS, CUR, CALLS as the fast path spells them
_FAST_PATH_LAYOUT = (0, 3, 11, 6)
if (core.TOKEN, core.STATE_BITS, core.CUR, core.CALLS) != _FAST_PATH_LAYOUT:  # pragma: no cover
    raise ImportError("resilience.circuit._local: the fast path's indices differ from _core's")


# twin: async
def wrap_async(b: CircuitBreaker, fn: AsyncFn, em: Emitter) -> AsyncFn:
    """``fn`` under the in-process breaker ``b`` (see :meth:`CircuitBreaker.wrap_async`)."""
    st = b._st
    lock = b._lock
    mono = b._clock.monotonic
    edge = b._edge
    acquire = b._acquire_local
    settle = b._settle_local
    record = b._record_local
    on_result = b._on_result
    slow_s = b.slow_call_duration

    if slow_s is None and on_result is None:

        async def circuit_wrapper(*args: Any, **kwargs: Any) -> Any:
            permit = st[0]  # TOKEN
            if permit & 3:  # STATE_BITS: not CLOSED
                permit = acquire(em)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                settle(permit, exc, 0.0, em)
                raise
            with lock:
                now = mono()
                if now < edge[0] and permit == st[0]:  # TOKEN: same generation
                    st[st[11]] += 1  # count_success(st), inlined: st[st[CUR]] += 1
                    st[6] += 1  # st[CALLS] += 1
                    return result
            record(permit, core.SUCCESS, em, now)
            return result

        return circuit_wrapper

    timed = slow_s is not None
    limit = slow_s or 0.0

    async def general_circuit_wrapper(*args: Any, **kwargs: Any) -> Any:
        permit = st[0]  # TOKEN
        if permit & 3:  # STATE_BITS: not CLOSED
            permit = acquire(em)
        start = mono() if timed else 0.0
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            settle(permit, exc, start, em)
            raise
        outcome = core.FAILURE if on_result is not None and on_result(result) else 0
        with lock:
            now = mono()
            if timed and now - start > limit:
                outcome |= core.SLOW_BIT
            if not outcome and now < edge[0] and permit == st[0]:  # TOKEN: same generation
                st[st[11]] += 1  # count_success(st), inlined: st[st[CUR]] += 1
                st[6] += 1  # st[CALLS] += 1
                return result
        record(permit, outcome, em, now)
        return result

    return general_circuit_wrapper


# twin: end
# twin: sync (generated from the block above by scripts/twins.py; do not edit)
def wrap_sync(b: CircuitBreaker, fn: SyncFn, em: Emitter) -> SyncFn:
    """``fn`` under the in-process breaker ``b`` (see :meth:`CircuitBreaker.wrap_sync`)."""
    st = b._st
    lock = b._lock
    mono = b._clock.monotonic
    edge = b._edge
    acquire = b._acquire_local
    settle = b._settle_local
    record = b._record_local
    on_result = b._on_result
    slow_s = b.slow_call_duration

    if slow_s is None and on_result is None:

        def circuit_wrapper(*args: Any, **kwargs: Any) -> Any:
            permit = st[0]  # TOKEN
            if permit & 3:  # STATE_BITS: not CLOSED
                permit = acquire(em)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                settle(permit, exc, 0.0, em)
                raise
            with lock:
                now = mono()
                if now < edge[0] and permit == st[0]:  # TOKEN: same generation
                    st[st[11]] += 1  # count_success(st), inlined: st[st[CUR]] += 1
                    st[6] += 1  # st[CALLS] += 1
                    return result
            record(permit, core.SUCCESS, em, now)
            return result

        return circuit_wrapper

    timed = slow_s is not None
    limit = slow_s or 0.0

    def general_circuit_wrapper(*args: Any, **kwargs: Any) -> Any:
        permit = st[0]  # TOKEN
        if permit & 3:  # STATE_BITS: not CLOSED
            permit = acquire(em)
        start = mono() if timed else 0.0
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            settle(permit, exc, start, em)
            raise
        outcome = core.FAILURE if on_result is not None and on_result(result) else 0
        with lock:
            now = mono()
            if timed and now - start > limit:
                outcome |= core.SLOW_BIT
            if not outcome and now < edge[0] and permit == st[0]:  # TOKEN: same generation
                st[st[11]] += 1  # count_success(st), inlined: st[st[CUR]] += 1
                st[6] += 1  # st[CALLS] += 1
                return result
        record(permit, outcome, em, now)
        return result

    return general_circuit_wrapper


# twin: end
