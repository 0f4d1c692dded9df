"""What every chaos policy shares: the injection rate, the switch, the random source, the event."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeAlias, cast

from .._clock import Clock, RandomLike, resolve_clock, resolve_random
from .._policy import Emitter, Policy
from .._types import P, T, check_listeners
from ..errors import ConfigurationError
from ..events import ChaosInjected, ChaosKind, Listener

__all__ = ["INJECTED", "ChaosPolicy", "Switch", "adopted"]

#: A method an adapter's per-call state may have (the first positional argument of the guarded
#: callable: the httpx transports and the gRPC client interceptors pass theirs): it receives
#: what a :class:`~resilience.chaos.Fault` or :class:`~resilience.chaos.Outcome` injects
#: instead of the call (the exception, the value) and returns what the policy raises or
#: returns instead, so the policies around see it as they see a real attempt's outcome (an
#: error tied to the request being sent, a value shaped like the attempts' own results).
INJECTED = "__resilience_injected__"

#: ``enabled=``: a constant, or a zero-argument callable asked on every call.
Switch: TypeAlias = bool | Callable[[], object]


def _rate(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"rate must be a number in [0, 1], got {value!r}")
    v = float(value)
    if math.isnan(v) or not 0.0 <= v <= 1.0:
        raise ConfigurationError(f"rate must be in [0, 1], got {value!r}")
    return v


def _switch(value: object) -> Switch:
    if isinstance(value, bool):
        return value
    if callable(value):
        return value
    raise ConfigurationError(f"enabled must be a bool or a zero-argument callable, got {value!r}")


class ChaosPolicy(Policy):
    """Base of the chaos policies: inject something into a ``rate`` share of the calls.

    A call is injected when the switch is on (``enabled`` is ``True``, or a callable that
    returns a true value for this call) and ``random.random() < rate``; the other calls run
    untouched. With ``enabled=False`` the policy is not there at all: wrapping returns the
    function itself, so a disabled policy costs nothing per call. A callable switch costs one
    call per call, which is how an operator turns chaos on and off at run time (a feature flag,
    an environment variable read once a second, an admin endpoint).

    Every injection emits a :class:`~resilience.events.ChaosInjected` event.

    Args:
        rate: the share of calls injected, in [0, 1] (``1``: every call).
        enabled: ``True``/``False`` or a zero-argument callable asked per call.
        name: the policy's name (events, metrics).
        random: the random source (``random.Random``-like; seed one for repeatable runs).
        clock: time source (waits of :class:`Latency`).
        listeners: event listeners.
    """

    kind: ClassVar[str] = "chaos"
    #: What the policy injects (the ``injection`` of its events).
    injection: ClassVar[ChaosKind]

    def __init__(
        self,
        *,
        rate: float,
        enabled: Switch,
        name: str,
        random: RandomLike | None,
        clock: Clock | None,
        listeners: Sequence[Listener],
    ) -> None:
        super().__init__(name=name, listeners=listeners)
        self.rate = _rate(rate)
        self.enabled: Switch = _switch(enabled)
        self._random = resolve_random(random)
        self._clock = resolve_clock(clock)

    def describe(self) -> dict[str, Any]:
        """Plain data describing the configuration."""
        enabled = self.enabled if isinstance(self.enabled, bool) else "dynamic"
        return {
            "kind": self.kind,
            "name": self.name,
            "injection": self.injection,
            "rate": self.rate,
            "enabled": enabled,
        }

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorate a sync or async function; a disabled policy (``enabled=False``) returns
        ``fn`` itself (not a pass-through), so it costs nothing per call.

        Example:
            >>> import resilience as rs
            >>> def fetch() -> str:
            ...     return "data"
            >>> rs.chaos.Fault(rate=1.0, error=OSError, enabled=False)(fetch) is fetch
            True
        """
        if self.enabled is False and self._plain(fn):
            return fn
        return super().__call__(fn)

    def wrap(
        self,
        fn: Callable[P, T],
        /,
        *,
        operation: str | None = None,
        listeners: Sequence[Listener] = (),
    ) -> Callable[P, T]:
        """``fn`` running under this policy, for adapters (see :meth:`resilience.Policy.wrap`);
        ``fn`` itself when the policy is disabled (``enabled=False``)."""
        if self.enabled is False and self._plain(fn):
            if operation is not None and (
                not isinstance(cast(object, operation), str) or not operation
            ):
                raise ConfigurationError(f"operation must be a non-empty str, got {operation!r}")
            check_listeners(listeners)
            return fn
        return super().wrap(fn, operation=operation, listeners=listeners)

    @staticmethod
    def _plain(fn: object) -> bool:
        """Whether ``fn`` is a callable the base class would decorate (not a generator)."""
        return callable(fn) and not (
            inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        )

    def _gate(self) -> tuple[Callable[[], object] | None, Callable[[], float], float]:
        """The per-call decision, split for a wrapper: the switch to ask (``None``: always
        on), the random draw and the rate."""
        enabled = self.enabled  # never False here: a disabled policy builds no wrapper
        switch = None if isinstance(enabled, bool) else enabled
        return switch, self._random.random, self.rate

    def _injected(self, em: Emitter, delay: float | None = None) -> None:
        if em:
            em.emit(ChaosInjected(**em.origin(self.name), injection=self.injection, delay=delay))


def adopted(args: tuple[Any, ...], outcome: Any) -> Any:
    """``outcome`` as the adapter's per-call state (``args[0]``) makes it (see :data:`INJECTED`),
    or as it is."""
    hook = getattr(args[0], INJECTED, None) if args else None
    return outcome if hook is None else hook(outcome)
