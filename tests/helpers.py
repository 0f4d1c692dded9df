"""Helpers shared by the test modules: import them from here instead of redefining them.

- :class:`Boom`: the one "the call failed" exception (a plain ``Exception`` subclass that no
  policy classifies specially).
- :class:`BrokenStore`: a store whose every operation fails with ``rs.StoreError``.
- :func:`wait_until`: poll a predicate for an effect in another thread (no fixed sleeps).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import resilience as rs

__all__ = ["Boom", "BrokenStore", "wait_until"]


class Boom(Exception):
    """The failure the function under test raises."""


class BrokenStore:
    """A store that is down: every ``apply`` raises ``rs.StoreError``."""

    def __init__(self, message: str = "store down") -> None:
        self.message = message

    def apply(self, op: Any, /) -> Any:
        raise rs.StoreError(self.message)


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` every 10 ms until it is true or ``timeout`` passes; its last value.

    For effects that happen in another thread (a server, a background renewer) and signal
    nothing we could wait on; the poll interval only bounds latency, it orders nothing.
    """
    event = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return True
        event.wait(0.01)
    return bool(predicate())
