"""The four chaos policies: :class:`Fault`, :class:`Latency`, :class:`Outcome` and
:class:`Behavior`."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

from .._clock import Clock, RandomLike
from .._deadline import cap_to_deadline, deadline
from .._policy import Emitter
from .._types import AsyncFn, Duration, SyncFn
from .._types import seconds as _seconds
from ..errors import ConfigurationError, TimeoutExceededError
from ..events import Listener
from ._base import ChaosPolicy, Switch, adopted

__all__ = ["Behavior", "ErrorSpec", "Fault", "Latency", "Outcome"]

#: ``Fault(error=...)``: an exception instance (raised as is), an exception class (instantiated
#: per call with a message) or a zero-argument factory returning the exception to raise.
ErrorSpec: TypeAlias = BaseException | type[BaseException] | Callable[[], BaseException]
_NO_VALUE: Any = object()


def _error_factory(error: object, name: str) -> Callable[[], BaseException]:
    if isinstance(error, BaseException):
        instance = error

        def same() -> BaseException:
            return instance.with_traceback(None)

        return same
    if isinstance(error, type):
        if not issubclass(error, BaseException):
            raise ConfigurationError(f"error must be an exception class, got {error!r}")
        cls = error
        message = f"chaos: fault injected by {name!r}"

        def fresh() -> BaseException:
            return cls(message)

        return fresh
    if callable(error):
        factory = error

        def checked() -> BaseException:
            exc = factory()
            if not isinstance(exc, BaseException):
                raise TypeError(f"the error factory of chaos policy {name!r} returned {exc!r}")
            return exc

        return checked
    raise ConfigurationError(
        f"error must be an exception, an exception class or a factory, got {error!r}"
    )


class Fault(ChaosPolicy):
    """Raise ``error`` instead of running the call, for ``rate`` of the calls.

    Args:
        rate: the share of calls that fail, in [0, 1].
        error: an exception instance (raised each time), an exception class (instantiated
            with a message per call) or a zero-argument factory returning the exception.

    ``enabled``, ``name``, ``random``, ``clock`` and ``listeners``: as for :class:`ChaosPolicy`.

    Example:
        >>> import random, resilience as rs
        >>> fault = rs.chaos.Fault(rate=1.0, error=ConnectionError)
        >>> try:
        ...     fault.call(lambda: "never runs")
        ... except ConnectionError as exc:
        ...     print(exc)
        chaos: fault injected by 'fault'
    """

    injection = "fault"

    def __init__(
        self,
        *,
        rate: float,
        error: ErrorSpec,
        enabled: Switch = True,
        name: str = "fault",
        random: RandomLike | None = None,
        clock: Clock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(
            rate=rate, enabled=enabled, name=name, random=random, clock=clock, listeners=listeners
        )
        self._error = _error_factory(error, self.name)

    def _raise(self, em: Emitter, args: tuple[Any, ...]) -> BaseException:
        self._injected(em)
        exc: BaseException = adopted(args, self._error())
        return exc

    # twin: async
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        if self.enabled is False:
            return fn
        switch, chance, rate = self._gate()
        fail = self._raise

        async def fault_wrapper(*args: Any, **kwargs: Any) -> Any:
            if (switch is None or switch()) and chance() < rate:
                raise fail(em, args)
            return await fn(*args, **kwargs)

        return fault_wrapper

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        if self.enabled is False:
            return fn
        switch, chance, rate = self._gate()
        fail = self._raise

        def fault_wrapper(*args: Any, **kwargs: Any) -> Any:
            if (switch is None or switch()) and chance() < rate:
                raise fail(em, args)
            return fn(*args, **kwargs)

        return fault_wrapper

    # twin: end


class Latency(ChaosPolicy):
    """Wait ``seconds`` before running the call, for ``rate`` of the calls.

    The wait uses the injected clock (``clock.sleep``; an async caller awaits
    ``clock.asleep``) and never outlasts the published deadline (:func:`resilience.deadline`):
    a latency longer than the time left ends at the deadline, and the call then does not run
    (there is no time left for it): :class:`~resilience.TimeoutExceededError` is raised, with
    an empty ``policy`` (no policy's own timeout expired, the caller's deadline did), as a
    deadline-aware transport does for a request it can no longer send.

    Args:
        rate: the share of calls delayed, in [0, 1].
        seconds: the delay (seconds or a ``timedelta``), or a zero-argument callable returning
            it per injection (e.g. ``lambda: rnd.uniform(0.5, 2.0)``).

    ``enabled``, ``name``, ``random``, ``clock`` and ``listeners``: as for :class:`ChaosPolicy`.

    Example:
        >>> import resilience as rs
        >>> clock = rs.testing.FakeClock()
        >>> slow = rs.chaos.Latency(rate=1.0, seconds=2.5, clock=clock)
        >>> slow.call(lambda: "late"), clock.monotonic()
        ('late', 2.5)
    """

    injection = "latency"

    def __init__(
        self,
        *,
        rate: float,
        seconds: Duration | Callable[[], float],
        enabled: Switch = True,
        name: str = "latency",
        random: RandomLike | None = None,
        clock: Clock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(
            rate=rate, enabled=enabled, name=name, random=random, clock=clock, listeners=listeners
        )
        self._seconds = 0.0
        self._seconds_of: Callable[[], float] | None = None
        if callable(seconds):
            self._seconds_of = seconds
        else:
            self._seconds = _seconds(seconds, "seconds")

    def describe(self) -> dict[str, Any]:
        """Plain data describing the configuration."""
        delay = self._seconds if self._seconds_of is None else "dynamic"
        return {**super().describe(), "seconds": delay}

    def _delay(self, em: Emitter) -> float:
        """This injection's wait: the configured delay, capped to the deadline."""
        delay = self._seconds if self._seconds_of is None else float(self._seconds_of())
        delay = cap_to_deadline(delay)
        self._injected(em, delay)
        return delay

    @staticmethod
    def _after() -> None:
        """After an injected wait: fail the call if the wait used up the deadline."""
        d = deadline()
        if d is not None and d.expired():
            raise TimeoutExceededError("the deadline expired during an injected latency")

    # twin: async
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        if self.enabled is False:
            return fn
        switch, chance, rate = self._gate()
        delay = self._delay
        after = self._after
        asleep = self._clock.asleep

        async def latency_wrapper(*args: Any, **kwargs: Any) -> Any:
            if (switch is None or switch()) and chance() < rate:
                await asleep(delay(em))
                after()
            return await fn(*args, **kwargs)

        return latency_wrapper

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        if self.enabled is False:
            return fn
        switch, chance, rate = self._gate()
        delay = self._delay
        after = self._after
        sleep = self._clock.sleep

        def latency_wrapper(*args: Any, **kwargs: Any) -> Any:
            if (switch is None or switch()) and chance() < rate:
                sleep(delay(em))
                after()
            return fn(*args, **kwargs)

        return latency_wrapper

    # twin: end


