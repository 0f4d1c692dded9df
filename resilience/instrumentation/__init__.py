"""Instrumentation listeners: OpenTelemetry, stdlib logging, and the live state behind the
dashboard (:class:`Live`, :class:`Meter`, :class:`Fleet`).

None imports its library until instantiated, so ``import resilience`` stays light.
"""

from __future__ import annotations

from ._fleet import Fleet, Publisher, merge
from ._live import Live, default_live
from ._meter import Meter
from .logging import LoggingListener
from .otel import OpenTelemetry

__all__ = [
    "Fleet",
    "Live",
    "LoggingListener",
    "Meter",
    "OpenTelemetry",
    "Publisher",
    "default_live",
    "merge",
]
