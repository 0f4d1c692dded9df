"""Finishing a claim (:meth:`IdempotencyRecords.complete`): which outcome is retained, how long
a failed completion waits before the next attempt, and the warnings of an outcome that could
not be stored or arrived after a takeover."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import StoreError

if TYPE_CHECKING:  # pragma: no cover
    from ._claim import Claim
    from ._records import IdempotencyRecords

__all__ = [
    "COMPLETE_FIRST_DELAY",
    "COMPLETE_MAX_DELAY",
    "complete_pause",
    "lost",
    "retained",
    "unrecorded",
]

_log = logging.getLogger("resilience")

#: the back-off of a completion retried after a store failure (seconds)
COMPLETE_FIRST_DELAY = 0.02
COMPLETE_MAX_DELAY = 1.0


def retained(
    records: IdempotencyRecords, claim: Claim, payload: str | None, size: int | None
) -> str | None:
    """``payload``, or ``None`` (not retained) when it is over ``max_response_bytes``."""
    if size is None:
        if payload is None:
            return None
        size = len(payload)
    if size <= records.max_response_bytes:
        return payload
    log = _log.debug if records._warned_size else _log.warning
    records._warned_size = True  # once per records object at warning level, then debug
    log(
        "resilience: an idempotent outcome of %d bytes is over max_response_bytes=%d and "
        "was not retained; duplicates of %s will be refused, not replayed",
        size,
        records.max_response_bytes,
        claim.key,
    )
    return None


def complete_pause(
    records: IdempotencyRecords, claim: Claim, started: float, delay: float
) -> float | None:
    """How long to wait before the next completion attempt; None: the lease may be gone."""
    remaining = min(claim.lease_until, started + records.lease) - records.clock.monotonic()
    if remaining <= 0:
        return None
    return min(delay, remaining)


def unrecorded(
    records: IdempotencyRecords, exc: StoreError, attempts: int, started: float
) -> StoreError:
    """Warn that the outcome could not be stored while the lease was held; returns ``exc``."""
    _log.warning(
        "resilience: could not store an idempotent outcome (%d attempts in %.3g s, while "
        "the lease was held): %s; the record stays in progress until its lease expires, "
        "then a duplicate runs again",
        attempts,
        records.clock.monotonic() - started,
        exc,
    )
    return exc


def lost(records: IdempotencyRecords, claim: Claim) -> None:
    """Warn that the claim was taken over before its outcome was stored."""
    _log.warning(
        "resilience: idempotency claim %s was taken over before its outcome was "
        "stored (lease %.3g s expired); the late outcome was discarded",
        claim.key,
        records.lease,
    )
