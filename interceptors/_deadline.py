"""Inbound deadlines of the server adapters (ASGI middleware, gRPC server interceptors)."""

from __future__ import annotations

from resilience._types import Duration, optional_seconds

__all__ = ["DEFAULT_MAX_DEADLINE", "check_max_deadline", "clamp_inbound"]

#: Default ``max_deadline`` of the server adapters: no client may set a deadline further away
#: than five minutes.
DEFAULT_MAX_DEADLINE = 300.0


def check_max_deadline(value: Duration | None) -> float | None:
    """Validate a server adapter's ``max_deadline=`` (seconds > 0, or ``None``: no clamp)."""
    return optional_seconds(value, "max_deadline", allow_zero=False)


def clamp_inbound(timeout: float, max_deadline: float | None) -> float:
    """The timeout a server publishes for a client-chosen ``timeout``: at most ``max_deadline``.

    The client picks its deadline, so a server adapter never lets it reach further than
    ``max_deadline`` (a validated :func:`check_max_deadline` value; ``None``: unclamped).

    Example:
        >>> clamp_inbound(1e12, 300.0), clamp_inbound(2.5, 300.0), clamp_inbound(1e12, None)
        (300.0, 2.5, 1000000000000.0)
    """
    if max_deadline is not None and timeout > max_deadline:
        return max_deadline
    return timeout
