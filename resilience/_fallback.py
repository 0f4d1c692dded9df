"""Fallback: replace a failure (or an unwanted result) with a value or a handler's result."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ._policy import Emitter, Policy
from ._types import AsyncFn, ExceptionSpec, SyncFn, exception_predicate, result_predicate
from .errors import ConfigurationError
from .events import FallbackUsed, Listener, error_type

__all__ = ["Fallback"]

_MISSING: Any = object()


class Fallback(Policy):
    """Return a fallback instead of failing.

    Exactly one of ``value`` (returned as is) or ``handler`` must be given. The handler receives
    the exception (or, with ``on_result``, the rejected result) and returns the replacement; for
    async calls it may be a coroutine function. ``CancelledError`` and other non-``Exception``
    errors are never replaced.

    Args:
        on: exception type(s) or predicate selecting the failures to replace.
        value: the replacement value.
        handler: a callable ``(exception_or_result) -> replacement``.
        on_result: optional predicate over results that should be replaced too.
        name: policy name in events.
        listeners: event listeners.

    Example:
        >>> import resilience as rs
        >>> @rs.Fallback(on=rs.CircuitOpenError, value=[])
        ... def recommendations() -> list[str]:
        ...     raise rs.CircuitOpenError(policy="recs")
        >>> recommendations()
        []
    """

    kind = "fallback"

    def __init__(
        self,
        *,
        on: ExceptionSpec,
        value: Any = _MISSING,
        handler: Callable[[Any], Any] | None = None,
        on_result: Callable[[Any], bool] | None = None,
        name: str = "fallback",
        listeners: Sequence[Listener] = (),
    ) -> None:
        super().__init__(name=name, listeners=listeners)
        self._on = exception_predicate(on, "on")
        if (value is _MISSING) == (handler is None):
            raise ConfigurationError("Fallback takes exactly one of value= or handler=")
        if handler is not None and not callable(handler):
            raise ConfigurationError(f"handler must be callable, got {handler!r}")
        self._value = value
        self._handler = handler
        self._on_result = None if on_result is None else result_predicate(on_result, "on_result")

    def describe(self) -> dict[str, Any]:
        """Plain data describing the configuration."""
        return {"kind": self.kind, "name": self.name, "handler": self._handler is not None}

    def _used(self, em: Emitter, exc: BaseException | None) -> None:
        if em:
            em.emit(FallbackUsed(**em.origin(self.name), error_type=error_type(exc)))

    def _sync_handler(self) -> Callable[[Any], Any] | None:
        """The handler of a sync call: its result is the replacement, as is."""
        return self._handler

    def _async_handler(self) -> Callable[[Any], Awaitable[Any]] | None:
        """The handler of an async call: it may be a coroutine function (awaited)."""
        handler = self._handler
        if handler is None:
            return None

        async def replace(arg: Any) -> Any:
            out = handler(arg)
            if inspect.isawaitable(out):
                out = await out
            return out

        return replace

    # -- the wrappers: written once, async; the sync twin is generated ---------------------
    # twin: async _async_handler=_sync_handler
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        on, on_result, value = self._on, self._on_result, self._value
        handler = self._async_handler()

        async def fallback_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                if not on(exc):
                    raise
                self._used(em, exc)
                return value if handler is None else await handler(exc)
            if on_result is not None and on_result(result):
                self._used(em, None)
                return value if handler is None else await handler(result)
            return result

        return fallback_wrapper

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        on, on_result, value = self._on, self._on_result, self._value
        handler = self._sync_handler()

        def fallback_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                if not on(exc):
                    raise
                self._used(em, exc)
                return value if handler is None else handler(exc)
            if on_result is not None and on_result(result):
                self._used(em, None)
                return value if handler is None else handler(result)
            return result

        return fallback_wrapper

    # twin: end
