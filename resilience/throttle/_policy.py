"""AdaptiveThrottle: client-side adaptive throttling (the policy; private module)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal, NoReturn

from .._clock import Clock, RandomLike, resolve_clock, resolve_random
from .._degraded import STORE_LOG
from .._policy import Emitter, Policy, own_refusal
from .._types import (
    AsyncFn,
    Duration,
    ExceptionSpec,
    SyncFn,
    exception_predicate,
    positive_int,
    positive_number,
    ratio,
    result_predicate,
    seconds,
)
from ..errors import ConfigurationError, StoreError, ThrottledError
from ..events import CallRejected, Listener, StoreFailed, error_type
from ..stores.base import Store
from . import _core as core
from ._shared import LOCAL, UNGUARDED, Shared

__all__ = ["AdaptiveThrottle"]

_MODES = ("local", "open", "closed")


class AdaptiveThrottle(Policy):
    """Reject calls locally, before they are sent, while the backend refuses too many of them.

    Client-side adaptive throttling: over a sliding ``window`` the throttle counts the
    *requests* (every call, including those it rejected itself) and the *accepts* (calls the
    backend did not refuse for overload), and rejects a new call with probability
    ``max(0, (requests - k * accepts) / (requests + 1))``, at most ``max_rejection``. While the
    backend accepts calls the probability is 0; when it refuses most of them, the client stops
    sending about as many as it would have seen refused, and the backend spends no work on
    them. A rejected call raises :class:`~resilience.ThrottledError` at once.

    A call counts as *not accepted* when it raises an exception matching ``on`` or returns a
    result matching ``on_result`` (the overload signals: a 503, ``RESOURCE_EXHAUSTED``, a
    timeout); every other outcome (success, an application error, a refusal by a policy
    inside the throttle, a cancelled call) counts as accepted. Narrow ``on`` to the overload
    errors of your client: with the default (:class:`Exception`) every error throttles.

    Args:
        name: the throttle's name (events, the store key ``"thr:<name>"``).
        k: the multiplier of accepts (>= 1): the client sends up to about ``k`` times the calls
            the backend accepts. Lower is more aggressive (the book suggests 2; 1.1 for
            expensive-to-reject backends).
        window: seconds of history (the book uses 2 minutes).
        buckets: the window's time buckets (it slides one bucket at a time).
        max_rejection: an upper bound on the rejection probability in (0, 1] (``None``: no
            bound), so a trickle of calls always probes the backend.
        on: exception types or predicate that mean "overloaded" (default :class:`Exception`).
        on_result: predicate over results that mean "overloaded" (e.g. an HTTP 503 response).
        store: ``None`` (per process) or a :class:`resilience.stores.Store` sharing the window
            fleet-wide (one round trip per call: the accepts this process has seen since its
            previous call are reported with its next decision).
        on_store_error: with a store, when it fails: ``"local"`` (the default: decide on this
            process's own window), ``"open"`` (admit unthrottled) or ``"closed"`` (reject).
        clock: time source of the window.
        random: the uniform draws of the decisions (a ``random.Random``-like object).
        listeners: event listeners (:class:`~resilience.events.CallRejected` with
            ``reason="throttled"``, :class:`~resilience.events.StoreFailed`).

    Example:
        >>> import random, resilience as rs
        >>> clock = rs.testing.FakeClock()
        >>> throttle = rs.AdaptiveThrottle("api", on=ConnectionError, clock=clock,
        ...                                random=random.Random(7))
        >>> def overloaded() -> None:
        ...     raise ConnectionError("503")
        >>> outcomes = []
        >>> for _ in range(100):
        ...     try:
        ...         throttle.call(overloaded)
        ...     except rs.ThrottledError:
        ...         outcomes.append("throttled")
        ...     except ConnectionError:
        ...         outcomes.append("sent")
        >>> outcomes.count("sent") < 20, throttle.counts()
        (True, (100, 0))
    """

    kind = "adaptive_throttle"

    def __init__(
        self,
        name: str,
        /,
        *,
        k: float = 2.0,
        window: Duration = 120.0,
        buckets: int = 20,
        max_rejection: float | None = None,
        on: ExceptionSpec = Exception,
        on_result: Callable[[Any], bool] | None = None,
        store: Store | None = None,
        on_store_error: Literal["local", "open", "closed"] = "local",
        clock: Clock | None = None,
        random: RandomLike | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(name=name, listeners=listeners)
        self.k = positive_number(k, "k")
        if self.k < 1:
            raise ConfigurationError(
                f"k must be >= 1 (below 1 a healthy backend is throttled), got {k!r}"
            )
        self.window = seconds(window, "window", allow_zero=False)
        self.buckets = positive_int(buckets, "buckets", maximum=1000)
        window_us = round(self.window * 1_000_000)
        if window_us < self.buckets:
            raise ConfigurationError(
                f"window must be at least 1 µs per bucket ({self.buckets} buckets), got {window!r}"
            )
        self.max_rejection = (
            None if max_rejection is None else ratio(max_rejection, "max_rejection")
        )
        self._on = exception_predicate(on, "on")
        self._on_result = None if on_result is None else result_predicate(on_result, "on_result")
        if store is not None and not callable(getattr(store, "apply", None)):
            raise ConfigurationError(f"store must be a resilience.stores.Store, got {store!r}")
        if on_store_error not in _MODES:
            raise ConfigurationError(
                f"on_store_error must be 'local', 'open' or 'closed', got {on_store_error!r}"
            )
        self.store = store
        self.on_store_error = on_store_error
        self._clock = resolve_clock(clock)
        self._random = resolve_random(random)
        cap = 1.0 if self.max_rejection is None else self.max_rejection
        self._cfg = core.config(window_us=window_us, buckets=self.buckets, k=self.k, cap=cap)
        self._key = f"thr:{self.name}"  # the window's key in a store
        self._lock = threading.Lock()
        self._st = core.fresh(self._cfg, 0)  # the in-process window (and the "local" fallback)
        self._done = 0  # in-process calls finished and not counted yet (see core.decide)
        self._accepted = 0  # how many of those were accepted
        self._shared = None if store is None else Shared(self, store)

    def describe(self) -> dict[str, Any]:
        """Plain data describing the configuration."""
        return {
            "kind": self.kind,
            "name": self.name,
            "k": self.k,
            "window": self.window,
            "buckets": self.buckets,
            "max_rejection": self.max_rejection,
            "store": None if self.store is None else type(self.store).__name__,
        }

    # -- inspection ---------------------------------------------------------------------------
    def counts(self) -> tuple[int, int]:
        """``(requests, accepts)`` in the window now (with a store: the fleet's, one round
        trip; raises :class:`~resilience.StoreError` when it fails)."""
        if self._shared is not None:
            return self._shared.counts()
        now_us = round(self._clock.monotonic() * 1_000_000)
        with self._lock:
            done, accepted, self._done, self._accepted = self._done, self._accepted, 0, 0
            return core.snapshot(self._st, self._cfg, now_us, done, accepted)

    def rejection_probability(self) -> float:
        """The probability with which the next call would be rejected (see :meth:`counts`)."""
        req, acc = self.counts()
        return max(0.0, min(self._cfg.cap, (req - self.k * acc) / (req + 1)))

    # -- decisions ----------------------------------------------------------------------------
    def _overloaded(self, exc: BaseException, chain: object) -> bool:
        """Whether ``exc`` ends a call as not accepted (an overload signal)."""
        return isinstance(exc, Exception) and self._on(exc) and not own_refusal(exc, chain)

    def _throttled(self, retry_us: int | None, em: Emitter) -> ThrottledError:
        retry_after = None if retry_us is None else retry_us / 1_000_000
        if em:
            em.emit(
                CallRejected(**em.origin(self.name), reason="throttled", retry_after=retry_after)
            )
        return em.refuse(
            ThrottledError(
                f"adaptive throttle {self.name!r}: rejected locally (backend overloaded)",
                policy=self.name,
                retry_after=retry_after,
            )
        )

    def _admit_local(self, em: Emitter) -> None:
        """Decide on the in-process window; raises :class:`ThrottledError`."""
        now_us = round(self._clock.monotonic() * 1_000_000)
        with self._lock:
            p = core.decide(self._st, self._cfg, now_us, self._done, self._accepted)
            self._done = self._accepted = 0
        if p > 0.0 and self._random.random() < p:
            self._reject(now_us, em)

    def _reject(self, now_us: int, em: Emitter) -> NoReturn:
        """Count a rejected request on the in-process window and raise its refusal."""
        with self._lock:
            core.reject(self._st, self._cfg, now_us)
        raise self._throttled(core.retry_us(self._cfg, now_us), em)

    def _finished_local(self, accepted: bool) -> None:
        """A call admitted by the in-process window finished (``accepted`` or not)."""
        with self._lock:
            self._done += 1
            if accepted:
                self._accepted += 1

    def _store_failed(self, exc: StoreError, em: Emitter) -> int:
        """The admission when the store failed (per ``on_store_error``); may raise."""
        mode = self.on_store_error
        STORE_LOG.record(self.name, mode, f"{exc}")
        if em:
            em.emit(
                StoreFailed(**em.origin(self.name), decision=mode, error_type=error_type(exc) or "")
            )
        if mode == "open":
            return UNGUARDED
        if mode == "closed":
            raise self._throttled(None, em) from exc
        self._admit_local(em)
        return LOCAL

    # -- the wrappers: written once, async; the sync twin is generated -----------------------
    # twin: async
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        if self._shared is not None:
            return self._shared.wrap_async(fn, em)
        lock, st, cfg, decide = self._lock, self._st, self._cfg, core.decide
        mono, draw = self._clock.monotonic, self._random.random
        overloaded, on_result, chain = self._overloaded, self._on_result, em.chain
        reject = self._reject

        async def throttle_wrapper(*args: Any, **kwargs: Any) -> Any:
            now_us = round(mono() * 1_000_000)
            with lock:
                p = decide(st, cfg, now_us, self._done, self._accepted)
                self._done = self._accepted = 0
            if p > 0.0 and draw() < p:
                reject(now_us, em)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                accepted = not overloaded(exc, chain)
                with lock:
                    self._done += 1
                    if accepted:
                        self._accepted += 1
                raise
            accepted = on_result is None or not on_result(result)
            with lock:
                self._done += 1
                if accepted:
                    self._accepted += 1
            return result

        return throttle_wrapper

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        if self._shared is not None:
            return self._shared.wrap_sync(fn, em)
        lock, st, cfg, decide = self._lock, self._st, self._cfg, core.decide
        mono, draw = self._clock.monotonic, self._random.random
        overloaded, on_result, chain = self._overloaded, self._on_result, em.chain
        reject = self._reject

        def throttle_wrapper(*args: Any, **kwargs: Any) -> Any:
            now_us = round(mono() * 1_000_000)
            with lock:
                p = decide(st, cfg, now_us, self._done, self._accepted)
                self._done = self._accepted = 0
            if p > 0.0 and draw() < p:
                reject(now_us, em)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                accepted = not overloaded(exc, chain)
                with lock:
                    self._done += 1
                    if accepted:
                        self._accepted += 1
                raise
            accepted = on_result is None or not on_result(result)
            with lock:
                self._done += 1
                if accepted:
                    self._accepted += 1
            return result

        return throttle_wrapper

    # twin: end
