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
    [('closed', 'open', 'failure_count')]
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from .._clock import Clock, resolve_clock
from .._policy import Emitter, Policy
from ..circuit import CircuitState
from ..errors import CircuitOpenError, ConfigurationError
from ..events import CallRejected, CircuitStateChanged, Listener, emit

__all__ = ["PyBreaker"]

_STATE = {"closed": "closed", "open": "open", "half-open": "half_open"}
_REASON = {
    ("closed", "open"): "failure_count",
    ("half_open", "open"): "probe_failed",
    ("open", "half_open"): "open_for_elapsed",
    ("half_open", "closed"): "probes_succeeded",
}


def _state_name(state: object) -> str:
    name = str(getattr(state, "name", state))
    return _STATE.get(name, name)


class PyBreaker(Policy):
    """A policy running calls through an existing ``pybreaker.CircuitBreaker``.

    Args:
        breaker: the ``pybreaker.CircuitBreaker`` (kept as is; a listener is added to it to
            forward its state changes as events).
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
        policy = self

        class _Bridge(pybreaker.CircuitBreakerListener):
            def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
                policy._state_changed(old_state, new_state)

        breaker.add_listener(_Bridge())

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

    def _state_changed(self, old_state: Any, new_state: Any) -> None:
        frm = _state_name(old_state) if old_state is not None else "closed"
        to = _state_name(new_state)
        reason = _REASON.get((frm, to), "manual")
        # events go to this policy's listeners and to those of every pipeline it was composed
        # into (pybreaker reports transitions outside any one call)
        targets = [Emitter(self.listeners, None, "")] if self.listeners else []
        targets += [em for em in self._emitters if em.listeners != self.listeners]
        for em in targets:
            emit(
                em.listeners,
                CircuitStateChanged(
                    policy=self.name,
                    pipeline=em.pipeline,
                    operation=em.operation,
                    from_state=frm,
                    to_state=to,
                    reason=reason,
                ),
            )

    def _remember(self, em: Emitter) -> None:
        if (
            em
            and em.listeners != self.listeners
            and em not in self._emitters
            and len(self._emitters) < 64  # bounded: one per pipeline and operation
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
                CallRejected(
                    policy=self.name,
                    pipeline=em.pipeline,
                    operation=em.operation,
                    reason="circuit_open",
                    retry_after=retry_after,
                )
            )
        return CircuitOpenError(str(exc), policy=self.name, retry_after=retry_after)

    def _wrap_sync(self, fn: Callable[..., Any], em: Emitter) -> Callable[..., Any]:
        self._remember(em)
        breaker = self.breaker
        error = self._error

        def pybreaker_wrapper(*args: Any, **kwargs: Any) -> Any:
            raised: BaseException | None = None
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

        return pybreaker_wrapper

    def _wrap_async(
        self, fn: Callable[..., Awaitable[Any]], em: Emitter
    ) -> Callable[..., Awaitable[Any]]:
        self._remember(em)
        breaker = self.breaker
        error = self._error

        async def pybreaker_wrapper(*args: Any, **kwargs: Any) -> Any:
            raised: BaseException | None = None
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

        return pybreaker_wrapper
