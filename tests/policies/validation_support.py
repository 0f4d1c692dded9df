"""Shared by the validation tests: the documented range of every duration parameter, and an ASGI
app that is never called.
"""

from __future__ import annotations

from typing import Any

MAX_SECONDS = 1e9  # the documented range of every duration
MIN_SECONDS = 1e-6  # ... where zero is not allowed


async def uncalled_app(scope: Any, receive: Any, send: Any) -> None:  # an ASGI app never called
    raise AssertionError("not called")
