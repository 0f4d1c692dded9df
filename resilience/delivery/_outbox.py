"""``rs.delivery.Outbox``: durable, fenced, retried deliveries on a store (see the package)."""

from __future__ import annotations

import json
import logging
import math
import random as _random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from .._clock import Clock, resolve_clock
from .._policy import Emitter, Policy
from .._retry import retry_after_attribute
from .._types import Duration, positive_int, seconds
from ..backoff import Backoff
from ..backoff import schedule as _schedule
from ..errors import ConfigurationError, StoreError
from ..events import (
    DeliveryClaimRefused,
    DeliveryDeadLettered,
    DeliveryDelivered,
    DeliveryRescheduled,
    Listener,
    error_type,
)
from ..idempotency._options import check_store
from ..stores.memory import MemoryStore
from ._ops import ClaimOp, DeadOp, PutOp, RequeueOp, SettleOp, StatusOp, Wire

if TYPE_CHECKING:
    from sqlalchemy import Engine, MetaData

    from ._sql import SqlOutbox

__all__ = ["DeadLetter", "Delivery", "DeliveryState", "DeliveryStatus", "Outbox"]

_log = logging.getLogger("resilience")

#: the states of a delivery (:attr:`DeliveryStatus.state`)
DeliveryState: TypeAlias = Literal["pending", "in_flight", "delivered", "dead"]
_STATES: dict[str, DeliveryState] = {
    "p": "pending",
    "f": "in_flight",
    "d": "delivered",
    "x": "dead",
}
#: the longest key and payload :meth:`Outbox.put` accepts
MAX_KEY = 1024
MAX_PAYLOAD = 16 * 1024 * 1024
#: dead letters read per store round trip by :meth:`Outbox.dead`
DEAD_PAGE = 100
#: the longest last error kept with a delivery (characters)
MAX_ERROR = 500

#: what a handler is: sync for ``run``, async for ``arun``
Handler: TypeAlias = "Callable[[Delivery], Any]"
AsyncHandler: TypeAlias = "Callable[[Delivery], Awaitable[Any]]"
Payload: TypeAlias = bytes | str | int | float | bool | list[Any] | dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt of a delivery, as the handler receives it.

    Attributes:
        key: the key it was put with (use it as the receiver's idempotency key).
        payload: the payload, as it was put (``bytes``, ``str`` or the JSON value).
        attempt: this attempt's number (1 for the first).
        fence: the claim's fencing token: strictly greater than every earlier claim's of this
            delivery.
    """

    key: str
    payload: Any
    attempt: int
    fence: int


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    """Where a delivery stands (:meth:`Outbox.status`).

    Attributes:
        key: its key.
        state: ``"pending"``, ``"in_flight"``, ``"delivered"`` or ``"dead"``.
        attempts: the attempts claimed so far.
        next_attempt: when it is due, in seconds of the store's clock (pending: its next
            attempt; in flight: the end of its claim's lease); ``None`` once final.
        last_error: the last failed attempt's error (``"Type: message"``), or ``None``.
    """

    key: str
    state: DeliveryState
    attempts: int
    next_attempt: float | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead delivery (:meth:`Outbox.dead`): ``key``, ``attempts``, ``last_error`` and
    ``died`` (seconds of the store's clock)."""

    key: str
    attempts: int
    last_error: str
    died: float


def _encode(payload: object) -> tuple[bytes, str]:
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload), "b"
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogatepass"), "s"
    try:
        text = json.dumps(payload, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"payload must be bytes, str or JSON-serialisable, got {type(payload).__name__}: {exc}"
        ) from None
    return text.encode("utf-8", "surrogatepass"), "j"


def _decode(data: bytes, kind: str) -> Any:
    if kind == "b":
        return data
    text = data.decode("utf-8", "surrogatepass")
    return json.loads(text) if kind == "j" else text


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 3] + "..."


