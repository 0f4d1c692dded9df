"""Use an existing ``pybreaker.CircuitBreaker`` as a :mod:`resilience` policy.

For teams migrating from pybreaker: wrap the breaker you already have, put it in an
``rs.Pipeline`` next to new policies, and get its state changes as
:class:`~resilience.events.CircuitStateChanged` events (so the OpenTelemetry and logging
listeners see them), until you replace it with :class:`resilience.CircuitBreaker`.

Behaviour of the wrapper:

* a call refused by the open breaker raises :class:`resilience.CircuitOpenError` (chained from
  pybreaker's ``CircuitBreakerError``), with ``retry_after`` computed from pybreaker's
  ``opened_at`` and ``reset_timeout``, and emits ``CallRejected(reason="circuit_open")``;
* a call that ran and failed re-raises the *user's* exception, even on the call that trips the
  breaker (pybreaker would raise ``CircuitBreakerError`` there);
* calls go through ``breaker.calling()``, so pybreaker's lock is not held while your function
  runs (``breaker.call`` serialises every call), and async functions work without Tornado;
* pybreaker counts every exception that is not in its ``exclude`` list, including
  ``asyncio.CancelledError``: add it to ``exclude`` for async code.

Example:
    >>> import pybreaker, resilience as rs
    >>> from resilience.interop.pybreaker import PyBreaker
    >>> legacy = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60, name="billing")
    >>> seen = rs.testing.RecordingListener()
    >>> policy = rs.Pipeline(rs.Retry(on=KeyError, attempts=1), PyBreaker(legacy), listeners=[seen])
    >>> @policy
    ... def charge() -> None:
    ...     raise ConnectionError("refused")
    >>> for _ in range(3):
    ...     try:
    ...         charge()
    ...     except (ConnectionError, rs.CircuitOpenError) as exc:
    ...         print(type(exc).__name__)
    ConnectionError
    ConnectionError
    CircuitOpenError
    >>> [(e.from_state, e.to_state, e.reason) for e in seen.of(rs.events.CircuitStateChanged)]
    [('closed', 'open', 'consecutive_failures')]
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from .._clock import Clock, resolve_clock
from .._policy import Emitter, Policy, refusal
from .._types import AsyncFn, SyncFn
from ..circuit import CircuitState
from ..errors import CircuitOpenError, ConfigurationError
from ..events import CallRejected, CircuitStateChanged, Listener, TransitionReason, emit

__all__ = ["PyBreaker"]

_STATE = {"closed": "closed", "open": "open", "half-open": "half_open"}
_REASON: dict[tuple[str, str], TransitionReason] = {
    ("closed", "open"): "consecutive_failures",
    ("half_open", "open"): "probe_failed",
    ("open", "half_open"): "open_for_elapsed",
    ("half_open", "closed"): "probes_succeeded",
}


_MAX_EMITTERS = 64  # per policy: one per pipeline and operation it was composed into
_MAX_POLICIES = 64  # PyBreaker policies over one pybreaker breaker

# the PyBreaker policy and emitter of the call running through a breaker in this context
_CALLER: ContextVar[tuple[PyBreaker, Emitter] | None] = ContextVar(
    "resilience_pybreaker_caller", default=None
)


def _state_name(state: object) -> str:
    name = str(getattr(state, "name", state))
    return _STATE.get(name, name)


class _Fanout:
    """The one listener on a ``pybreaker.CircuitBreaker`` forwarding its state changes.

    One per breaker, whatever the number of :class:`PyBreaker` policies over it and of
    functions they decorate: each transition reaches every distinct listener exactly once.
    """

    def __init__(self) -> None:
        self._policies: list[weakref.ref[PyBreaker]] = []
        self._lock = threading.Lock()

    def add(self, policy: PyBreaker) -> None:
        with self._lock:
            self._policies = [r for r in self._policies if r() is not None]
            if len(self._policies) < _MAX_POLICIES:
                self._policies.append(weakref.ref(policy))

    def policies(self) -> list[PyBreaker]:
        return [p for p in (r() for r in self._policies) if p is not None]

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        frm = _state_name(old_state) if old_state is not None else "closed"
        to = _state_name(new_state)
        reason = _REASON.get((frm, to), "manual")
        policies = self.policies()
        seen: set[int] = set()

        def send(policy: PyBreaker, em: Emitter) -> None:
            fresh = []
            for listener in em.listeners:
                if id(listener) not in seen:
                    seen.add(id(listener))
                    fresh.append(listener)
            if fresh:
                emit(
                    fresh,
                    CircuitStateChanged(
                        **em.origin(policy.name), from_state=frm, to_state=to, reason=reason
                    ),
                )

        # the call that caused the transition names it; then every other listener of every
        # policy and pipeline over this breaker, once each
        caller = _CALLER.get()
        if caller is not None and caller[0] in policies:
            send(*caller)
        for policy in policies:
            send(policy, policy._em)
            for em in list(policy._emitters):
                send(policy, em)


_FANOUT_LOCK = threading.Lock()


def _fanout(breaker: Any) -> _Fanout:
    """The fan-out listener of ``breaker``, added on first use."""
    import pybreaker

    with _FANOUT_LOCK:
        for listener in breaker.listeners:
            existing = getattr(listener, "fanout", None)
            if isinstance(existing, _Fanout):
                return existing
        fanout = _Fanout()

        class _Bridge(pybreaker.CircuitBreakerListener):
            def __init__(self) -> None:
                self.fanout = fanout

            def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
                self.fanout.state_change(cb, old_state, new_state)

        breaker.add_listener(_Bridge())
        return fanout


class PyBreaker(Policy):
    """A policy running calls through an existing ``pybreaker.CircuitBreaker``.

    Args:
        breaker: the ``pybreaker.CircuitBreaker`` (kept as is; one listener is added to it to
            forward its state changes as events: each transition is one event per listener,
            however many functions or ``PyBreaker`` policies share the breaker).
        name: policy name in events (default: the breaker's name, else ``"pybreaker"``).
        clock: time source for ``retry_after`` (its ``time()``; pybreaker uses wall time).
        listeners: event listeners.

    Example:
        >>> import pybreaker
        >>> from resilience.interop.pybreaker import PyBreaker
        >>> policy = PyBreaker(pybreaker.CircuitBreaker(fail_max=5))
        >>> policy.call(lambda: "ok"), policy.state
        ('ok', <CircuitState.CLOSED: 'closed'>)
    """

    kind = "circuit_breaker"

    def __init__(
        self,
        breaker: Any,
        /,
        *,
        name: str | None = None,
        clock: Clock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        import pybreaker

        if not isinstance(breaker, pybreaker.CircuitBreaker):
            raise ConfigurationError(f"breaker must be a pybreaker.CircuitBreaker, got {breaker!r}")
        super().__init__(name=name or breaker.name or "pybreaker", listeners=listeners)
        self.breaker = breaker
        self._error: type[Exception] = pybreaker.CircuitBreakerError
        self._clock = resolve_clock(clock)
        self._emitters: list[Emitter] = []
        self._em = Emitter(self.listeners, None, "")  # events outside any call
        _fanout(breaker).add(self)

    def describe(self) -> dict[str, Any]:
        """Plain data describing the configuration."""
        return {
            "kind": self.kind,
            "name": self.name,
            "fail_max": self.breaker.fail_max,
            "reset_timeout": self.breaker.reset_timeout,
        }

    @property
    def state(self) -> CircuitState:
        """The pybreaker state as a :class:`resilience.CircuitState`."""
        return CircuitState(_state_name(self.breaker.current_state))

    def _remember(self, em: Emitter) -> None:
        if (
            em
            and em.listeners != self.listeners
            and em not in self._emitters
            and len(self._emitters) < _MAX_EMITTERS
        ):
            self._emitters.append(em)

    def _rejected(self, exc: BaseException, em: Emitter) -> CircuitOpenError:
        retry_after = None
        opened_at = getattr(getattr(self.breaker, "_state_storage", None), "opened_at", None)
        if isinstance(opened_at, datetime):
            left = opened_at.timestamp() + float(self.breaker.reset_timeout) - self._clock.time()
            retry_after = max(0.0, left)
        if em:
            em.emit(
                CallRejected(**em.origin(self.name), reason="circuit_open", retry_after=retry_after)
            )
        # our own refusal: the policies around ignore it (breakers, budgets), limiters refund
        return refusal(CircuitOpenError(str(exc), policy=self.name, retry_after=retry_after), em)

    # twin: async
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        """``fn`` running through the pybreaker breaker (the policy hook)."""
        self._remember(em)
        breaker = self.breaker
        error = self._error
        caller = _CALLER

        async def pybreaker_wrapper(*args: Any, **kwargs: Any) -> Any:
            raised: BaseException | None = None
            token = caller.set((self, em))
            try:
                with breaker.calling():
                    try:
                        return await fn(*args, **kwargs)
                    except BaseException as exc:
                        raised = exc
                        raise
            except error as exc:
                if raised is not None and exc is not raised:
                    raise raised from None
                raise self._rejected(exc, em) from exc
            finally:
                caller.reset(token)

        return pybreaker_wrapper

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        """``fn`` running through the pybreaker breaker (the policy hook)."""
        self._remember(em)
        breaker = self.breaker
        error = self._error
        caller = _CALLER

        def pybreaker_wrapper(*args: Any, **kwargs: Any) -> Any:
            raised: BaseException | None = None
            token = caller.set((self, em))
            try:
                with breaker.calling():
                    try:
                        return fn(*args, **kwargs)
                    except BaseException as exc:
                        raised = exc
                        raise
            except error as exc:
                if raised is not None and exc is not raised:
                    raise raised from None
                raise self._rejected(exc, em) from exc
            finally:
                caller.reset(token)

        return pybreaker_wrapper

    # twin: end
