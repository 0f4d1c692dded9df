"""Hedging: send the call again when it is slow (or failed), keep the first acceptable answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from .._budget import Budget
from .._clock import DeadlineClock, resolve_deadline_clock
from .._deadline import _DEADLINE
from .._policy import Emitter, Policy, own_refusal, spent
from .._retry import retry_after_attribute
from .._types import (
    AsyncFn,
    Duration,
    ExceptionSpec,
    SyncFn,
    exception_predicate,
    positive_int,
)
from .._types import result_predicate as _result_predicate
from ..errors import ConfigurationError, RejectedError
from ..events import HedgeCancelled, HedgeReason, HedgeStarted, HedgeWon, Listener
from ._delay import HedgeDelay, LatencyPercentile, hedge_delay

if TYPE_CHECKING:  # pragma: no cover - asyncio is imported when a coroutine is hedged
    import asyncio

__all__ = ["MAY_HEDGE", "Hedge"]

#: A method an adapter's per-call state (the first positional argument of the hedged
#: callable) may have; returning ``False`` means the call is not safe to send twice.
MAY_HEDGE = "__resilience_may_hedge__"


class Hedge(Policy):
    """Send a slow call again, concurrently, and keep the first acceptable outcome.

    The call starts at once. When no acceptable outcome arrived ``delay`` seconds later,
    another attempt starts, concurrently, up to ``attempts`` in flight (the first included).
    The first acceptable outcome wins: the attempts still running are cancelled (their
    ``finally`` blocks and ``async with`` exits run before the call returns) and the winner's
    result is returned.

    An outcome is unacceptable when it is an exception matching ``on`` or a result matching
    ``on_result``: it starts the next hedge at once ("fallback mode"), unless the
    ``retry_after`` hook reads a server delay on it (the next hedge then waits that long) or
    a negative one (server pushback: no more hedges for this call). Any other exception is
    final: it is raised at once and the other attempts are cancelled. When every attempt was
    unacceptable, the call ends with the **last** unacceptable outcome to arrive (the freshest
    news from the dependency): its exception is raised with a note, or its result is returned.

    An attempt refused by a policy inside the hedge (an inner rate limiter, bulkhead or breaker
    raising :class:`resilience.RejectedError`) never reached the dependency, as with
    :class:`resilience.Retry`: it is unacceptable only if ``on`` matches it, and the ``budget``
    does not learn from it (no failure is recorded, a :class:`resilience.RetryBudget` gets back
    the hedge it paid for, or the call's deposit when no attempt reached the dependency). A
    refusal that ends a call after another attempt did reach the dependency (it failed, or was
    still in flight) is that call's outcome: outer policies treat it as an ordinary exception
    (outer breakers count it, outer rate limiters keep their permits).

    ``budget`` (a shared :class:`resilience.RetryBudget` / :class:`resilience.RetryThrottle`)
    pays for hedges: every call deposits, every hedge withdraws, and when the budget refuses,
    no more hedges are sent for that call and the attempts in flight continue. Use one so that
    hedging cannot multiply the load on a dependency that is already slow.

    Only coroutine functions can be hedged: decorating a sync function raises
    :class:`resilience.ConfigurationError` (a sync loser could not be cancelled and would
    hold a thread until it finished). Every attempt runs in its own task with a copy of the
    caller's context, so the deadline published by an enclosing :class:`resilience.Timeout`
    (or an adapter) applies to every attempt, and when it expires all of them are cancelled.

    Args:
        delay: seconds before each hedge: a number, a callable ``started -> seconds`` (the
            number of attempts already started, 1 before the first hedge), or
            :meth:`Hedge.percentile` (a percentile of observed latencies).
        attempts: attempts in flight at most, the first included (>= 2 to hedge at all).
        on: exception type(s) or predicate: which exceptions are unacceptable (default any
            :class:`Exception`).
        on_result: predicate over unacceptable results (e.g. an HTTP 503 response).
        budget: a shared retry budget paying for hedges.
        retry_after: hook reading a server-directed delay from an unacceptable outcome (the
            hint the httpx / gRPC adapters attach, see :func:`resilience.attach_retry_after`);
            negative: stop hedging.
        name: policy name in events and metrics.
        clock: time source, a :class:`~resilience.DeadlineClock`.
        listeners: event listeners.

    Example:
        >>> import asyncio, resilience as rs
        >>> from resilience.simulate import SimClock, run_virtual
        >>> clock = SimClock()
        >>> latencies = iter([1.0, 0.05])  # the first attempt is slow, the hedge is not
        >>> async def fetch() -> float:
        ...     await clock.asleep(next(latencies))
        ...     return clock.monotonic()
        >>> hedge = rs.Hedge(delay=0.1, clock=clock)
        >>> round(run_virtual(hedge.acall(fetch), clock), 3)  # the hedge answered at 0.1 + 0.05
        0.15
    """

    kind = "hedge"

    def __init__(
        self,
        *,
        delay: Duration | Callable[[int], float] | HedgeDelay,
        attempts: int = 2,
        on: ExceptionSpec = Exception,
        on_result: Callable[[Any], bool] | None = None,
        budget: Budget | None = None,
        retry_after: Callable[[object], float | None] | None = retry_after_attribute,
        name: str = "hedge",
        clock: DeadlineClock | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(name=name, listeners=listeners)
        self.delay: HedgeDelay = hedge_delay(delay)
        self.attempts = positive_int(attempts, "attempts")
        self._on = exception_predicate(on, "on")
        self._on_result = None if on_result is None else _result_predicate(on_result, "on_result")
        if budget is not None and not all(
            callable(getattr(budget, m, None)) for m in ("deposit", "record", "try_withdraw")
        ):
            raise ConfigurationError(
                f"budget must be a RetryBudget or RetryThrottle, got {budget!r}"
            )
        self.budget = budget
        self._refund: Callable[..., None] | None = getattr(budget, "refund", None)
        if retry_after is not None and not callable(retry_after):
            raise ConfigurationError(f"retry_after must be a callable or None, got {retry_after!r}")
        self._retry_after = retry_after
        self._clock = resolve_deadline_clock(clock)

    @staticmethod
    def percentile(
        percentile: float,
        *,
        window: int = 1000,
        min_samples: int = 100,
        fallback: Duration = 1.0,
    ) -> LatencyPercentile:
        """A ``delay=`` following the ``percentile``-th percentile of the latencies of the
        last ``window`` attempts (``fallback`` seconds until ``min_samples`` were seen); see
        :class:`~resilience.LatencyPercentile`. Give each Hedge its own.

        Example:
            >>> import resilience as rs
            >>> rs.Hedge(delay=rs.Hedge.percentile(95, window=500, min_samples=50, fallback=0.2))
            Hedge(name='hedge', delay='Hedge.percentile(95, window=500, min_samples=50, fallback=0.2)', attempts=2, budget=None)
        """  # noqa: E501
        return LatencyPercentile(
            percentile,
            window=window,
            min_samples=min_samples,
            fallback=fallback,
        )

    def describe(self) -> dict[str, Any]:
        """Plain data describing the configuration."""
        return {
            "kind": self.kind,
            "name": self.name,
            "delay": repr(self.delay),
            "attempts": self.attempts,
            "budget": repr(self.budget) if self.budget is not None else None,
        }

    # -- sync: refused ----------------------------------------------------------------------
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        """Refuse: only coroutine functions can be hedged (a sync loser cannot be cancelled)."""
        raise ConfigurationError(
            f"Hedge {self.name!r} hedges coroutine functions only: a sync attempt that lost the "
            "race could not be cancelled and would hold a thread until it finished"
        )

    # -- async ------------------------------------------------------------------------------
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        """Run ``fn`` hedged (see the class documentation)."""
        if self.attempts < 2:
            return fn
        hedged = self._hedged
        budget = self.budget

        async def hedge_wrapper(*args: Any, **kwargs: Any) -> Any:
            if budget is not None:
                budget.deposit()
            return await hedged(fn, args, kwargs, em)

        return hedge_wrapper

    async def _may_hedge(self, args: tuple[Any, ...]) -> bool:
        """A hedge is allowed now: the caller's state says the call may be sent twice, the
        deadline has not expired, and the budget pays for it."""
        probe = getattr(args[0], MAY_HEDGE, None) if args else None
        if probe is not None and not probe():
            return False
        dl = _DEADLINE.get()
        if dl is not None and dl.remaining() <= 0:
            return False
        budget = self.budget
        if budget is None:
            return True
        atry = getattr(budget, "atry_withdraw", None)  # a shared budget's round trip, awaited
        return bool(await atry()) if atry is not None else budget.try_withdraw()

    async def _hedged(
        self, fn: AsyncFn, args: tuple[Any, ...], kwargs: dict[str, Any], em: Emitter
    ) -> Any:
        import asyncio  # not at module level: importing resilience stays light

        clock = self._clock
        delays = self.delay
        limit = self.attempts
        unacceptable = self._on
        bad_result = self._on_result
        budget = self.budget
        hint_of = self._retry_after
        chain = em.chain
        # task -> (attempt number, start time)
        running: dict[asyncio.Future[Any], tuple[int, float]] = {}

        def launch(n: int) -> None:
            running[asyncio.ensure_future(fn(*args, **kwargs))] = (n, clock.monotonic())

        first_delay = delays.delay(1)  # before the first task: a raising schedule leaks none
        next_at = clock.monotonic() + first_delay
        launch(1)
        started = 1
        hedging = True
        reason: HedgeReason = "delay"
        last_exc: BaseException | None = None
        last_result: Any = None
        ran = False  # an attempt reached the dependency (it was not refused by a policy inside)
        try:
            while True:
                can_hedge = hedging and started < limit
                if not running and not can_hedge:  # every attempt was unacceptable
                    if last_exc is not None:
                        last_exc.add_note(
                            f"resilience: hedge policy {self.name!r}: all {started} attempt(s) "
                            "were unacceptable; this is the last one's"
                        )
                        raise self._ending(last_exc, ran, chain)
                    return last_result
                fired = False
                if can_hedge:
                    wait = next_at - clock.monotonic()
                    if wait <= 0:
                        fired = True
                    elif not running:
                        await clock.asleep(wait)
                        fired = True
                    else:
                        scope = clock.deadline_scope(next_at)
                        scope.enter()
                        try:
                            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                        except asyncio.CancelledError:
                            if not scope.exit():
                                raise
                            fired = True
                        else:
                            fired = scope.exit()
                else:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in [t for t in running if t.done()]:
                    n, t0 = running.pop(task)
                    try:
                        result = task.result()
                    except Exception as exc:
                        if own_refusal(exc, chain):
                            if n > 1 and self._refund is not None:
                                self._refund(retry=True)  # this hedge never got through
                        else:
                            ran = True
                            if budget is not None:
                                budget.record(False)
                        if not unacceptable(exc):
                            # the attempts still in flight may have reached the dependency
                            self._ending(exc, ran or bool(running), chain)
                            raise
                        last_exc, last_result = exc, None
                        outcome: object = exc
                    else:
                        ran = True
                        if bad_result is None or not bad_result(result):
                            if budget is not None:
                                budget.record(True)
                            delays.observe(clock.monotonic() - t0)
                            if em and started > 1:
                                em.emit(
                                    HedgeWon(**em.origin(self.name), attempt=n, attempts=started)
                                )
                            return result
                        last_exc, last_result = None, result
                        outcome = result
                    # unacceptable: hedge at once, or when the server says, or never (pushback)
                    hint = hint_of(outcome) if hint_of is not None else None
                    if hint is not None and hint < 0:
                        hedging = False
                    else:
                        next_at = clock.monotonic() + (hint or 0.0)
                        reason = "failure"
                if fired and hedging and started < limit:
                    if await self._may_hedge(args):
                        started += 1
                        launch(started)
                        if em:
                            em.emit(
                                HedgeStarted(**em.origin(self.name), attempt=started, reason=reason)
                            )
                        if started < limit:
                            next_at = clock.monotonic() + delays.delay(started)
                        reason = "delay"
                    else:
                        hedging = False  # the attempts in flight continue
        finally:
            if running:
                await self._cancel(running, first_delay, em)

    def _ending(self, exc: BaseException, ran: bool, chain: object) -> BaseException:
        """The exception ending a call, a refusal by a policy inside settled as
        :class:`resilience.Retry` settles it: unstamped when an attempt reached the dependency
        (the call's outcome, not a refused call), else the call's deposit refunded."""
        if own_refusal(exc, chain):
            if ran:
                spent(cast(RejectedError, exc))
            elif self._refund is not None:
                self._refund(retry=False)  # no attempt reached the dependency
        return exc

    async def _cancel(
        self, running: dict[asyncio.Future[Any], tuple[int, float]], floor: float, em: Emitter
    ) -> None:
        """Cancel the losers and wait for their cleanup; learn a lower bound of their latency."""
        import asyncio

        for task in running:
            task.cancel()
        await asyncio.wait(running)
        now = self._clock.monotonic()
        cancelled = 0
        for task, (_n, t0) in running.items():
            if task.cancelled():
                cancelled += 1
                if now - t0 >= floor:  # slower than the threshold: still counts as slow
                    self.delay.observe(now - t0)
            else:
                task.exception()  # retrieved: a loser's late failure is not an error
        if em and cancelled:
            em.emit(HedgeCancelled(**em.origin(self.name), attempts=cancelled))