def _cap(backoff: Backoff) -> float:
    """The longest delay ``backoff`` gives (a server's ``Retry-After`` is capped to it)."""
    steps = getattr(backoff, "_steps", None)
    if steps:
        return float(max(steps))
    for attr in ("_maximum", "_d", "maximum"):
        value = getattr(backoff, attr, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return math.inf


class Outbox:
    """Durable deliveries: put once per key, delivered by workers, retried on a schedule.

    ``put(key, payload)`` enqueues a delivery (a second put of the key, while the first is
    kept, changes nothing and returns its status). Workers (``run`` / ``arun``, or one pass
    with ``run_once`` / ``arun_once``) claim due deliveries, each with a lease and a fence, and
    call ``handler(delivery)``: a return acknowledges it (delivered), an exception reschedules
    it at the schedule's next step (a ``retry_after`` the exception carries, e.g. a server's
    ``Retry-After``, wins, capped by the schedule's longest step) until ``max_attempts``
    attempts failed, when it becomes a dead letter (``dead()``, ``requeue(key)``). A worker
    that dies mid-delivery leaves its claim to the lease: the delivery is claimed again when it
    ends, and the dead worker's late acknowledgement is refused by its fence. Delivered and
    dead deliveries are kept ``keep`` seconds, then forgotten (a put of the key then enqueues
    again). Every put, claim, acknowledgement and reschedule is one store round trip.

    Args:
        name: the outbox's name (events; part of the store key).
        store: a :class:`~resilience.RedisStore` for a fleet of workers, default a
            :class:`~resilience.MemoryStore` on ``clock`` (one process).
        schedule: the delays before each retry (any :mod:`resilience.backoff` schedule), default
            ``schedule([1, 5, 30, 300, 1800])``.
        max_attempts: attempts before a delivery is dead-lettered.
        lease: seconds a worker's claim lasts: longer than a handler may run.
        pipeline: a policy (e.g. a :class:`~resilience.Pipeline`) each attempt runs through,
            or a callable from the :class:`Delivery` to such a policy (a breaker per
            destination); ``None``: the handler is called as is.
        keep: seconds a delivered or dead delivery is kept (default seven days).
        clock: time source for the worker loop's pauses (and a memory store's clock).
        random: the source of the schedule's jitter.
        listeners: event listeners.

    Example:
        >>> import resilience as rs
        >>> outbox = rs.delivery.Outbox("mail", clock=rs.testing.FakeClock())
        >>> outbox.put("order-7", {"to": "ada@example.com"}).state
        'pending'
        >>> outbox.run_once(lambda delivery: print(delivery.key, delivery.payload))
        order-7 {'to': 'ada@example.com'}
        1
        >>> outbox.status("order-7").state
        'delivered'
    """

    def __init__(
        self,
        name: str,
        *,
        store: Any = None,
        schedule: Backoff | None = None,
        max_attempts: int = 5,
        lease: Duration = 60.0,
        pipeline: Policy | Callable[[Delivery], Policy | None] | None = None,
        keep: Duration = 7 * 86_400.0,
        clock: Clock | None = None,
        random: _random.Random | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        name_: object = name
        if not isinstance(name_, str) or not name_:
            raise ConfigurationError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        self.schedule = _schedule([1, 5, 30, 300, 1800]) if schedule is None else schedule
        if not callable(getattr(self.schedule, "delay", None)):
            raise ConfigurationError(
                f"schedule must be a resilience.backoff schedule, got {schedule!r}"
            )
        self.max_attempts = positive_int(max_attempts, "max_attempts")
        self.lease = seconds(lease, "lease", allow_zero=False)
        self.keep = seconds(keep, "keep", allow_zero=False)
        if pipeline is not None and not callable(pipeline):
            raise ConfigurationError(f"pipeline must be a policy or a callable, got {pipeline!r}")
        self.pipeline = pipeline
        self._clock = resolve_clock(clock)
        self.store = check_store(MemoryStore(clock=self._clock) if store is None else store)
        self._random = random or _random.Random()
        self._cap = _cap(self.schedule)
        self._key = f"outbox:{name}"
        self.listeners = tuple(listeners)
        if not all(callable(listener) for listener in self.listeners):
            raise ConfigurationError(f"listeners must be callables, got {listeners!r}")
        self._em = Emitter(self.listeners, None, name)

    def __repr__(self) -> str:
        return f"Outbox({self.name!r}, max_attempts={self.max_attempts}, lease={self.lease})"

    def sql(
        self,
        engine: Engine,
        *,
        table: str = "resilience_outbox",
        metadata: MetaData | None = None,
        schema: str | None = None,
    ) -> SqlOutbox:
        """This outbox's transactional outbox on a SQLAlchemy ``engine``: ``put(connection,
        key, payload)`` in the caller's transaction, relayed here after the commit (see
        :class:`~resilience.delivery.SqlOutbox`; needs the ``sql`` extra)."""
        from ._sql import SqlOutbox

        return SqlOutbox(self, engine, table=table, metadata=metadata, schema=schema)

    # -- helpers ------------------------------------------------------------------------------
    def _check_key(self, key: object) -> str:
        if not isinstance(key, str) or not key or len(key) > MAX_KEY:
            raise ConfigurationError(
                f"a delivery key must be a non-empty str of at most {MAX_KEY} characters, "
                f"got {key!r:.80}"
            )
        return key

    def _status(self, key: str, wire: Wire) -> DeliveryStatus:
        st, attempts, _fence, due, error = wire
        state = _STATES.get(st, "pending")
        final = state in ("delivered", "dead")
        return DeliveryStatus(
            key, state, attempts, None if final else due / 1_000_000, error or None
        )

    def _policy(self, delivery: Delivery) -> Policy | None:
        pipeline = self.pipeline
        if pipeline is None or isinstance(pipeline, Policy):
            return pipeline
        return pipeline(delivery)

    def _failure(self, delivery: Delivery, exc: BaseException) -> SettleOp:
        """The settlement of a failed attempt: rescheduled, or dead after the last one."""
        error = _describe(exc)
        if delivery.attempt >= self.max_attempts:
            return SettleOp(self._key, delivery.key, delivery.fence, "x", 0, error, self.keep)
        delay = self.schedule.delay(delivery.attempt, None, self._random)
        hint = retry_after_attribute(exc)
        if hint is not None:
            delay = min(max(0.0, hint), self._cap)
        return SettleOp(
            self._key, delivery.key, delivery.fence, "r", round(delay * 1e6), error, self.keep
        )

    def _settled(
        self, op: SettleOp, ok: bool, delivery: Delivery, exc: BaseException | None
    ) -> None:
        em = self._em
        if not em:
            return
        origin = em.origin(self.name)
        key, attempt = delivery.key, delivery.attempt
        if not ok:
            em.emit(DeliveryClaimRefused(**origin, key=key, attempt=attempt, fence=op.fence))
        elif op.mode == "d":
            em.emit(DeliveryDelivered(**origin, key=key, attempt=attempt))
        elif op.mode == "r":
            em.emit(
                DeliveryRescheduled(
                    **origin,
                    key=key,
                    attempt=attempt,
                    delay=op.delay / 1e6,
                    error_type=error_type(exc),
                )
            )
        elif op.mode == "x":
            em.emit(
                DeliveryDeadLettered(
                    **origin,
                    key=key,
                    attempts=attempt,
                    reason="exhausted",
                    error_type=error_type(exc),
                )
            )

    def _claimed(self, reply: tuple[int, list[Any], list[str]]) -> list[Delivery]:
        _now, claimed, dead = reply
        em = self._em
        if em:
            for key in dead:
                em.emit(
                    DeliveryDeadLettered(
                        **em.origin(self.name),
                        key=key,
                        attempts=self.max_attempts,
                        reason="lease_expired",
                        error_type=None,
                    )
                )
        return [Delivery(k, _decode(p, t), a, g) for k, g, a, p, t in claimed]

    def _claim_op(self, cutoff: int | None, limit: int) -> ClaimOp:
        return ClaimOp(self._key, cutoff, limit, self.lease, self.max_attempts, self.keep)

    # twin: async aput=put, aapply=apply
    async def aput(self, key: str, payload: Payload) -> DeliveryStatus:
        """Enqueue ``payload`` for ``key`` once: a put of a key that has a delivery (pending,
        in flight, or kept after it ended) changes nothing. Returns the key's status.

        ``payload``: ``bytes``, ``str`` or a JSON-serialisable value (handed back as is; up to
        16 MiB encoded), else :class:`TypeError`; ``key``: a non-empty ``str`` of at most 1024
        characters (any characters), else :class:`~resilience.ConfigurationError`.
        """
        data, kind = _encode(payload)
        if len(data) > MAX_PAYLOAD:
            raise ConfigurationError(f"payload is {len(data)} bytes, more than {MAX_PAYLOAD}")
        op = PutOp(self._key, self._check_key(key), data, kind)
        _created, wire = await self.store.aapply(op)
        return self._status(key, wire)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def put(self, key: str, payload: Payload) -> DeliveryStatus:
        """Enqueue ``payload`` for ``key`` once: a put of a key that has a delivery (pending,
        in flight, or kept after it ended) changes nothing. Returns the key's status.

        ``payload``: ``bytes``, ``str`` or a JSON-serialisable value (handed back as is; up to
        16 MiB encoded), else :class:`TypeError`; ``key``: a non-empty ``str`` of at most 1024
        characters (any characters), else :class:`~resilience.ConfigurationError`.
        """
        data, kind = _encode(payload)
        if len(data) > MAX_PAYLOAD:
            raise ConfigurationError(f"payload is {len(data)} bytes, more than {MAX_PAYLOAD}")
        op = PutOp(self._key, self._check_key(key), data, kind)
        _created, wire = self.store.apply(op)
        return self._status(key, wire)

    # twin: end
    # twin: async astatus=status, aapply=apply
    async def astatus(self, key: str) -> DeliveryStatus | None:
        """The status of ``key``'s delivery, or ``None`` if it has none (never put, or
        forgotten ``keep`` seconds after it ended)."""
        wire = await self.store.aapply(StatusOp(self._key, self._check_key(key)))
        return None if wire is None else self._status(key, wire)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def status(self, key: str) -> DeliveryStatus | None:
        """The status of ``key``'s delivery, or ``None`` if it has none (never put, or
        forgotten ``keep`` seconds after it ended)."""
        wire = self.store.apply(StatusOp(self._key, self._check_key(key)))
        return None if wire is None else self._status(key, wire)

    # twin: end
    # twin: async arequeue=requeue, aapply=apply
    async def arequeue(self, key: str) -> bool:
        """Make the dead delivery of ``key`` pending again, due now, with its attempts reset;
        ``False`` if ``key`` has no dead delivery."""
        result: bool = await self.store.aapply(RequeueOp(self._key, self._check_key(key)))
        return result

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def requeue(self, key: str) -> bool:
        """Make the dead delivery of ``key`` pending again, due now, with its attempts reset;
        ``False`` if ``key`` has no dead delivery."""
        result: bool = self.store.apply(RequeueOp(self._key, self._check_key(key)))
        return result

    # twin: end
    # twin: async adead=dead, aapply=apply, AsyncIterator=Iterator
    async def adead(self) -> AsyncIterator[DeadLetter]:
        """The dead letters, oldest first (one store round trip per 100)."""
        offset = 0
        while True:
            page = await self.store.aapply(DeadOp(self._key, offset, DEAD_PAGE, self.keep))
            for key, attempts, error, died in page:
                yield DeadLetter(key, attempts, error, died / 1_000_000)
            if len(page) < DEAD_PAGE:
                return
            offset += len(page)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def dead(self) -> Iterator[DeadLetter]:
        """The dead letters, oldest first (one store round trip per 100)."""
        offset = 0
        while True:
            page = self.store.apply(DeadOp(self._key, offset, DEAD_PAGE, self.keep))
            for key, attempts, error, died in page:
                yield DeadLetter(key, attempts, error, died / 1_000_000)
            if len(page) < DEAD_PAGE:
                return
            offset += len(page)

    # twin: end
    # twin: async _aattempt=_attempt, aapply=apply, acall=call, AsyncHandler=Handler
    async def _aattempt(self, handler: AsyncHandler, delivery: Delivery) -> None:
        """One attempt: the handler (through the pipeline), then one settlement round trip. A
        ``BaseException`` releases the claim (best effort; else it is left to the lease)."""
        policy = self._policy(delivery)
        exc: BaseException | None = None
        try:
            if policy is None:
                await handler(delivery)
            else:
                await policy.acall(handler, delivery)
            op = SettleOp(self._key, delivery.key, delivery.fence, "d", 0, "", self.keep)
        except Exception as error:
            exc = error
            op = self._failure(delivery, error)
        except BaseException:
            release = SettleOp(self._key, delivery.key, delivery.fence, "l", 0, "", self.keep)
            try:
                await self.store.aapply(release)
            except BaseException:  # the lease ends it
                _log.warning("resilience: outbox %r left %r to its lease", self.name, delivery.key)
            raise
        try:
            ok = await self.store.aapply(op)
        except StoreError as error:
            _log.warning(
                "resilience: outbox %r could not settle %r (left to its lease): %s",
                self.name,
                delivery.key,
                error,
            )
            return
        self._settled(op, ok, delivery, exc)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def _attempt(self, handler: Handler, delivery: Delivery) -> None:
        """One attempt: the handler (through the pipeline), then one settlement round trip. A
        ``BaseException`` releases the claim (best effort; else it is left to the lease)."""
        policy = self._policy(delivery)
        exc: BaseException | None = None
        try:
            if policy is None:
                handler(delivery)
            else:
                policy.call(handler, delivery)
            op = SettleOp(self._key, delivery.key, delivery.fence, "d", 0, "", self.keep)
        except Exception as error:
            exc = error
            op = self._failure(delivery, error)
        except BaseException:
            release = SettleOp(self._key, delivery.key, delivery.fence, "l", 0, "", self.keep)
            try:
                self.store.apply(release)
            except BaseException:  # the lease ends it
                _log.warning("resilience: outbox %r left %r to its lease", self.name, delivery.key)
            raise
        try:
            ok = self.store.apply(op)
        except StoreError as error:
            _log.warning(
                "resilience: outbox %r could not settle %r (left to its lease): %s",
                self.name,
                delivery.key,
                error,
            )
            return
        self._settled(op, ok, delivery, exc)

    # twin: end
    # twin: async arun_once=run_once, _aprocess=_process, aapply=apply, AsyncHandler=Handler
    async def arun_once(self, handler: AsyncHandler, *, concurrency: int = 1) -> int:
        """Attempt every delivery due now once (``concurrency`` at a time); return how many
        were attempted. A store failure of the claim raises :class:`~resilience.StoreError`;
        one of a settlement is logged (the delivery is then claimed again after its lease)."""
        limit = positive_int(concurrency, "concurrency")
        cutoff: int | None = None
        total = 0
        while True:
            reply = await self.store.aapply(self._claim_op(cutoff, limit))
            cutoff = reply[0]
            batch = self._claimed(reply)
            if batch:
                await self._aprocess(handler, batch, limit)
            total += len(batch)
            if len(batch) + len(reply[2]) < limit:
                return total

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def run_once(self, handler: Handler, *, concurrency: int = 1) -> int:
        """Attempt every delivery due now once (``concurrency`` at a time); return how many
        were attempted. A store failure of the claim raises :class:`~resilience.StoreError`;
        one of a settlement is logged (the delivery is then claimed again after its lease)."""
        limit = positive_int(concurrency, "concurrency")
        cutoff: int | None = None
        total = 0
        while True:
            reply = self.store.apply(self._claim_op(cutoff, limit))
            cutoff = reply[0]
            batch = self._claimed(reply)
            if batch:
                self._process(handler, batch, limit)
            total += len(batch)
            if len(batch) + len(reply[2]) < limit:
                return total

    # twin: end
    # twin: async arun=run, arun_once=run_once, _apause=_pause, AsyncHandler=Handler
    async def arun(
        self,
        handler: AsyncHandler,
        *,
        concurrency: int = 1,
        stop: Any = None,
        poll: Duration = 0.5,
    ) -> None:
        """Deliver until ``stop`` (an ``asyncio.Event`` for ``arun``, a ``threading.Event``
        for ``run``) is set: a pass of :meth:`arun_once`, then, if nothing was due, a pause of
        ``poll`` seconds (cut short by ``stop``). A store failure is logged and waited out."""
        interval = seconds(poll, "poll", allow_zero=False)
        while stop is None or not stop.is_set():
            try:
                done = await self.arun_once(handler, concurrency=concurrency)
            except StoreError as exc:
                _log.warning("resilience: outbox %r could not claim: %s", self.name, exc)
                done = 0
            if not done:
                await self._apause(stop, interval)

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def run(
        self,
        handler: Handler,
        *,
        concurrency: int = 1,
        stop: Any = None,
        poll: Duration = 0.5,
    ) -> None:
        """Deliver until ``stop`` (an ``asyncio.Event`` for ``run``, a ``threading.Event``
        for ``run``) is set: a pass of :meth:`run_once`, then, if nothing was due, a pause of
        ``poll`` seconds (cut short by ``stop``). A store failure is logged and waited out."""
        interval = seconds(poll, "poll", allow_zero=False)
        while stop is None or not stop.is_set():
            try:
                done = self.run_once(handler, concurrency=concurrency)
            except StoreError as exc:
                _log.warning("resilience: outbox %r could not claim: %s", self.name, exc)
                done = 0
            if not done:
                self._pause(stop, interval)

    # twin: end

    async def _aprocess(self, handler: AsyncHandler, batch: list[Delivery], limit: int) -> None:
        if len(batch) == 1:
            await self._aattempt(handler, batch[0])
            return
        import asyncio  # not at import time: importing resilience stays light

        async with asyncio.TaskGroup() as group:
            for delivery in batch:
                group.create_task(self._aattempt(handler, delivery))

    def _process(self, handler: Handler, batch: list[Delivery], limit: int) -> None:
        if len(batch) == 1:
            self._attempt(handler, batch[0])
            return
        with ThreadPoolExecutor(min(limit, len(batch)), "resilience-outbox") as pool:
            for future in [pool.submit(self._attempt, handler, d) for d in batch]:
                future.result()

    async def _apause(self, stop: Any, interval: float) -> None:
        if stop is None:
            await self._clock.asleep(interval)
            return
        import asyncio

        sleeper = asyncio.ensure_future(self._clock.asleep(interval))
        waiter = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waiter.cancel()

    def _pause(self, stop: Any, interval: float) -> None:
        if stop is None:
            self._clock.sleep(interval)
        else:
            stop.wait(interval)
