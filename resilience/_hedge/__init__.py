"""Hedged requests (:class:`resilience.Hedge`) and their delays."""

from ._delay import HedgeDelay, LatencyPercentile
from ._policy import MAY_HEDGE, Hedge

__all__ = ["MAY_HEDGE", "Hedge", "HedgeDelay", "LatencyPercentile"]
