"""Instrumentation listeners: OpenTelemetry and stdlib logging.

Neither imports its library until instantiated, so ``import resilience`` stays light.
"""

from __future__ import annotations

from .logging import LoggingListener
from .otel import OpenTelemetry

__all__ = ["LoggingListener", "OpenTelemetry"]
