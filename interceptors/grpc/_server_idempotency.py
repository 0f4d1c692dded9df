"""gRPC server idempotency: the key and principal, stream buffering, the published scope."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import grpc

import resilience as rs
from interceptors._duration_hints import DurationHints
from resilience._clock import Clock
from resilience._types import Duration, seconds
from resilience.errors import ConfigurationError, RejectedError
from resilience.idempotency import CURRENT_CALLER, BufferBudget, CallerScope, IdempotencyRecords

from .._deadline import clamp_inbound
from ._status import StatusError

__all__ = [
    "IDEMPOTENCY_KEY",
    "REPLAYED_KEY",
    "IdempotencyConfig",
    "StreamBuffer",
    "compose_pipeline",
    "default_principal",
    "enter_scope",
    "exit_scope",
    "idempotency_key",
    "mark_replayed",
    "refuse_key",
    "stream_fingerprint",
]

#: Metadata carrying the client's idempotency key.
IDEMPOTENCY_KEY = "idempotency-key"
_KEY: ContextVar[str | None] = ContextVar("resilience_grpc_idempotency_key", default=None)
#: Trailing metadata marking a response replayed from an idempotency record.
REPLAYED_KEY = "idempotent-replayed"
_NO_DEADLINE = 1e9  # grpc reports ~9.2e18 s remaining when the client set no deadline
_DESERIALIZE_FAILED = "Exception deserializing request!"  # grpc's own wording
_STREAM_KEY_REFUSED = (
    "idempotency-key is not supported on streaming-response methods "
    "(a response stream cannot be replayed)"
)


def idempotency_key() -> str | None:
    """The ``idempotency-key`` metadata of the RPC being served (for an idempotency ``key=``).

    Example:
        >>> idempotency_key() is None
        True
    """
    return _KEY.get()


def valid_key(value: object) -> str | None:
    """An idempotency key if ``value`` is 1-255 visible ASCII characters, else ``None``."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or not 1 <= len(value) <= 255:
        return None
    if not all("\x21" <= ch <= "\x7e" for ch in value):
        return None
    return value


def _digest(value: str | bytes) -> str:
    raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)
    return hashlib.sha256(raw).hexdigest()[:32]


def default_principal(context: Any) -> str | None:
    """Who is calling, for scoping idempotency records (the default ``principal=``).

    In order: the TLS peer identities (``context.peer_identities()``, hashed), a hash of the
    ``authorization`` metadata, else the peer address without its port (``context.peer()``).
    Behind a proxy or NAT many clients share an address: pass your own ``principal=`` that
    reads your authentication (and runs after it).

    Example:
        >>> class Ctx:
        ...     def peer_identities(self): return None
        ...     def invocation_metadata(self): return ()
        ...     def peer(self): return "ipv6:[::1]:51000"
        >>> default_principal(Ctx())
        'peer:ipv6:[::1]'
    """
    try:
        identities = context.peer_identities()
    except Exception:  # pragma: no cover - a context without peer_identities
        identities = None
    if identities:
        return "tls:" + _digest(b"\x00".join(bytes(i) for i in identities))
    for k, v in context.invocation_metadata() or ():
        if k == "authorization":
            return "auth:" + _digest(v)
    peer = context.peer()
    if not isinstance(peer, str) or not peer:
        return None
    if peer.startswith(("ipv4:", "ipv6:")):
        peer = peer.rpartition(":")[0]
    return "peer:" + peer


_STREAM_TOO_LARGE = "the request stream is larger than the idempotency max_buffered_bytes"
_BUFFERS_FULL = "too many request bytes are buffered for idempotency right now; retry later"


class StreamBuffer:
    """A request stream's messages, held within the records' :class:`BufferBudget`.

    :meth:`take` reserves each message before it is kept: a stream that can never fit the
    budget raises ``RESOURCE_EXHAUSTED``, one that does not fit *now* (other calls hold the
    budget) a :class:`~resilience.RejectedError` (``UNAVAILABLE``, pushback 1 s); nothing more
    of the stream is read. :meth:`release` returns the bytes when the call is done.
    """

    __slots__ = ("budget", "held")

    def __init__(self, budget: BufferBudget) -> None:
        self.budget = budget
        self.held = 0

    def take(self, message: Any) -> bytes:
        n = len(message)
        if not self.budget.reserve(n):
            if self.held + n > self.budget.limit:
                raise StatusError(grpc.StatusCode.RESOURCE_EXHAUSTED, _STREAM_TOO_LARGE)
            raise RejectedError(_BUFFERS_FULL, policy="idempotency", retry_after=1.0)
        self.held += n
        return bytes(message)

    def release(self) -> None:
        if self.held:
            self.budget.release(self.held)
            self.held = 0


def stream_fingerprint(messages: list[bytes]) -> bytes:
    """The fingerprint input of a request stream: its serialized messages, length-prefixed."""
    return b"".join(len(m).to_bytes(8, "big") + m for m in messages)


