"""A claim attempt's outcome, and store access that turns any store failure into StoreError."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import StoreError
from ..stores.base import StoreOp
from ._ops import ClaimStatus
from ._scope import CURRENT_CALLER

__all__ = ["Claim", "aapply_op", "apply_op", "claim_result"]


@dataclass(slots=True)
class Claim:
    """The outcome of a claim attempt.

    Attributes:
        status: ``"claimed"`` (run the operation, then :meth:`IdempotencyRecords.complete` or
            ``release``), ``"replay"`` (``payload`` holds the stored outcome, ``None`` if it was
            not retained), ``"in_progress"``, ``"reused"``, or ``"unprotected"`` (the store
            failed and ``on_store_error="open"``: run without protection).
        key: the store key.
        owner: this claim's owner token.
        fence: the fencing token (increases with every takeover).
        payload: the stored outcome for ``"replay"``.
        retry_after: seconds left on the current owner's lease for ``"in_progress"``.
        takeover: the claim took over an expired one (its owner crashed or hung).
        lease_until: for ``"claimed"``, until when (on the records' clock) the lease is surely
            held: the start of the last successful claim or renewal plus ``lease`` (``-inf``
            once a renewal found the claim lost).
    """

    status: ClaimStatus
    key: str
    owner: str = ""
    fence: int = 0
    payload: str | None = None
    retry_after: float | None = None
    takeover: bool = False
    store: Any = None
    lease_until: float = float("-inf")


def claim_result(key: str, owner: str, result: Any, store: Any) -> Claim:
    """The :class:`Claim` of a :class:`~resilience.idempotency.ClaimOp` result."""
    status, fence, extra = result
    if status == "corrupt":
        raise StoreError(f"idempotency record {key!r} is malformed or of an unknown version")
    if status == "replay":
        caller = CURRENT_CALLER.get()
        if caller is not None:
            caller.replayed = True
        return Claim("replay", key, owner, fence, payload=extra, store=store)
    if status == "in_progress":
        return Claim("in_progress", key, owner, fence, retry_after=float(extra), store=store)
    return Claim(status, key, owner, fence, takeover=bool(extra), store=store)


def _store_failed(exc: Exception) -> StoreError:
    """The :class:`StoreError` standing for a foreign store's own error ``exc``."""
    return StoreError(f"idempotency store failed: {exc!r}")


def apply_op(store: Any, op: StoreOp[Any]) -> Any:
    """``store.apply(op)``; a foreign store's own error becomes a :class:`StoreError`."""
    try:
        return store.apply(op)
    except StoreError:
        raise
    except Exception as exc:  # a foreign store's own error type
        raise _store_failed(exc) from exc


async def aapply_op(store: Any, op: StoreOp[Any]) -> Any:
    """``await store.aapply(op)`` (``apply`` for a sync-only store); errors as :func:`apply_op`."""
    try:
        if callable(getattr(store, "aapply", None)):
            return await store.aapply(op)
        return store.apply(op)
    except StoreError:
        raise
    except Exception as exc:
        raise _store_failed(exc) from exc
