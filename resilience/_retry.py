"""Retry with backoff, result predicates, server-directed delays, deadlines and budgets."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from ._budget import Budget
from ._clock import Clock, RandomLike, resolve_clock, resolve_random
from ._deadline import _DEADLINE
from ._policy import Emitter, Policy, own_refusal, spent
from ._types import (
    AsyncFn,
    Duration,
    ExceptionSpec,
    SyncFn,
    exception_predicate,
    optional_seconds,
    positive_int,
    result_predicate,
)
from .backoff import Backoff, exponential
from .errors import ConfigurationError, RejectedError
from .events import Listener, RetriesExhausted, RetryScheduled, StopReason, error_type

__all__ = ["Retry", "attach_retry_after", "retry_after_attribute"]

_HINT = "_resilience_retry_after"  # where adapters attach the server's delay to an outcome


def _awaitable(decide: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def adecide() -> bool:
        return decide()

    return adecide


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def attach_retry_after(outcome: object, seconds: float) -> None:
    """Attach the server's delay hint to an outcome (a response or an exception) for any Retry.

    Adapters call it with what the server said about the outcome just seen (``Retry-After``,
    an exhausted ``RateLimit`` quota, ``grpc-retry-pushback-ms``): every :class:`Retry` using
    the default ``retry_after=`` hook then waits exactly that long before retrying it; a
    negative value means "do not retry". Objects that take no attributes are left alone.

    Example:
        >>> class Response: ...
        >>> response = Response()
        >>> attach_retry_after(response, 1.5)
        >>> retry_after_attribute(response)
        1.5
    """
    try:
        setattr(outcome, _HINT, float(seconds))
    except (AttributeError, TypeError):
        pass


def retry_after_attribute(outcome: object) -> float | None:
    """The default server-directed delay hook.

    The hint an adapter attached with :func:`attach_retry_after` (to a result or an exception),
    else an exception's ``retry_after`` attribute (:class:`resilience.RejectedError` and many
    HTTP client errors carry one). A negative value means "do not retry" (gRPC pushback
    semantics).

    Example:
        >>> import resilience as rs
        >>> retry_after_attribute(rs.RateLimitedError(retry_after=0.5))
        0.5
    """
    hint = _number(getattr(outcome, _HINT, None))
    if hint is not None:
        return hint
    if isinstance(outcome, BaseException):
        return _number(getattr(outcome, "retry_after", None))
    return None


class Retry(Policy):
    """Retry a failing call with backoff.

    A call is retried when it raises an exception matching ``on`` or returns a result matching
    ``on_result``, until ``attempts`` attempts ran, ``max_elapsed`` seconds passed, the enclosing
    deadline (from :class:`resilience.Timeout` or an adapter) would be crossed by the next sleep,
    or the ``budget`` refuses. Only :class:`Exception` subclasses are ever retried:
    ``CancelledError``, ``KeyboardInterrupt`` and ``SystemExit`` propagate at once.

    When retrying stops on an exception, that exception (the user's last one, with its own
    traceback) is re-raised with a note; when it stops on a result, the result is returned.

    The delay before a retry is the server-directed one when ``retry_after(outcome)`` returns a
    number (a negative number means "do not retry"), else the ``backoff``'s; it never crosses
    the deadline or ``max_elapsed``: a retry that would is not attempted.

    An attempt refused by a policy inside the retry (an inner rate limiter, bulkhead or breaker
    raising :class:`resilience.RejectedError`) never reached the dependency: it is retried
    only if ``on`` matches it, but the ``budget`` does not learn from it (no failure is
    recorded, and a :class:`resilience.RetryBudget` gets back the retry it took, or the call's
    deposit when no attempt of the call reached the dependency). A refusal that ends a call
    after an earlier attempt did reach the dependency is that call's outcome: outer policies
    treat it as an ordinary exception (outer rate limiters keep their permits).

    Args:
        on: exception type(s) or predicate deciding which exceptions are retried.
        attempts: total attempts including the first (>= 1).
        backoff: a :mod:`resilience.backoff` schedule; default exponential with full jitter
            (0.1 s initial, 10 s cap).
        max_elapsed: give up instead of sleeping past this many seconds since the first attempt.
        budget: a shared :class:`resilience.RetryBudget` / :class:`resilience.RetryThrottle`.
        on_result: predicate over results that should be retried (e.g. an HTTP 503 response).
        retry_after: hook returning a server-directed delay for an exception or result
            (``Retry-After``, ``grpc-retry-pushback-ms``); the default,
            :func:`retry_after_attribute`, reads the hint the adapters (httpx transports, gRPC
            client interceptors) attach to every outcome, else ``exc.retry_after``.
        name: policy name in events and metrics.
        clock: time source (sleeps happen on it).
        random: jitter source, a ``random.Random``.
        listeners: event listeners.

    Example:
        >>> import resilience as rs
        >>> attempts = []
        >>> @rs.Retry(on=ConnectionError, attempts=3, backoff=rs.backoff.constant(0))
        ... def connect() -> str:
        ...     attempts.append(1)
        ...     if len(attempts) < 3:
        ...         raise ConnectionError("refused")
        ...     return "connected"
        >>> connect(), len(attempts)
        ('connected', 3)
    """

    kind = "retry"

    def __init__(
        self,
        *,
        on: ExceptionSpec,
        attempts: int = 3,
        backoff: Backoff | None = None,
        max_elapsed: Duration | None = None,
        budget: Budget | None = None,
        on_result: Callable[[Any], bool] | None = None,
        retry_after: Callable[[object], float | None] | None = retry_after_attribute,
        name: str = "retry",
        clock: Clock | None = None,
        random: RandomLike | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(name=name, listeners=listeners)
        self._on_spec = on
        self._on = exception_predicate(on, "on")
        self.attempts = positive_int(attempts, "attempts")
        if backoff is None:
            backoff = exponential(initial=0.1, maximum=10.0, jitter="full")
        elif not callable(getattr(backoff, "delay", None)):
            raise ConfigurationError(
                f"backoff must be a resilience.backoff schedule, got {backoff!r}"
            )
        self.backoff = backoff
        self.max_elapsed = optional_seconds(max_elapsed, "max_elapsed")
        if budget is not None and not all(
            callable(getattr(budget, m, None)) for m in ("deposit", "record", "try_withdraw")
        ):
            raise ConfigurationError(
                f"budget must be a RetryBudget or RetryThrottle, got {budget!r}"
            )
        self.budget = budget
        self._refund: Callable[..., None] | None = getattr(budget, "refund", None)
        # the budget's decision: awaited by async retries when it has one (a shared budget's
        # round trip), else its try_withdraw
        self._withdraw: Callable[[], bool] | None = None
        self._awithdraw: Callable[[], Awaitable[bool]] | None = None
        if budget is not None:
            self._withdraw = budget.try_withdraw
            self._awithdraw = getattr(budget, "atry_withdraw", None) or _awaitable(
                budget.try_withdraw
            )
        self._on_result = None if on_result is None else result_predicate(on_result, "on_result")
        if retry_after is not None and not callable(retry_after):
            raise ConfigurationError(f"retry_after must be a callable or None, got {retry_after!r}")
        self._retry_after = retry_after
        self._clock = resolve_clock(clock)
        self._random = resolve_random(random)

    def describe(self) -> dict[str, Any]:
        """Plain data describing the configuration."""
        return {
            "kind": self.kind,
            "name": self.name,
            "attempts": self.attempts,
            "backoff": repr(self.backoff),
            "max_elapsed": self.max_elapsed,
            "budget": repr(self.budget) if self.budget is not None else None,
        }

    # -- the decision, shared by both wrappers ------------------------------------------------
    def _plan(
        self,
        exc: BaseException | None,
        result: object,
        attempt: int,
        start: float,
        previous: float | None,
    ) -> tuple[StopReason | None, float, bool] | None:
        """``(why stop or None, delay, server-directed)`` before the budget is asked, or
        ``None`` when the outcome is not retryable."""
        if exc is not None and not self._on(exc):
            return None  # not retryable: not an exhaustion, no note
        stop: StopReason | None = None
        delay = 0.0
        server = False
        hint = None
        if attempt >= self.attempts:
            stop = "attempts"
        else:
            hook = self._retry_after
            if hook is not None:
                hint = hook(exc if exc is not None else result)
            if hint is not None:
                if hint < 0:
                    stop = "pushback"
                else:
                    delay, server = hint, True
            else:
                delay = self.backoff.delay(attempt, previous, self._random)
        if stop is None and (self.max_elapsed is not None or _DEADLINE.get() is not None):
            now = self._clock.monotonic()
            if self.max_elapsed is not None and now + delay - start > self.max_elapsed:
                stop = "max_elapsed"
            else:
                dl = _DEADLINE.get()
                if dl is not None and dl.remaining() <= delay:
                    stop = "deadline"
        return stop, delay, server

    def _conclude(
        self,
        stop: StopReason | None,
        delay: float,
        server: bool,
        exc: BaseException | None,
        attempt: int,
        em: Emitter,
    ) -> float | None:
        """The delay before the next attempt (and its event), or ``None`` once stopped."""
        if stop is not None:
            if exc is not None and self.attempts > 1:
                exc.add_note(
                    f"resilience: retry policy {self.name!r} gave up after {attempt} "
                    f"attempt(s) ({stop})"
                )
            if em:
                em.emit(
                    RetriesExhausted(
                        policy=self.name,
                        pipeline=em.pipeline,
                        operation=em.operation,
                        attempts=attempt,
                        reason=stop,
                        error_type=error_type(exc),
                    )
                )
            return None
        if em:
            em.emit(
                RetryScheduled(
                    policy=self.name,
                    pipeline=em.pipeline,
                    operation=em.operation,
                    attempt=attempt,
                    delay=delay,
                    reason="exception" if exc else "result",
                    error_type=error_type(exc),
                    server_directed=server,
                )
            )
        return delay

    # twin: async _anext_delay=_next_delay, _awithdraw=_withdraw
    async def _anext_delay(
        self,
        exc: BaseException | None,
        result: object,
        attempt: int,
        start: float,
        previous: float | None,
        em: Emitter,
    ) -> float | None:
        """Seconds to sleep before the next attempt, or ``None`` to stop with this outcome."""
        plan = self._plan(exc, result, attempt, start, previous)
        if plan is None:
            return None
        stop, delay, server = plan
        if stop is None and self._awithdraw is not None and not await self._awithdraw():
            stop = "budget"
        return self._conclude(stop, delay, server, exc, attempt, em)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def _next_delay(
        self,
        exc: BaseException | None,
        result: object,
        attempt: int,
        start: float,
        previous: float | None,
        em: Emitter,
    ) -> float | None:
        """Seconds to sleep before the next attempt, or ``None`` to stop with this outcome."""
        plan = self._plan(exc, result, attempt, start, previous)
        if plan is None:
            return None
        stop, delay, server = plan
        if stop is None and self._withdraw is not None and not self._withdraw():
            stop = "budget"
        return self._conclude(stop, delay, server, exc, attempt, em)

    # twin: end

    # -- the wrappers: written once, async; the sync twin is generated ---------------------
    # twin: async _anext_delay=_next_delay
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        on_result = self._on_result
        budget = self.budget
        timed = self.max_elapsed is not None
        clock = self._clock
        slow = self._async_slow
        chain = em.chain

        async def retry_wrapper(*args: Any, **kwargs: Any) -> Any:
            start = clock.monotonic() if timed else 0.0
            if budget is not None:
                budget.deposit()
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                if budget is not None and not own_refusal(exc, chain):
                    budget.record(False)
                first: BaseException | None = exc
                result = None
            else:
                if on_result is None or not on_result(result):
                    if budget is not None:
                        budget.record(True)
                    return result
                first = None
            return await slow(fn, args, kwargs, first, result, start, em)

        return retry_wrapper

    async def _async_slow(
        self,
        fn: AsyncFn,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: BaseException | None,
        result: object,
        start: float,
        em: Emitter,
    ) -> Any:
        on_result = self._on_result
        budget = self.budget
        refund = self._refund
        chain = em.chain
        # own_refusal() of the latest attempt, inlined in this loop; ran: an attempt reached
        # the dependency
        refused = isinstance(exc, RejectedError) and exc._chain is chain and chain is not None
        ran = not refused
        asleep = self._clock.asleep
        attempt = 1
        delay: float | None = None
        while True:
            delay = await self._anext_delay(exc, result, attempt, start, delay, em)
            if delay is None:
                if exc is not None:
                    if refused:
                        if ran:
                            spent(cast(RejectedError, exc))
                        elif refund is not None:
                            refund(retry=False)  # no attempt reached the dependency
                    raise exc
                return result
            if delay > 0:
                await asleep(delay)
            attempt += 1
            try:
                result = await fn(*args, **kwargs)
            except Exception as e:
                refused = isinstance(e, RejectedError) and e._chain is chain and chain is not None
                if refused:
                    if refund is not None:
                        refund(retry=True)  # this retry never reached the dependency
                else:
                    ran = True
                    if budget is not None:
                        budget.record(False)
                exc, result = e, None
            else:
                exc = None
                ran = True
                if on_result is None or not on_result(result):
                    if budget is not None:
                        budget.record(True)
                    return result

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        on_result = self._on_result
        budget = self.budget
        timed = self.max_elapsed is not None
        clock = self._clock
        slow = self._sync_slow
        chain = em.chain

        def retry_wrapper(*args: Any, **kwargs: Any) -> Any:
            start = clock.monotonic() if timed else 0.0
            if budget is not None:
                budget.deposit()
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                if budget is not None and not own_refusal(exc, chain):
                    budget.record(False)
                first: BaseException | None = exc
                result = None
            else:
                if on_result is None or not on_result(result):
                    if budget is not None:
                        budget.record(True)
                    return result
                first = None
            return slow(fn, args, kwargs, first, result, start, em)

        return retry_wrapper

    def _sync_slow(
        self,
        fn: SyncFn,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: BaseException | None,
        result: object,
        start: float,
        em: Emitter,
    ) -> Any:
        on_result = self._on_result
        budget = self.budget
        refund = self._refund
        chain = em.chain
        # own_refusal() of the latest attempt, inlined in this loop; ran: an attempt reached
        # the dependency
        refused = isinstance(exc, RejectedError) and exc._chain is chain and chain is not None
        ran = not refused
        sleep = self._clock.sleep
        attempt = 1
        delay: float | None = None
        while True:
            delay = self._next_delay(exc, result, attempt, start, delay, em)
            if delay is None:
                if exc is not None:
                    if refused:
                        if ran:
                            spent(cast(RejectedError, exc))
                        elif refund is not None:
                            refund(retry=False)  # no attempt reached the dependency
                    raise exc
                return result
            if delay > 0:
                sleep(delay)
            attempt += 1
            try:
                result = fn(*args, **kwargs)
            except Exception as e:
                refused = isinstance(e, RejectedError) and e._chain is chain and chain is not None
                if refused:
                    if refund is not None:
                        refund(retry=True)  # this retry never reached the dependency
                else:
                    ran = True
                    if budget is not None:
                        budget.record(False)
                exc, result = e, None
            else:
                exc = None
                ran = True
                if on_result is None or not on_result(result):
                    if budget is not None:
                        budget.record(True)
                    return result

    # twin: end
