"""A whole RPC request through the records (:meth:`IdempotencyRecords.run` / ``arun``).

The handler returns the serialized response; it is stored as a ``"grpc"``
:class:`~resilience.idempotency.StoredOutcome` and replayed as the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeAlias

from .._types import AsyncFn, SyncFn
from ..errors import (
    ConfigurationError,
    IdempotencyConflictError,
    IdempotencyInProgressError,
    IdempotencyKeyReusedError,
    StoreError,
)
from . import _renewer
from ._outcome import StoredOutcome

if TYPE_CHECKING:  # pragma: no cover
    from ._records import Claim, IdempotencyRecords

__all__ = ["AsyncHandler", "SyncHandler", "arun", "run"]

#: The handler of :meth:`IdempotencyRecords.run`: it returns the serialized response.
SyncHandler: TypeAlias = Callable[[], bytes]
#: The handler of :meth:`IdempotencyRecords.arun`: a coroutine function returning the response.
AsyncHandler: TypeAlias = Callable[[], Awaitable[bytes]]


def _request_key(
    records: IdempotencyRecords, principal: str, method: str, key: str, fingerprint: bytes
) -> tuple[str, str]:
    if not principal:
        raise ConfigurationError("principal must be a non-empty string")
    return records.key(principal, method, key), hashlib.sha256(fingerprint).hexdigest()[:32]


def _stored(records: IdempotencyRecords, out: bytes) -> str | None:
    # a response over the cap is never base64-encoded (the copy would be ~1.33x its size)
    if len(out) > records.max_response_bytes:
        return None
    return StoredOutcome("grpc", bytes(out)).encode()


def _replayed(claim: Claim) -> bytes:
    if claim.payload is None:
        raise IdempotencyConflictError(
            "the first request with this idempotency key completed but its response was "
            "not retained; it cannot be replayed"
        )
    try:
        outcome = StoredOutcome.decode(claim.payload)
    except ValueError as exc:
        raise StoreError(f"idempotency record {claim.key!r} is unreadable ({exc})") from None
    if outcome.kind != "grpc" or not isinstance(outcome.body, bytes):
        raise StoreError(
            f"idempotency record {claim.key!r} holds a {outcome.kind!r} outcome, not a response"
        )
    return outcome.body


def _refuse(claim: Claim) -> IdempotencyConflictError:
    if claim.status == "reused":
        return IdempotencyKeyReusedError(
            "the idempotency key was already used for a different request"
        )
    return IdempotencyInProgressError(
        "a request with this idempotency key is still in progress",
        retry_after=claim.retry_after,
    )


# twin: async arun=run, aclaim=claim, astart=start, arelease=release, acomplete=complete
async def arun(
    records: IdempotencyRecords,
    principal: str,
    method: str,
    key: str,
    fingerprint: bytes,
    handler: AsyncFn,
    wait: float,
) -> tuple[bytes, bool]:
    """:meth:`IdempotencyRecords.arun`: claim, run ``handler`` under a heartbeat, complete."""
    rkey, fp = _request_key(records, principal, method, key, fingerprint)
    claim = await records.aclaim(rkey, fp, wait=wait)
    if claim.status == "replay":
        return _replayed(claim), True
    if claim.status in ("in_progress", "reused"):
        raise _refuse(claim)
    if claim.status == "unprotected":
        return await handler(), False
    beat = _renewer.astart(records, claim)
    try:
        out = await handler()
    except BaseException:
        beat.stop()
        await records.arelease(claim)
        raise
    beat.stop()
    await records.acomplete(claim, _stored(records, out), size=len(out))
    return out, False


# twin: end
# twin: sync (generated from the block above by scripts/twins.py; do not edit)
def run(
    records: IdempotencyRecords,
    principal: str,
    method: str,
    key: str,
    fingerprint: bytes,
    handler: SyncFn,
    wait: float,
) -> tuple[bytes, bool]:
    """:meth:`IdempotencyRecords.run`: claim, run ``handler`` under a heartbeat, complete."""
    rkey, fp = _request_key(records, principal, method, key, fingerprint)
    claim = records.claim(rkey, fp, wait=wait)
    if claim.status == "replay":
        return _replayed(claim), True
    if claim.status in ("in_progress", "reused"):
        raise _refuse(claim)
    if claim.status == "unprotected":
        return handler(), False
    beat = _renewer.start(records, claim)
    try:
        out = handler()
    except BaseException:
        beat.stop()
        records.release(claim)
        raise
    beat.stop()
    records.complete(claim, _stored(records, out), size=len(out))
    return out, False


# twin: end
