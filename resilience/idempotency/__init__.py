"""Idempotency keys: the first call for a key runs, duplicates get its stored outcome.

The record of one key lives in a :class:`~resilience.stores.Store` and moves through a small
state machine, one pure :class:`~resilience.stores.StoreOp` per step (the Redis store mirrors
each in one Lua script)::

    absent ──claim──▶ IN_PROGRESS(owner, fence, lease_until) ──complete(owner, fence)──▶ DONE
                         │  ▲ renew(owner, fence): lease_until = now + lease            │
                         │  └ claim after lease_until: takeover, fence + 1             │ ttl
                         └──release(owner, fence)──▶ absent ◀───────────────────────────┘

* **claim** ``(key, fingerprint, owner)``: absent → IN_PROGRESS, ``"claimed"``; IN_PROGRESS
  with a live lease → ``"in_progress"``; IN_PROGRESS whose lease expired (a crashed or hung
  owner) → taken over with the next fencing token, ``"claimed"``; DONE → ``"replay"``; any state
  with a different fingerprint → ``"reused"`` (the record is left untouched).
* **renew** extends the lease while the owner runs (a heartbeat every ``lease / 3``).
* **complete** stores the outcome and starts the ``ttl`` (measured from completion); it succeeds
  only for the current owner *and* fencing token, so a late result from an owner whose lease was
  taken over cannot overwrite the new owner's.
* **release** deletes the claim (the outcome is not stored; a retry runs again).

Records and their payloads are plain JSON-compatible data (strings, numbers); what a duplicate
replays is one versioned JSON envelope, :class:`StoredOutcome` (``{"v":1,"kind":...}``: a
function's result, encoded by a codec (JSON by default, never pickle), or its stored error, an
HTTP response, a gRPC response), whichever adapter wrote it.

Delivery guarantee: exactly-once while the store keeps the record (duplicates never run
concurrently and replay the stored outcome for ``ttl``). A duplicate runs the function again only
after a failure that is not a stored outcome, an owner crash or hang past its lease, an outcome
that could not be recorded (reported by :class:`~resilience.IdempotencyOutcomeUnrecordedError`;
completion is retried while the lease is held), or the loss of the record (``ttl``, early
eviction from a full memory store, loss of the store's data); so functions with external side
effects should still be transactional or idempotent downstream.
"""

from __future__ import annotations

from ._claim import Claim
from ._codec import Codec, JSONCodec, args_fingerprint, record_key
from ._ops import ClaimOp, CompleteOp, ReleaseOp, RenewOp
from ._outcome import OUTCOME_VERSION, StoredOutcome
from ._policy import Idempotent
from ._records import IdempotencyRecords
from ._scope import (
    CURRENT_CALLER,
    MAX_BUFFERED_BYTES,
    MAX_RESPONSE_BYTES,
    BufferBudget,
    CallerScope,
    caller_scope,
)

__all__ = [
    "MAX_BUFFERED_BYTES",
    "MAX_RESPONSE_BYTES",
    "OUTCOME_VERSION",
    "BufferBudget",
    "CURRENT_CALLER",
    "CallerScope",
    "Claim",
    "ClaimOp",
    "Codec",
    "CompleteOp",
    "IdempotencyRecords",
    "Idempotent",
    "JSONCodec",
    "ReleaseOp",
    "RenewOp",
    "StoredOutcome",
    "args_fingerprint",
    "caller_scope",
    "record_key",
]
