"""A stdlib :mod:`logging` listener."""

from __future__ import annotations

import dataclasses
import logging

from ..events import Event

__all__ = ["LoggingListener"]


class LoggingListener:
    """Log every event as ``resilience.<kind>`` with the event's fields in ``extra``.

    Example:
        >>> import resilience as rs
        >>> retry = rs.Retry(on=OSError, listeners=[rs.instrumentation.LoggingListener()])
    """

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self._logger = logger or logging.getLogger("resilience")
        self._level = level

    def __call__(self, event: Event, /) -> None:
        """Log the event."""
        if not self._logger.isEnabledFor(self._level):
            return
        fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
        self._logger.log(
            self._level,
            "resilience.%s %s",
            event.kind,
            " ".join(f"{k}={v}" for k, v in fields.items() if v is not None),
            extra={"resilience_event": event.kind, "resilience": fields},
        )
