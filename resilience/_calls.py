"""Per-call telemetry built into a composition: one :class:`~resilience.events.CallCompleted`
per protected call, and optional spans around each attempt of the protected function.

The hook is decided once, when a function is decorated (or wrapped, or run by ``.call``), by
:func:`calls_of`: it returns ``None`` unless a listener of the composition asks for call
events (a true ``call_events`` attribute) or attempt spans (a true ``attempt_spans``
attribute, with ``start_attempt`` / ``end_attempt`` methods), so an unobserved composition is
built exactly as before and its calls pay nothing.

Stacked decorators form one composition: the outer decorator composes over the inner one's
un-timed callable (kept on the decorated function) and times the whole call once, for the
listeners of both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ._clock import SYSTEM_CLOCK
from ._types import AsyncFn, SyncFn
from .errors import RejectedError
from .events import CallCompleted, CallOutcome, Listener, Origin, emit, error_type

if TYPE_CHECKING:
    from ._policy import Emitter, Policy

__all__ = ["Calls", "calls_of"]

_log = logging.getLogger("resilience")

#: The attribute of a decorated function holding its un-timed composition and listeners.
_ATTR = "__resilience_calls__"

#: The attempt counter of the protected call running in this context (set by the timed
#: wrapper when attempt spans are on; the attempt wrapper increments it).
_ATTEMPT: ContextVar[list[int] | None] = ContextVar("resilience_attempt", default=None)


def _monotonic_of(policy: object) -> Callable[[], float]:
    """The clock a composition's durations are read on: its outermost policy's (or, for a
    pipeline, its first policy's that has one); else the process clock, which the test mode
    of :mod:`resilience.testing` points at its fake clock."""
    clock = getattr(policy, "_clock", None)
    if clock is None:
        for inner in getattr(policy, "policies", ()):
            clock = getattr(inner, "_clock", None)
            if clock is not None:
                break
    return (clock or SYSTEM_CLOCK).monotonic


def _gather(policy: object, out: list[Listener]) -> None:
    for listener in getattr(policy, "listeners", ()):
        if not any(listener is seen for seen in out):
            out.append(listener)
    for inner in getattr(policy, "policies", ()):  # a pipeline: its policies' listeners too
        _gather(inner, out)


def _asks(policy: object) -> bool:
    """Whether a listener of ``policy`` (or of a policy inside it) asks for call events or
    attempt spans."""
    for listener in getattr(policy, "listeners", ()):
        if getattr(listener, "call_events", False) or getattr(listener, "attempt_spans", False):
            return True
    inner = getattr(policy, "policies", None)
    if inner:
        for p in inner:
            if _asks(p):
                return True
    return False


def _outcome(exc: BaseException | None, chain: object) -> tuple[CallOutcome, str | None]:
    if exc is None:
        return "success", None
    if isinstance(exc, RejectedError) and chain is not None and exc._chain is chain:
        return "rejected", error_type(exc)
    return "error", error_type(exc)


def _completed(
    listeners: Sequence[Listener],
    origin: Origin,
    duration: float,
    exc: BaseException | None,
    chain: object,
) -> None:
    outcome, etype = _outcome(exc, chain)
    emit(listeners, CallCompleted(**origin, duration=duration, outcome=outcome, error_type=etype))


def _start(listeners: Sequence[Any], origin: Origin, attempt: int) -> list[Any]:
    tokens: list[Any] = []
    for listener in listeners:
        try:
            tokens.append(listener.start_attempt(origin, attempt))
        except Exception:
            _log.exception("resilience: start_attempt of %r raised; ignoring it", listener)
            tokens.append(None)
    return tokens


def _end(listeners: Sequence[Any], tokens: list[Any], exc: BaseException | None) -> None:
    for listener, token in zip(reversed(listeners), reversed(tokens), strict=True):
        if token is None:
            continue
        try:
            listener.end_attempt(token, exc)
        except Exception:
            _log.exception("resilience: end_attempt of %r raised; ignoring it", listener)


def _next_attempt() -> int:
    state = _ATTEMPT.get()
    if state is None:  # no timed wrapper in this context (e.g. a worker thread)
        return 1
    state[0] += 1
    return state[0]


class Calls:
    """The per-call hook of one composition (built by :func:`calls_of`; internal)."""

    __slots__ = ("attempts", "chain", "counted", "listeners", "monotonic", "origin", "stacked")

    def __init__(
        self,
        listeners: tuple[Listener, ...],
        attempts: tuple[Any, ...],
        origin: Origin,
        chain: object,
        stacked: tuple[Any, ...] | None,
        monotonic: Callable[[], float],
    ) -> None:
        self.monotonic = monotonic
        self.listeners = listeners
        self.attempts = attempts
        self.origin = origin
        self.chain = chain
        self.stacked = stacked
        # whether an attempt wrapper runs inside (ours, or the inner decorator's)
        self.counted = bool(attempts) if stacked is None else bool(stacked[2])

    def mark(self, decorated: object, inner: object) -> None:
        """Keep ``inner`` (the un-timed composition) and the listeners on ``decorated``."""
        setattr(decorated, _ATTR, (inner, self.listeners, self.counted))

    # twin: async inner_async=inner_sync, timed_async=timed_sync, attempts_async=attempts_sync
    def inner_async(self, fn: AsyncFn) -> AsyncFn:
        """What the composition wraps instead of ``fn``: a stacked decorator's un-timed
        composition, or ``fn`` under the attempt spans."""
        if self.stacked is not None:
            inner: AsyncFn = self.stacked[0]
            return inner
        if self.attempts:
            return self.attempts_async(fn)
        return fn

    def attempts_async(self, fn: AsyncFn) -> AsyncFn:
        """``fn`` with a span around each attempt (each time the policies run it)."""
        listeners, origin = self.attempts, self.origin

        async def resilience_attempt(*args: Any, **kwargs: Any) -> Any:
            tokens = _start(listeners, origin, _next_attempt())
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                _end(listeners, tokens, exc)
                raise
            _end(listeners, tokens, None)
            return result

        return resilience_attempt

    def timed_async(self, fn: AsyncFn) -> AsyncFn:
        """``fn`` (the whole composition) reporting one :class:`CallCompleted` per call."""
        listeners, origin, chain, counted = self.listeners, self.origin, self.chain, self.counted
        clock = self.monotonic

        async def resilience_call(*args: Any, **kwargs: Any) -> Any:
            token = _ATTEMPT.set([0]) if counted else None
            start = clock()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                if listeners:
                    _completed(listeners, origin, clock() - start, exc, chain)
                raise
            finally:
                if token is not None:
                    _ATTEMPT.reset(token)
            if listeners:
                _completed(listeners, origin, clock() - start, None, chain)
            return result

        return resilience_call

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def inner_sync(self, fn: SyncFn) -> SyncFn:
        """What the composition wraps instead of ``fn``: a stacked decorator's un-timed
        composition, or ``fn`` under the attempt spans."""
        if self.stacked is not None:
            inner: SyncFn = self.stacked[0]
            return inner
        if self.attempts:
            return self.attempts_sync(fn)
        return fn

    def attempts_sync(self, fn: SyncFn) -> SyncFn:
        """``fn`` with a span around each attempt (each time the policies run it)."""
        listeners, origin = self.attempts, self.origin

        def resilience_attempt(*args: Any, **kwargs: Any) -> Any:
            tokens = _start(listeners, origin, _next_attempt())
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                _end(listeners, tokens, exc)
                raise
            _end(listeners, tokens, None)
            return result

        return resilience_attempt

    def timed_sync(self, fn: SyncFn) -> SyncFn:
        """``fn`` (the whole composition) reporting one :class:`CallCompleted` per call."""
        listeners, origin, chain, counted = self.listeners, self.origin, self.chain, self.counted
        clock = self.monotonic

        def resilience_call(*args: Any, **kwargs: Any) -> Any:
            token = _ATTEMPT.set([0]) if counted else None
            start = clock()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                if listeners:
                    _completed(listeners, origin, clock() - start, exc, chain)
                raise
            finally:
                if token is not None:
                    _ATTEMPT.reset(token)
            if listeners:
                _completed(listeners, origin, clock() - start, None, chain)
            return result

        return resilience_call

    # twin: end


def calls_of(policy: Policy, fn: object, em: Emitter) -> Calls | None:
    """The per-call hook of ``policy`` composed around ``fn`` (the outermost composition,
    events going to ``em``), or ``None`` when no listener of the composition asks for call
    events or attempt spans (and ``fn`` is not a decorated function that has one)."""
    if not _asks(policy) and not hasattr(fn, _ATTR) and not _asks(em):
        return None  # the common unobserved case, decided without allocating anything
    found: list[Listener] = []
    _gather(policy, found)
    _gather(em, found)  # listeners given to the composition itself (an adapter's listeners=)
    listeners = tuple(x for x in found if getattr(x, "call_events", False))
    attempts = tuple(x for x in found if getattr(x, "attempt_spans", False))
    stacked: tuple[Any, ...] | None = getattr(fn, _ATTR, None)
    if stacked is not None:
        listeners += tuple(x for x in stacked[1] if not any(x is y for y in listeners))
    elif not listeners and not attempts:
        return None
    return Calls(
        listeners, attempts, em.origin(policy.name), em.chain, stacked, _monotonic_of(policy)
    )
