"""Durable delivery: :class:`Outbox` (``rs.delivery.Outbox``), see ``docs/delivery.md``.

The rooms: ``_ops`` (the pure state machine and its Lua twins) and ``_outbox`` (the outbox,
its workers and what they hand to a handler); ``_sql`` the transactional outbox on SQLAlchemy
(which is imported only when one is made).
"""

from __future__ import annotations

from ._outbox import DeadLetter, Delivery, DeliveryState, DeliveryStatus, Outbox
from ._sql import DuplicateDeliveryError, SqlOutbox

__all__ = [
    "DeadLetter",
    "Delivery",
    "DeliveryState",
    "DeliveryStatus",
    "DuplicateDeliveryError",
    "Outbox",
    "SqlOutbox",
]