class IdempotencyConfig:
    """The ``idempotency=`` hook of a server interceptor, resolved at construction."""

    __slots__ = ("durations", "policy", "principal", "records", "required", "wait")

    def __init__(
        self,
        idempotency: object,
        required: bool,
        wait: Duration,
        principal: Callable[[Any], str | None] | None,
        scope: Callable[[Any], str | None] | None = None,
    ) -> None:
        self.records: IdempotencyRecords | None = None
        self.policy: rs.Policy | None = None
        #: how long calls of each method took, for the pushback of an in-progress duplicate
        self.durations = DurationHints()
        if isinstance(idempotency, IdempotencyRecords):
            self.records = idempotency
        elif idempotency is not None:
            if not isinstance(idempotency, rs.Policy):
                raise ConfigurationError(
                    "idempotency must be an rs.IdempotencyRecords (or a resilience policy), "
                    f"got {idempotency!r}"
                )
            self.policy = idempotency
        self.required = bool(required)
        self.wait = seconds(wait, "idempotency_wait")
        if scope is not None and principal is not None:
            raise ConfigurationError("pass scope= or its older name principal=, not both")
        if scope is None:
            scope = principal
        if scope is None:
            scope = default_principal
        elif not callable(scope):
            raise ConfigurationError(
                f"scope must be a callable(context) -> str | None, got {scope!r}"
            )
        self.principal = scope

    @property
    def enabled(self) -> bool:
        return self.records is not None or self.policy is not None

    def wait_now(self) -> float:
        """``wait``, bounded by the time left before the published deadline."""
        return rs.cap_to_deadline(self.wait)

    def principal_of(self, context: Any) -> str | None:
        """The caller's principal (``None``: run without deduplication)."""
        principal: object = self.principal(context)
        if principal is not None and (not isinstance(principal, str) or not principal):
            raise ConfigurationError(
                f"scope must return a non-empty str or None, got {principal!r}"
            )
        return principal

    @property
    def scope_hook(self) -> Callable[[Any], str | None] | None:
        """The principal hook :func:`enter_scope` applies (only for a policy ``idempotency=``)."""
        return self.principal_of if self.policy is not None else None


def refuse_key(context: Any) -> str | None:
    """The error for an ``idempotency-key`` sent to a method that cannot be deduplicated."""
    for k, _ in context.invocation_metadata() or ():
        if k == IDEMPOTENCY_KEY:
            return _STREAM_KEY_REFUSED
    return None


def compose_pipeline(pipeline: rs.Policy | None, idempotency: rs.Policy | None) -> rs.Policy | None:
    """The server policy: the pipeline, then the idempotency hook innermost."""
    if idempotency is None:
        return pipeline
    if pipeline is None:
        return idempotency
    return rs.Pipeline(pipeline, idempotency, name=pipeline.name)


def deadline_token(context: Any, clock: Clock, max_deadline: float | None = None) -> Any:
    """Publish the inbound deadline (``context.time_remaining()``, clamped to ``max_deadline``).

    Returns a reset token, or ``None`` when the client set no deadline.
    """
    left = context.time_remaining()
    if left is None or left > _NO_DEADLINE:
        return None
    left = clamp_inbound(max(0.0, left), max_deadline)
    return rs.publish_deadline(left, clock=clock)


def key_check(context: Any, required: bool) -> tuple[str | None, str | None]:
    """(key, error message) from the ``idempotency-key`` metadata."""
    raw = None
    count = 0
    for k, v in context.invocation_metadata() or ():
        if k == IDEMPOTENCY_KEY:
            raw = v
            count += 1
    if count == 0:
        return None, ("missing idempotency-key metadata" if required else None)
    key = valid_key(raw) if count == 1 else None
    if key is None:
        return None, "idempotency-key must be one value of 1-255 visible ASCII characters"
    return key, None


def enter_scope(
    context: Any,
    clock: Clock,
    idempotency: bool,
    required: bool,
    scope_of: Callable[[Any], str | None] | None = None,
    max_deadline: float | None = None,
) -> tuple[Any, Any, Any, str | None]:
    """Publish the deadline and the idempotency key: (tokens..., error message or None).

    With ``scope_of`` (an ``idempotency=`` policy), a call carrying a key also enters the
    caller's :class:`~resilience.idempotency.CallerScope`, so the policy's records are the
    caller's own; a caller without a principal gets no key (the policy does not deduplicate).
    """
    dl = deadline_token(context, clock, max_deadline)
    if not idempotency:
        return dl, None, None, None
    key, error = key_check(context, required)
    caller = None
    if error is None and key is not None and scope_of is not None:
        try:
            principal = scope_of(context)
        except BaseException:
            if dl is not None:
                rs.reset_deadline(dl)
            raise
        if principal is None:
            key = None
        else:
            caller = CURRENT_CALLER.set(CallerScope(principal))
    if error is not None:
        if dl is not None:
            rs.reset_deadline(dl)
        return None, None, None, error
    return dl, _KEY.set(key), caller, None


def exit_scope(tokens: tuple[Any, ...]) -> None:
    """Undo :func:`enter_scope` (tolerating a generator closed in another context)."""
    try:
        if tokens[2] is not None:
            CURRENT_CALLER.reset(tokens[2])
        if tokens[1] is not None:
            _KEY.reset(tokens[1])
        if tokens[0] is not None:
            rs.reset_deadline(tokens[0])
    except ValueError:  # pragma: no cover - closed by the garbage collector elsewhere
        pass


def mark_replayed(context: Any) -> None:
    """Add ``idempotent-replayed: true`` when the call's policy replayed a stored outcome."""
    caller = CURRENT_CALLER.get()
    if caller is not None and caller.replayed:
        context.set_trailing_metadata(((REPLAYED_KEY, "true"),))
