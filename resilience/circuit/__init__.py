"""Circuit breakers (the package; the breaker lives in ``_breaker.py``)."""

from ._breaker import CircuitBreaker, CircuitMetrics, CircuitState

__all__ = ["CircuitBreaker", "CircuitMetrics", "CircuitState"]
