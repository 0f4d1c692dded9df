"""What a chaos policy injects into a sync client call, shaped like a real attempt's outcome.

A sync channel's attempt returns a finished ``grpc.Call`` (a unary response) or a response
iterator that is a ``grpc.Call`` (a streaming response): an ``rs.chaos.Outcome`` value is
wrapped into one, so the caller gets it from ``stub.Method(...)``, ``.with_call(...)``,
``.future()`` or the stream as it would get a server's answer.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

__all__ = ["InjectedCall", "injected_stream"]

if TYPE_CHECKING:
    _Future = grpc.Future[Any]
else:
    _Future = grpc.Future


class InjectedCall(grpc.Call, _Future):
    """A finished, successful call whose response is ``value`` (status ``OK``, no metadata);
    with ``messages``, also the iterator of a streaming response's remaining messages.

    Example:
        >>> import grpc
        >>> call = InjectedCall(b"canned")
        >>> call.result(), call.code(), call.details(), call.trailing_metadata(), call.done()
        (b'canned', <StatusCode.OK: (0, 'ok')>, '', (), True)
    """

    def __init__(self, value: Any, messages: Iterator[Any] | None = None) -> None:
        self._value = value
        self._messages = messages

    # a streaming response's iterator
    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._messages is None:
            raise TypeError("a unary call's response is not iterable")
        return next(self._messages)

    # grpc.Call: the status, known at once
    def code(self) -> grpc.StatusCode:
        """``OK``."""
        return grpc.StatusCode.OK

    def details(self) -> str:
        """Empty."""
        return ""

    def initial_metadata(self) -> Any:
        """Empty."""
        return ()

    def trailing_metadata(self) -> Any:
        """Empty."""
        return ()

    def is_active(self) -> bool:
        """``False``: the call is over."""
        return False

    def time_remaining(self) -> Any:
        """``None``: the call is over."""
        return None

    def cancel(self) -> bool:
        """``False``: the call is over."""
        return False

    def add_callback(self, callback: Any) -> bool:
        """``False``: the call is over (the callback is not registered)."""
        return False

    # grpc.Future, done
    def cancelled(self) -> bool:
        """``False``."""
        return False

    def running(self) -> bool:
        """``False``."""
        return False

    def done(self) -> bool:
        """``True``."""
        return True

    def result(self, timeout: float | None = None) -> Any:
        """The injected response."""
        return self._value

    def exception(self, timeout: float | None = None) -> Exception | None:
        """``None``: the call succeeded."""
        return None

    def traceback(self, timeout: float | None = None) -> types.TracebackType | None:
        """``None``."""
        return None

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        """Call ``fn(self)`` now (the future is done)."""
        fn(self)


def injected_stream(value: object, end: object) -> tuple[InjectedCall, Any]:
    """A streaming attempt's ``(call, first message)`` for an injected ``value``: the response
    messages (any iterable but ``bytes`` / ``str``), or one message; ``end`` when there are
    none.

    Example:
        >>> call, first = injected_stream([b"a", b"b"], end=None)
        >>> first, list(call)
        (b'a', [b'b'])
    """
    if isinstance(value, Iterable) and not isinstance(value, bytes | str):
        messages: Iterator[Any] = iter(value)
    else:
        messages = iter((value,))
    first = next(messages, end)
    return InjectedCall(None, messages), first
