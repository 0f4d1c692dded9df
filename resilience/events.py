"""Typed, frozen events emitted by policies, and the failsafe listener plumbing.

A listener is any callable taking one :class:`Event`. Listeners are passed per policy or per
pipeline (``listeners=[...]``); a listener that raises is logged once and never breaks a call.
Events are only built when a listener is attached, so an unobserved policy pays nothing.

Every event carries low-cardinality identity fields: ``policy`` (the policy's configured name),
``pipeline`` (the enclosing pipeline's name, or ``None``) and ``operation`` (the decorated
function's qualified name, a route template or an RPC method; never a raw URL).

Example:
    >>> import resilience as rs
    >>> seen = []
    >>> retry = rs.Retry(on=ZeroDivisionError, attempts=2, backoff=rs.backoff.constant(0),
    ...                  listeners=[seen.append], clock=rs.testing.FakeClock())
    >>> try:
    ...     retry.call(lambda: 1 / 0)
    ... except ZeroDivisionError:
    ...     pass
    >>> [type(e).__name__ for e in seen]
    ['RetryScheduled', 'RetriesExhausted']
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, TypeAlias, TypedDict

__all__ = [
    "BulkheadRejected",
    "CallCompleted",
    "CallOutcome",
    "CallRejected",
    "ChaosInjected",
    "ChaosKind",
    "CircuitStateChanged",
    "DeadLetterReason",
    "DeliveryClaimRefused",
    "DeliveryDeadLettered",
    "DeliveryDelivered",
    "DeliveryRescheduled",
    "Event",
    "FallbackUsed",
    "HedgeCancelled",
    "HedgeReason",
    "HedgeStarted",
    "HedgeWon",
    "IdempotentReplay",
    "Listener",
    "LockLost",
    "LockRejected",
    "Origin",
    "RateLimitWaited",
    "RecordsEvicted",
    "RejectReason",
    "RetriesExhausted",
    "RetryScheduled",
    "StopReason",
    "StoreDecision",
    "StoreFailed",
    "TimeoutElapsed",
    "TransitionReason",
]

_log = logging.getLogger("resilience")

#: Why a :class:`RetriesExhausted` retry stopped.
StopReason: TypeAlias = Literal["attempts", "max_elapsed", "deadline", "budget", "pushback"]
#: Why a policy refused a call (:class:`CallRejected`).
RejectReason: TypeAlias = Literal[
    "circuit_open",
    "rate_limited",
    "bulkhead_full",
    "idempotency_conflict",
    "concurrency_limit",
    "throttled",
]
#: Why a circuit breaker changed state (:class:`CircuitStateChanged`).
TransitionReason: TypeAlias = Literal[
    "failure_ratio",
    "failure_count",
    "slow_call_ratio",
    "probe_failed",
    "probes_succeeded",
    "open_for_elapsed",
    "half_open_timeout",
    "manual",
    "consecutive_failures",
]
#: What a chaos policy injected (:class:`ChaosInjected`).
ChaosKind: TypeAlias = Literal["fault", "latency", "outcome", "behavior"]
#: What a policy did when its store failed (:class:`StoreFailed`).
StoreDecision: TypeAlias = Literal["open", "closed", "local", "unrecorded", "reset"]


class Origin(TypedDict):
    """The identity fields every event starts with, built once by
    :meth:`resilience.Emitter.origin` (``RetryScheduled(**em.origin(name), attempt=...)``)."""

    policy: str
    pipeline: str | None
    operation: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event.

    Attributes:
        policy: the configured name of the emitting policy (e.g. ``"retry"``, ``"payments"``).
        pipeline: the enclosing pipeline's name, or ``None`` outside a pipeline.
        operation: the guarded operation (function qualname, route template or RPC method).
    """

    kind: ClassVar[str] = "event"
    policy: str
    pipeline: str | None = None
    operation: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled(Event):
    """An attempt failed and another one will run after ``delay`` seconds.

    ``reason`` is ``"exception"`` or ``"result"``; ``server_directed`` is true when the delay came
    from a Retry-After / pushback hint rather than the backoff.
    """

    kind: ClassVar[str] = "retry"
    attempt: int
    delay: float
    reason: Literal["exception", "result"]
    error_type: str | None = None
    server_directed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RetriesExhausted(Event):
    """Retrying stopped with a failure.

    ``reason`` is one of ``"attempts"``, ``"max_elapsed"``, ``"deadline"``, ``"budget"``,
    ``"pushback"`` (the server said not to retry).
    """

    kind: ClassVar[str] = "retries_exhausted"
    attempts: int
    reason: StopReason
    error_type: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutElapsed(Event):
    """A call ran past its deadline (``timeout`` seconds)."""

    kind: ClassVar[str] = "timeout"
    timeout: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRejected(Event):
    """A policy refused a call before running it.

    ``reason``: ``"circuit_open"``, ``"rate_limited"``, ``"bulkhead_full"``,
    ``"idempotency_conflict"``, ``"concurrency_limit"``, ``"throttled"`` (an adaptive
    throttle's local rejection).
    """

    kind: ClassVar[str] = "rejected"
    reason: RejectReason
    retry_after: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkheadRejected(CallRejected):
    """A bulkhead refused a call (a :class:`CallRejected` with ``reason="bulkhead_full"``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitStateChanged(Event):
    """A circuit breaker changed state (``from_state`` → ``to_state``) because of ``reason``.

    ``reason``: ``"failure_ratio"``, ``"failure_count"``, ``"slow_call_ratio"``,
    ``"probe_failed"``, ``"probes_succeeded"``, ``"open_for_elapsed"``, ``"half_open_timeout"``,
    ``"manual"``.
    """

    kind: ClassVar[str] = "circuit_state"
    from_state: str
    to_state: str
    reason: TransitionReason


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitWaited(Event):
    """A rate limiter or bulkhead made a call wait ``wait`` seconds for its permit."""

    kind: ClassVar[str] = "ratelimit_wait"
    wait: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackUsed(Event):
    """A fallback replaced a failure (``error_type``) or a result with its own value."""

    kind: ClassVar[str] = "fallback"
    error_type: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotentReplay(Event):
    """A stored result was replayed for a duplicate call."""

    kind: ClassVar[str] = "idempotency_replay"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordsEvicted(Event):
    """A full in-memory store evicted ``count`` completed records before their TTL to make room
    for this call's new record (oldest completed first; in-progress claims are never evicted).

    A duplicate of an evicted record's key runs again: raise ``max_entries``, shorten ``ttl`` or
    use a shared store when this happens under normal load.
    """

    kind: ClassVar[str] = "records_evicted"
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreFailed(Event):
    """The state store failed; ``decision`` says what the policy did (``"open"``, ``"closed"``,
    ``"local"``; ``"unrecorded"``: an idempotent call ran but its outcome could not be stored;
    ``"reset"``: the entity's stored state could not be decoded (corrupted, poisoned), so it was
    treated as absent and rewritten, ``error_type="corrupt_state"``)."""

    kind: ClassVar[str] = "store_error"
    decision: StoreDecision
    error_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LockRejected(Event):
    """A :class:`~resilience.Lock` refused an acquisition: the key stayed held for the whole
    ``wait`` (``retry_after``: the seconds left on the holder's lease)."""

    kind: ClassVar[str] = "lock_rejected"
    reason: Literal["lock_held"]
    retry_after: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LockLost(Event):
    """A hold of a :class:`~resilience.Lock` was lost (its critical section is no longer
    exclusive): ``reason`` ``"renewal_refused"`` (the heartbeat found the lease ended or taken
    over) or ``"release_refused"`` (at release, the lease had ended)."""

    kind: ClassVar[str] = "lock_lost"
    reason: Literal["renewal_refused", "release_refused"]
    fence: int


Listener: TypeAlias = Callable[[Event], object]

_warned: set[int] = set()


def emit(listeners: Sequence[Listener], event: Event) -> None:
    """Deliver ``event`` to every listener; a raising listener is logged once and skipped."""
    for listener in listeners:
        try:
            listener(event)
        except Exception:
            key = id(listener)
            if key not in _warned:
                _warned.add(key)
                _log.exception("resilience: listener %r raised; ignoring it", listener)


def error_type(exc: BaseException | None) -> str | None:
    """The ``error.type`` attribute value for an exception (its qualified class name)."""
    if exc is None:
        return None
    cls = type(exc)
    mod = cls.__module__
    return cls.__qualname__ if mod in ("builtins", "__main__") else f"{mod}.{cls.__qualname__}"


#: Why a :class:`HedgeStarted` hedge was sent: the delay passed, or an attempt was unacceptable.
HedgeReason: TypeAlias = Literal["delay", "failure"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HedgeStarted(Event):
    """A hedge sent attempt number ``attempt`` (2 for the first hedge) of a call, because
    ``reason``: the delay passed without an acceptable outcome, or an attempt was unacceptable."""

    kind: ClassVar[str] = "hedge"
    attempt: int
    reason: HedgeReason


@dataclass(frozen=True, slots=True, kw_only=True)
class HedgeWon(Event):
    """Attempt number ``attempt`` of a hedged call (``attempts`` were sent) answered first."""

    kind: ClassVar[str] = "hedge_won"
    attempt: int
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HedgeCancelled(Event):
    """``attempts`` attempts of a hedged call still running were cancelled (they lost)."""

    kind: ClassVar[str] = "hedge_cancelled"
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChaosInjected(Event):
    """A chaos policy (:mod:`resilience.chaos`) injected ``injection`` into this call:
    ``"fault"`` (an exception instead of the call), ``"latency"`` (``delay`` seconds before
    it, already capped to the deadline), ``"outcome"`` (a value instead of the call) or
    ``"behavior"`` (an extra action before it)."""

    kind: ClassVar[str] = "chaos"
    injection: ChaosKind
    delay: float | None = None


#: How a protected call ended (:class:`CallCompleted`).
CallOutcome: TypeAlias = Literal["success", "error", "rejected"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallCompleted(Event):
    """A protected call finished, after ``duration`` seconds (every call, not only incidents).

    Emitted once per call by the outermost composition (the decorator, :meth:`Policy.wrap`,
    ``.call`` / ``.acall`` or the outermost :class:`resilience.Pipeline`), and only to the
    listeners that ask for it with a true ``call_events`` attribute (e.g.
    :class:`resilience.instrumentation.OpenTelemetry`): other listeners never see it, and a
    composition without such a listener does not measure anything. ``policy`` is the outermost
    policy (or pipeline); ``outcome`` is ``"success"``, ``"error"`` (the call raised
    ``error_type``) or ``"rejected"`` (a policy of the composition refused it before the
    protected function ran; ``error_type`` is the refusal's class).
    """

    kind: ClassVar[str] = "call"
    duration: float
    outcome: CallOutcome
    error_type: str | None = None


#: Why a delivery became a dead letter (:class:`DeliveryDeadLettered`).
DeadLetterReason: TypeAlias = Literal["exhausted", "lease_expired"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryDelivered(Event):
    """An outbox (:class:`resilience.delivery.Outbox`) delivered ``key``: the handler returned
    on attempt number ``attempt`` and the store accepted the acknowledgement (once per
    delivery: a stale claim's acknowledgement is refused, :class:`DeliveryClaimRefused`)."""

    kind: ClassVar[str] = "delivery_delivered"
    key: str
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryRescheduled(Event):
    """Attempt number ``attempt`` of delivery ``key`` raised ``error_type``; the next one is
    due in ``delay`` seconds (the schedule's step, or the error's ``retry_after``)."""

    kind: ClassVar[str] = "delivery_rescheduled"
    key: str
    attempt: int
    delay: float
    error_type: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryDeadLettered(Event):
    """Delivery ``key`` became a dead letter after ``attempts`` attempts: ``"exhausted"`` (the
    last attempt raised ``error_type``) or ``"lease_expired"`` (the last attempt's claim ended
    without an answer: its worker died or hung)."""

    kind: ClassVar[str] = "delivery_dead_lettered"
    key: str
    attempts: int
    reason: DeadLetterReason
    error_type: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryClaimRefused(Event):
    """The store refused to settle attempt number ``attempt`` of delivery ``key``: its claim
    (``fence``) is no longer the delivery's (its lease ended and another worker claimed it, or
    the delivery was lost with the store's data). Its outcome is not recorded."""

    kind: ClassVar[str] = "delivery_claim_refused"
    key: str
    attempt: int
    fence: int
