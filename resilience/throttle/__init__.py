"""Client-side adaptive throttling (:class:`AdaptiveThrottle`)."""

from __future__ import annotations

from ._policy import AdaptiveThrottle

__all__ = ["AdaptiveThrottle"]
