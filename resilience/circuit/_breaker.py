"""The circuit breaker policy: the shell around the pure core (private; see the package)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

from .._clock import Clock, RandomLike, resolve_clock
from .._degraded import STORE_LOG
from .._policy import Emitter, Policy, own_refusal, refusal
from .._types import AsyncFn, Duration, ExceptionSpec, SyncFn
from ..errors import CircuitOpenError, StoreError
from ..events import (
    CallRejected,
    CircuitStateChanged,
    Listener,
    StoreFailed,
    TransitionReason,
    error_type,
)
from ..stores.base import Store
from . import _core as core
from . import _local
from ._metrics import STATES, CircuitMetrics, CircuitState, metrics_of
from ._options import US, options
from ._shared import Shared

__all__ = ["CircuitBreaker"]

_NEVER = float("-inf")


class CircuitBreaker(Policy):
    """Stop calling a failing dependency for a while, then probe it.

    See the module documentation (:mod:`resilience.circuit`) for the pinned rules.

    Args:
        name: the breaker's name (events, metrics, and the key of its state in a store).
        failure_ratio: open when ``failures / calls >= failure_ratio`` (in ``(0, 1]``).
        failure_count: open when ``failures >= failure_count`` in the window.
        consecutive_failures: open after this many failures in a row, whenever they happened
            (a success ends the streak; neither ``min_calls`` nor the window applies), like
            pybreaker's ``fail_max``. Excludes ``failure_ratio`` and ``failure_count``.
        slow_call_ratio: open when ``slow / calls >= slow_call_ratio`` (in ``(0, 1]``); needs
            ``slow_call_duration``.
        slow_call_duration: a call taking strictly longer than this is slow.
        min_calls: calls the window must hold before any threshold is evaluated (>= 1). Default:
            10 when a ratio threshold is configured, else 1 (so ``failure_count=5`` alone opens
            after 5 failures).
        window: the sliding window, seconds (default 60).
        buckets: how many buckets the window is split into (default 10); the window must split
            into whole microseconds.
        open_for: how long the breaker stays OPEN before probing (default 30 s); or a
            :mod:`resilience.backoff` schedule giving the duration of the n-th consecutive
            opening (e.g. ``rs.backoff.exponential(initial=10, maximum=300, jitter="none")``),
            tabulated at construction for the first 32 openings.
        half_open_calls: probes admitted in HALF_OPEN (default 1).
        half_open_timeout: the longest a half-open episode waits for its probes' outcomes,
            counted from the first probe; then the breaker reopens. Default: ``open_for`` (its
            first duration for a schedule).
        on: exception types or predicate counted as failures (default :class:`Exception`);
            other exceptions are not recorded and release a half-open permit.
        on_result: predicate over results that count as failures (e.g. an HTTP 503 response).
        count_rejections: also count refusals raised by policies inside the breaker (an inner
            rate limiter's :class:`~resilience.RateLimitedError`, a bulkhead's
            :class:`~resilience.BulkheadFullError`, an inner breaker's
            :class:`~resilience.CircuitOpenError`) as outcomes, matched against ``on``. Default
            ``False``: they never reached the dependency, so they record nothing and release
            the permit.
        store: ``None`` (the default: per-process state, fastest) or a
            :class:`resilience.stores.Store` to share the state (key ``"cb:<name>"``);
            constructing a breaker never writes to it. With a :class:`resilience.RedisStore`
            every process using the same Redis and name shares one window, one state and the
            half-open permits: outcomes from all processes count toward the thresholds, an open
            circuit is open everywhere, and exactly ``half_open_calls`` probes run fleet-wide (a
            probe whose process died holds its permit only until ``half_open_timeout``). A
            successful call in the CLOSED state costs one round trip: its success is reported
            with this process's next operation on the breaker (a failure, a slow call and every
            half-open outcome are sent at once). **Trade-off:** a shared breaker
            sees the dependency's health sooner and avoids a probe storm from every instance,
            but one bad node (its own network or configuration failing its calls) can open the
            circuit for the whole fleet. Share it when failures come from the dependency; keep
            ``store=None`` (per process) when they tend to be local to an instance.
        on_store_error: with a store, what to do when it fails: ``"local"`` (default: use this
            process's own breaker state), ``"open"`` (let the call through unguarded) or
            ``"closed"`` (refuse the call).
        clock: time source (durations, window, open time).
        random: randomness for a jittered ``open_for`` schedule.
        listeners: event listeners (:class:`~resilience.events.CircuitStateChanged`,
            :class:`~resilience.events.CallRejected`, :class:`~resilience.events.StoreFailed`).

    Example:
        >>> import resilience as rs
        >>> clock = rs.testing.FakeClock()
        >>> breaker = rs.CircuitBreaker("payments", failure_count=2, open_for=30, clock=clock)
        >>> def charge() -> None:
        ...     raise ConnectionError("refused")
        >>> for _ in range(2):
        ...     try:
        ...         breaker.call(charge)
        ...     except ConnectionError:
        ...         pass
        >>> breaker.state
        <CircuitState.OPEN: 'open'>
        >>> try:
        ...     breaker.call(charge)
        ... except rs.CircuitOpenError as exc:
        ...     print(exc.retry_after)
        30.0
        >>> clock.advance(30)
        >>> breaker.call(lambda: "probe ok"), breaker.state
        ('probe ok', <CircuitState.CLOSED: 'closed'>)
    """

    kind = "circuit_breaker"

    def __init__(
        self,
        name: str,
        /,
        *,
        failure_ratio: float | None = None,
        failure_count: int | None = None,
        consecutive_failures: int | None = None,
        slow_call_ratio: float | None = None,
        slow_call_duration: Duration | None = None,
        min_calls: int | None = None,
        window: Duration = 60.0,
        buckets: int = 10,
        open_for: Any = 30.0,
        half_open_calls: int = 1,
        half_open_timeout: Duration | None = None,
        on: ExceptionSpec = Exception,
        on_result: Callable[[Any], bool] | None = None,
        count_rejections: bool = False,
        store: Store | None = None,
        on_store_error: Literal["local", "open", "closed"] = "local",
        clock: Clock | None = None,
        random: RandomLike | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(name=name, listeners=listeners)
        o = options(
            failure_ratio=failure_ratio,
            failure_count=failure_count,
            consecutive_failures=consecutive_failures,
            slow_call_ratio=slow_call_ratio,
            slow_call_duration=slow_call_duration,
            min_calls=min_calls,
            window=window,
            buckets=buckets,
            open_for=open_for,
            half_open_calls=half_open_calls,
            half_open_timeout=half_open_timeout,
            on=on,
            on_result=on_result,
            count_rejections=count_rejections,
            store=store,
            on_store_error=on_store_error,
            random=random,
        )
        self._opts = o
        self.failure_ratio = o.failure_ratio
        self.failure_count = o.failure_count
        self.consecutive_failures = o.consecutive_failures
        self.slow_call_ratio = o.slow_call_ratio
        self.slow_call_duration = o.slow_call_duration
        self.min_calls = o.min_calls
        self.window = o.window
        self.buckets = o.buckets
        self.open_for = o.open_for
        self.half_open_calls = o.half_open_calls
        self.half_open_timeout = o.half_open_timeout
        self._on = o.on
        self._on_result = o.on_result
        self.count_rejections = o.count_rejections
        self.store = o.store
        self.on_store_error = o.on_store_error
        self._clock = resolve_clock(clock)
        self._cfg = o.cfg
        self._key = f"cb:{self.name}"  # the state's key in a store
        self._lock = threading.Lock()
        self._st = core.initial_state(o.cfg)
        self._edge = [_NEVER]  # see _record_local and _local.py
        self._em = Emitter(self.listeners, None, "")  # events outside any call (state, open())
        self._shared = None if o.store is None else Shared(self, o.store)

    def describe(self) -> dict[str, Any]:
        """Plain data describing the configuration."""
        return {
            "kind": self.kind,
            "name": self.name,
            "failure_ratio": self.failure_ratio,
            "failure_count": self.failure_count,
            "consecutive_failures": self.consecutive_failures,
            "slow_call_ratio": self.slow_call_ratio,
            "slow_call_duration": self.slow_call_duration,
            "min_calls": self.min_calls,
            "window": self.window,
            "buckets": self.buckets,
            "open_for": self.open_for if isinstance(self.open_for, float) else repr(self.open_for),
            "half_open_calls": self.half_open_calls,
            "half_open_timeout": self.half_open_timeout,
            "count_rejections": self.count_rejections,
            "store": None if self.store is None else type(self.store).__name__,
        }

    def _now(self) -> int:
        return round(self._clock.monotonic() * US)

    # -- events -------------------------------------------------------------------------------
    def _transition(self, tr: core.Transition, em: Emitter | None) -> None:
        em = em or self._em
        if em:
            frm, to, reason = core.transition_names(tr)
            em.emit(
                CircuitStateChanged(
                    **em.origin(self.name),
                    from_state=frm,
                    to_state=to,
                    reason=cast(TransitionReason, reason),
                )
            )

    def _rejected(self, retry_us: int, em: Emitter) -> CircuitOpenError:
        # no timer (NO_TIMER) only when forced open: an armed OPEN or a half-open episode
        # with every probe out always has its deadline set
        forced = retry_us == core.NO_TIMER
        retry_after = None if forced else retry_us / US
        if em:
            em.emit(
                CallRejected(**em.origin(self.name), reason="circuit_open", retry_after=retry_after)
            )
        if forced:
            return refusal(
                CircuitOpenError(
                    f"circuit breaker {self.name!r} is forced open (by open(); no timer: it "
                    "stays open until close() or reset())",
                    policy=self.name,
                    forced=True,
                ),
                em,
            )
        return refusal(
            CircuitOpenError(
                f"circuit breaker {self.name!r} is open", policy=self.name, retry_after=retry_after
            ),
            em,
        )

    def _store_failed(self, exc: BaseException, em: Emitter | None) -> None:
        STORE_LOG.record(self.name, self.on_store_error, f"{exc}")
        em = em or self._em
        if em:
            em.emit(
                StoreFailed(
                    **em.origin(self.name),
                    decision=self.on_store_error,
                    error_type=error_type(exc) or "",
                )
            )

    # -- permit-and-record primitives (in-process state) --------------------------------------
    def _acquire_local(self, em: Emitter) -> int:
        """Take a permit from the local state or raise :class:`CircuitOpenError`."""
        with self._lock:
            permit, retry_us, tr = core.acquire(self._st, self._cfg, self._now())
        if tr is not None:
            self._transition(tr, em)
        if not core.granted(permit):
            raise self._rejected(retry_us, em)
        return permit

    def _record_local(
        self, permit: int, outcome: int, em: Emitter, now: float | None = None
    ) -> None:
        st = self._st
        with self._lock:
            if now is None:
                now = self._clock.monotonic()
            tr = core.record(st, self._cfg, round(now * US), permit, outcome)
            until = core.fast_success_until(st, self._cfg)
            self._edge[0] = _NEVER if until == core.NEVER else until / US
        if tr is not None:
            self._transition(tr, em)

    # -- wrappers (the in-process ones in ._local, the shared ones in ._shared) ---------------
    # twin: async
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        """``fn`` guarded by this breaker (the policy hook)."""
        if self._shared is not None:
            return self._shared.wrap_async(fn, em)
        return _local.wrap_async(self, fn, em)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        """``fn`` guarded by this breaker (the policy hook)."""
        if self._shared is not None:
            return self._shared.wrap_sync(fn, em)
        return _local.wrap_sync(self, fn, em)

    # twin: end

    def _settle_local(self, permit: int, exc: BaseException, start: float, em: Emitter) -> None:
        """Record the outcome of a call that raised ``exc`` in the local state."""
        end = self._clock.monotonic()
        outcome = self._outcome(exc, None, start, end, em.chain)
        if outcome == core.RELEASE and core.state_of(permit) == core.CLOSED:
            return  # an ignored outcome in CLOSED: nothing to record or give back
        self._record_local(permit, outcome, em, end)

    def _outcome(
        self, exc: BaseException | None, result: object, start: float, end: float, chain: object
    ) -> int:
        """The outcome bits of a finished call (``RELEASE`` when it must not be recorded).

        ``chain``: the breaker's composition; a refusal by a policy inside it is released
        unless ``count_rejections``.
        """
        if exc is not None:
            if not (isinstance(exc, Exception) and self._on(exc)) or (
                not self.count_rejections and own_refusal(exc, chain)
            ):
                return core.RELEASE
            outcome = core.FAILURE
        elif self._on_result is not None and self._on_result(result):
            outcome = core.FAILURE
        else:
            outcome = core.SUCCESS
        slow_s = self.slow_call_duration
        if slow_s is not None and end - start > slow_s:
            outcome |= core.SLOW_BIT
        return outcome

    # -- inspection and manual control --------------------------------------------------------
    def _control(self, action: int) -> tuple[int, ...]:
        """Run a manual action (``M_TICK``: just the time-driven transitions); return a snapshot."""
        tr: core.Transition | None
        if self._shared is not None:
            try:
                tr, snap = self._shared.control(action)
            except StoreError as exc:
                self._store_failed(exc, None)
                if self.on_store_error != "local":
                    raise
                tr, snap = self._control_local(action)
        else:
            tr, snap = self._control_local(action)
        if tr is not None:
            self._transition(tr, None)
        return snap

    def _control_local(self, action: int) -> tuple[core.Transition | None, tuple[int, ...]]:
        with self._lock:
            now = self._now()
            st, cfg = self._st, self._cfg
            if action == core.M_TICK:
                tr = core.tick(st, cfg, now)
            else:
                tr = core.manual(st, cfg, now, action)
            return tr, (*core.snapshot(st, cfg, now), now)

    @property
    def state(self) -> CircuitState:
        """The current state (applying any transition that is due by now).

        Example:
            >>> import resilience as rs
            >>> breaker = rs.CircuitBreaker("db", failure_count=1)
            >>> breaker.open()
            >>> breaker.state
            <CircuitState.OPEN: 'open'>
        """
        return STATES[self._control(core.M_TICK)[0]]

    @property
    def metrics(self) -> CircuitMetrics:
        """A :class:`CircuitMetrics` snapshot of the window and counters."""
        return metrics_of(self._control(core.M_TICK), self.consecutive_failures is not None)

    def open(self) -> None:
        """Force the breaker open: no timer, no probes, until :meth:`close` or :meth:`reset`.

        A forced open is not a trip: ``open_for`` does not apply, nothing moves it to
        HALF_OPEN, refused calls get a :class:`~resilience.CircuitOpenError` with ``forced=True``
        and ``retry_after=None`` (adapters send no ``Retry-After`` and say "forced open" in the
        problem detail), and ``metrics.forced`` is ``True``. In a store the forced state has
        **no TTL**: it survives any idle period (see the docs' shared-state section).

        Example:
            >>> import resilience as rs
            >>> breaker = rs.CircuitBreaker("db", failure_ratio=0.5)
            >>> breaker.open()
            >>> try:
            ...     breaker.call(print, "never printed")
            ... except rs.CircuitOpenError as exc:
            ...     print(exc.forced, exc.retry_after)
            True None
            >>> breaker.metrics.forced
            True
        """
        self._control(core.M_OPEN)

    def close(self) -> None:
        """Close the breaker with an empty window (in-flight calls' outcomes become stale).

        Example:
            >>> import resilience as rs
            >>> breaker = rs.CircuitBreaker("db", failure_ratio=0.5)
            >>> breaker.open(); breaker.close()
            >>> breaker.state
            <CircuitState.CLOSED: 'closed'>
        """
        self._control(core.M_CLOSE)

    def reset(self) -> None:
        """Close the breaker and clear its window and counters.

        Example:
            >>> import resilience as rs
            >>> breaker = rs.CircuitBreaker("db", failure_ratio=0.5)
            >>> breaker.call(lambda: None)
            >>> breaker.reset()
            >>> breaker.metrics.calls
            0
        """
        self._control(core.M_RESET)