class Outcome(ChaosPolicy):
    """Return ``value`` instead of running the call, for ``rate`` of the calls.

    The value can be anything the caller expects back: an ``httpx.Response`` in an httpx
    transport's pipeline, a cached default, a degraded answer. Give ``factory=`` instead of
    ``value=`` for a fresh value per injection.

    Args:
        rate: the share of calls answered by the policy, in [0, 1].
        value: the value returned.
        factory: a zero-argument callable returning the value (instead of ``value``).

    ``enabled``, ``name``, ``random``, ``clock`` and ``listeners``: as for :class:`ChaosPolicy`.

    Example:
        >>> import resilience as rs
        >>> canned = rs.chaos.Outcome(rate=1.0, value={"status": "cached"})
        >>> canned.call(lambda: {"status": "live"})
        {'status': 'cached'}
    """

    injection = "outcome"

    def __init__(
        self,
        *,
        rate: float,
        value: Any = _NO_VALUE,
        factory: Callable[[], Any] | None = None,
        enabled: Switch = True,
        name: str = "outcome",
        random: RandomLike | None = None,
        clock: Clock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(
            rate=rate, enabled=enabled, name=name, random=random, clock=clock, listeners=listeners
        )
        if (value is _NO_VALUE) == (factory is None):
            raise ConfigurationError("give exactly one of value= and factory=")
        if factory is not None and not callable(factory):
            raise ConfigurationError(f"factory must be a zero-argument callable, got {factory!r}")
        if factory is None:
            constant = value

            def factory() -> Any:
                return constant

        self._factory: Callable[[], Any] = factory

    def _produce(self, em: Emitter, args: tuple[Any, ...]) -> Any:
        self._injected(em)
        return adopted(args, self._factory())

    # twin: async
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        if self.enabled is False:
            return fn
        switch, chance, rate = self._gate()
        produce = self._produce

        async def outcome_wrapper(*args: Any, **kwargs: Any) -> Any:
            if (switch is None or switch()) and chance() < rate:
                return produce(em, args)
            return await fn(*args, **kwargs)

        return outcome_wrapper

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        if self.enabled is False:
            return fn
        switch, chance, rate = self._gate()
        produce = self._produce

        def outcome_wrapper(*args: Any, **kwargs: Any) -> Any:
            if (switch is None or switch()) and chance() < rate:
                return produce(em, args)
            return fn(*args, **kwargs)

        return outcome_wrapper

    # twin: end


class Behavior(ChaosPolicy):
    """Run ``action`` before the call, for ``rate`` of the calls (the call then runs as usual).

    For side effects a test wants to see the system survive: drop a cache entry, close a pooled
    connection, burn CPU, fill a queue. An async caller awaits a coroutine-function action (a
    plain one is called); a sync caller needs a plain function (wrapping a sync function with a
    coroutine-function action is a :class:`~resilience.ConfigurationError`). An exception from
    the action propagates (the call does not run).

    Args:
        rate: the share of calls the action precedes, in [0, 1].
        action: a zero-argument callable (or coroutine function, for async callers).

    ``enabled``, ``name``, ``random``, ``clock`` and ``listeners``: as for :class:`ChaosPolicy`.

    Example:
        >>> import resilience as rs
        >>> cache = {"user:1": "Ada"}
        >>> evict = rs.chaos.Behavior(rate=1.0, action=cache.clear)
        >>> evict.call(lambda: cache.get("user:1", "(miss)"))
        '(miss)'
    """

    injection = "behavior"

    def __init__(
        self,
        *,
        rate: float,
        action: Callable[[], object] | Callable[[], Awaitable[object]],
        enabled: Switch = True,
        name: str = "behavior",
        random: RandomLike | None = None,
        clock: Clock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(
            rate=rate, enabled=enabled, name=name, random=random, clock=clock, listeners=listeners
        )
        if not callable(action):
            raise ConfigurationError(f"action must be a zero-argument callable, got {action!r}")
        self.action = action
        self._is_async = inspect.iscoroutinefunction(action)

    # The two sides run the action differently by nature (an async caller awaits a coroutine
    # function's result; a sync caller cannot), so these helpers are written once each.
    async def _behave_async(self, em: Emitter) -> None:
        self._injected(em)
        result = self.action()
        if self._is_async:
            await result  # type: ignore[misc]

    def _behave_sync(self, em: Emitter) -> None:
        self._injected(em)
        self.action()

    def _behaver_async(self) -> Callable[[Emitter], Awaitable[None]]:
        return self._behave_async

    def _behaver_sync(self) -> Callable[[Emitter], None]:
        if self._is_async:
            raise ConfigurationError(
                f"chaos policy {self.name!r}: a coroutine-function action needs an async caller"
            )
        return self._behave_sync

    # twin: async _behaver_async=_behaver_sync
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        if self.enabled is False:
            return fn
        switch, chance, rate = self._gate()
        behave = self._behaver_async()

        async def behavior_wrapper(*args: Any, **kwargs: Any) -> Any:
            if (switch is None or switch()) and chance() < rate:
                await behave(em)
            return await fn(*args, **kwargs)

        return behavior_wrapper

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        if self.enabled is False:
            return fn
        switch, chance, rate = self._gate()
        behave = self._behaver_sync()

        def behavior_wrapper(*args: Any, **kwargs: Any) -> Any:
            if (switch is None or switch()) and chance() < rate:
                behave(em)
            return fn(*args, **kwargs)

        return behavior_wrapper

    # twin: end
