"""Policy refusals of a client interceptor, in gRPC's own form: a ``grpc.RpcError``.

An open breaker, a local rate limiter or a full bulkhead in a client interceptor's pipeline
refuses a call before it is sent. By default the caller gets a :class:`ResilienceRpcError`:
an ``UNAVAILABLE`` ``grpc.RpcError`` (a ``grpc.Call`` and ``grpc.Future`` for sync channels, a
``grpc.aio.AioRpcError`` for aio ones) whose trailing metadata carry the refusal's retry delay
as ``grpc-retry-pushback-ms``, so code written against grpc (``except grpc.RpcError``,
``exc.code()``, channel-level retry logic) handles it like any unavailable backend. It is also
an instance of the refusal's own class (``except rs.CircuitOpenError`` keeps working) and
carries the original as ``resilience_error``.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import grpc
from grpc import aio

import resilience as rs

from ._status import PUSHBACK_KEY, format_pushback

__all__ = ["ResilienceRpcError", "native_refusal"]

_NO_METADATA = aio.Metadata()

if TYPE_CHECKING:
    _Future = grpc.Future[Any]
else:
    _Future = grpc.Future


class ResilienceRpcError(aio.AioRpcError, grpc.Call, _Future):
    """A client interceptor's policy refusal as a ``grpc.RpcError`` (status ``UNAVAILABLE``).

    Build it with :func:`native_refusal`; the instance is also of the refusal's class.

    Attributes:
        resilience_error: the refusal a policy raised (``CircuitOpenError``,
            ``RateLimitedError``, ``BulkheadFullError``, ...).

    Example:
        >>> import grpc, resilience as rs
        >>> err = native_refusal(rs.RateLimitedError("slow down", retry_after=0.25))
        >>> err.code().name, err.details(), dict(err.trailing_metadata())
        ('UNAVAILABLE', 'slow down', {'grpc-retry-pushback-ms': '250'})
        >>> isinstance(err, grpc.RpcError), isinstance(err, rs.RateLimitedError)
        (True, True)
    """

    resilience_error: rs.RejectedError
    _trailing: aio.Metadata

    # grpc.Call / AioRpcError: the final status, known at once
    def code(self) -> grpc.StatusCode:
        """``UNAVAILABLE``: the call was not sent."""
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        """The refusal's message."""
        return str(self.resilience_error.args[0]) if self.resilience_error.args else ""

    def initial_metadata(self) -> Any:  # an aio.Metadata (a sequence of pairs for sync)
        """Empty: nothing was received."""
        return _NO_METADATA

    def trailing_metadata(self) -> Any:
        """``grpc-retry-pushback-ms`` when the refusal knows its retry delay, else empty."""
        return self._trailing

    def debug_error_string(self) -> str:
        """The refusal's class and message."""
        return repr(self.resilience_error)

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
        """Raise this error (the call failed)."""
        raise self

    def exception(self, timeout: float | None = None) -> ResilienceRpcError:
        """This error."""
        return self

    def traceback(self, timeout: float | None = None) -> types.TracebackType | None:
        """This error's traceback."""
        return self.__traceback__

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        """Call ``fn(self)`` now (the future is done)."""
        fn(self)

    def __str__(self) -> str:
        return str(self.resilience_error)  # the message logs and server mappings always showed

    def __repr__(self) -> str:
        return f"<ResilienceRpcError UNAVAILABLE of {self.resilience_error!r}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (native_refusal, (self.resilience_error,))


_CLASSES: dict[type, type[ResilienceRpcError]] = {}


def _class_for(kind: type[rs.RejectedError]) -> type[ResilienceRpcError]:
    cls = _CLASSES.get(kind)
    if cls is None:
        cls = cast(
            "type[ResilienceRpcError]",
            type(f"ResilienceRpcError[{kind.__name__}]", (ResilienceRpcError, kind), {}),
        )
        cls.__module__ = __name__
        if len(_CLASSES) < 256:  # refusal classes are few; never grow without bound
            _CLASSES[kind] = cls
    return cls


def native_refusal(error: rs.RejectedError) -> ResilienceRpcError:
    """``error`` as a :class:`ResilienceRpcError` (also an instance of ``type(error)``).

    Its attributes (``policy``, ``retry_after``, ...) are the refusal's; ``__cause__`` is the
    refusal itself.

    Example:
        >>> import resilience as rs
        >>> err = native_refusal(rs.CircuitOpenError("open", policy="billing", retry_after=2))
        >>> err.policy, err.retry_after, err.resilience_error.policy
        ('billing', 2, 'billing')
    """
    err = Exception.__new__(_class_for(type(error)))
    err.__dict__.update(error.__dict__)
    err.args = error.args
    err.resilience_error = error
    after = error.retry_after
    err._trailing = (
        aio.Metadata((PUSHBACK_KEY, format_pushback(after)))
        if isinstance(after, int | float) and after >= 0
        else _NO_METADATA
    )
    err.__cause__ = error
    return err
