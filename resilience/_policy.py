"""The policy base: decorator, ``.call``/``.acall`` and composition.

Design ("permit-and-record primitives"): every policy keeps its decisions in plain
methods shared by sync and async callers (what to do after a failure, whether a permit is
granted, how an outcome is recorded) and provides two thin wrappers, ``wrap_sync`` and
``wrap_async`` (the public extension hooks), that drive those decisions around the next inner
callable. Wrappers are built once, when a function is decorated or a pipeline is composed, so a
call pays only for the closures it runs through: no per-call allocation of state objects,
generators or futures.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar, cast

from ._types import P, T, check_listeners, check_name, qualname
from .errors import ConfigurationError, RejectedError
from .events import Event, Listener, Origin, emit

__all__ = [
    "Emitter",
    "Policy",
    "chain_of",
    "function_identity",
    "own_refusal",
    "refusal",
    "refused_by_policy",
    "spent",
]

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R", bound=RejectedError)

#: The attribute linking a decorated function to its composition (see :func:`chain_of`).
_CHAIN_ATTR = "__resilience_chain__"


def function_identity(fn: object) -> str:
    """A callable's identity that is the same in every process running the same code.

    ``"module:qualname"`` of the function (of the wrapped function for a
    :func:`functools.partial`); the ``__mp_main__`` module of a ``multiprocessing`` child is
    the parent's ``__main__``. Never an ``id()`` or anything that changes between runs.

    Example:
        >>> import json
        >>> function_identity(json.dumps)
        'json:dumps'
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    module = getattr(fn, "__module__", None) or type(fn).__module__
    if module == "__mp_main__":
        module = "__main__"
    return f"{module}:{qualname(fn)}"


@dataclass(frozen=True, slots=True)
class Emitter:
    """Where a wrapped policy's events go: its listeners plus the enclosing pipelines'.

    A policy's :meth:`Policy.wrap_sync` / :meth:`Policy.wrap_async` receive one; it is built
    by the library (never construct one yourself).

    ``function`` is the decorated function's :func:`function_identity` (``""`` when the
    operation is not a Python function, e.g. an RPC method); ``operation`` is its
    low-cardinality telemetry name.
    ``chain`` identifies the composition the policy is part of (every policy of one pipeline,
    and policies stacked on one function, share it): a refusal stamped with it by
    :func:`refusal` is recognised by the policies around it (:func:`own_refusal`).
    """

    listeners: tuple[Listener, ...]
    pipeline: str | None
    operation: str
    function: str = ""
    chain: object = field(default=None, compare=False)

    def __bool__(self) -> bool:
        return bool(self.listeners)

    def emit(self, event: Event) -> None:
        """Deliver ``event`` to the listeners (a listener's exception is logged, not raised)."""
        emit(self.listeners, event)

    def origin(self, policy: str) -> Origin:
        """The identity fields of an event of ``policy`` here, to build it with::

            em.emit(RetryScheduled(**em.origin(self.name), attempt=2, delay=0.1, reason="result"))

        (the only place that spells ``pipeline=`` and ``operation=``; the event's own fields
        stay type-checked).
        """
        return {"policy": policy, "pipeline": self.pipeline, "operation": self.operation}

    def refuse(self, exc: R) -> R:
        """Stamp ``exc``, a refusal your policy is about to raise, as refused before the
        protected function ran (see :func:`refused_by_policy`); returns it for ``raise``."""
        exc._chain = self.chain
        return exc


def chain_of(fn: object) -> object:
    """The composition token of policies wrapping ``fn``: the innermost protected callable.

    A function decorated by a policy carries the token of its composition, so a policy applied
    on top of it (another decorator, or ``.call`` on the decorated function) joins the same
    composition; any other callable starts a new one.
    """
    return getattr(fn, _CHAIN_ATTR, fn)


def refusal(exc: R, em: Emitter) -> R:
    """Stamp a refusal raised by a policy's wrapper with its composition (``em.chain``).

    The policies around it then know the call was refused before it reached the protected
    function: breakers and budgets do not learn from it, outer limiters refund its permits.
    """
    exc._chain = em.chain
    return exc


def spent(exc: RejectedError) -> None:
    """Unstamp a refusal that ends a call which already reached the protected function (an
    earlier attempt of a :class:`resilience.Retry` ran): for the policies around, it is that
    call's outcome, not a refused call (outer limiters keep their permits)."""
    exc._chain = None


def own_refusal(exc: BaseException, chain: object) -> bool:
    """Whether ``exc`` is a refusal by a policy of the composition ``chain`` (see
    :func:`refusal`): a :class:`~resilience.RejectedError` raised by a policy inside the
    caller, before the protected function ran. A ``RejectedError`` raised by the protected
    function itself (an inner call's refusal, or one it constructed) is not."""
    return chain is not None and isinstance(exc, RejectedError) and exc._chain is chain


def refused_by_policy(exc: BaseException) -> bool:
    """Whether ``exc`` is a refusal stamped by some policy's wrapper (of any composition): the
    work it guarded never ran. For callers outside every composition (an adapter that took
    permits itself) deciding whether to give them back; a refusal that ends a call which did
    run (a :class:`resilience.Retry` gave up) is not stamped.

    Example:
        >>> import resilience as rs
        >>> gate = rs.Bulkhead("one", max_concurrent=1)
        >>> def inner() -> None:
        ...     gate.call(lambda: None)  # the slot is taken: refused
        >>> try:
        ...     gate.call(inner)
        ... except rs.BulkheadFullError as exc:
        ...     rs.refused_by_policy(exc), rs.refused_by_policy(ValueError())
        (True, False)
    """
    return isinstance(exc, RejectedError) and exc._chain is not None


class Policy:
    """Base class of every policy and of :class:`resilience.Pipeline`.

    A policy decorates sync and async functions (keeping their signature), and runs one call
    with :meth:`call` / :meth:`acall`. Policy objects hold configuration and shared state only;
    they are safe to share across threads and tasks.
    """

    kind: ClassVar[str] = "policy"
    name: str
    listeners: tuple[Listener, ...]

    def __init__(self, *, name: str, listeners: Sequence[Listener] = ()) -> None:
        self.name = check_name(name)
        self.listeners = check_listeners(listeners)

    # -- to implement ------------------------------------------------------------------------
    def wrap_sync(self, fn: Callable[..., Any], em: Emitter) -> Callable[..., Any]:
        """Return a callable running the sync ``fn`` under this policy (the extension hook).

        Called once per decorated function (or :meth:`wrap`, or pipeline composition), never
        per call: do the per-function work here and keep the returned closure lean. ``em``
        says where events go (:meth:`Emitter.emit`) and stamps refusals (:meth:`Emitter.refuse`).
        See "Writing your own policy" in the docs for a complete example.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement wrap_sync(fn, em)")

    def wrap_async(
        self, fn: Callable[..., Awaitable[Any]], em: Emitter
    ) -> Callable[..., Awaitable[Any]]:
        """Return a coroutine function awaiting ``fn`` under this policy (the async hook)."""
        raise NotImplementedError(f"{type(self).__name__} must implement wrap_async(fn, em)")

    # the internal names of the hooks, which the circuit breaker, rate limiter and Idempotent
    # still override directly (the same contract)
    def _wrap_sync(self, fn: Callable[..., Any], em: Emitter) -> Callable[..., Any]:
        return self.wrap_sync(fn, em)

    def _wrap_async(
        self, fn: Callable[..., Awaitable[Any]], em: Emitter
    ) -> Callable[..., Awaitable[Any]]:
        return self.wrap_async(fn, em)

    def describe(self) -> dict[str, Any]:
        """Plain data describing this policy's configuration (for tests and docs)."""
        return {"kind": self.kind, "name": self.name}

    # -- shared machinery --------------------------------------------------------------------
    def _emitter(self, outer: Emitter | None, fn: object) -> Emitter:
        if outer is None:
            return Emitter(
                self.listeners, None, qualname(fn), function_identity(fn), chain=chain_of(fn)
            )
        if not self.listeners:
            return outer
        return Emitter(
            self.listeners + outer.listeners,
            outer.pipeline,
            outer.operation,
            outer.function,
            chain=outer.chain,
        )

    def _compose_sync(self, fn: Callable[..., Any], outer: Emitter | None) -> Callable[..., Any]:
        return self._wrap_sync(fn, self._emitter(outer, fn))

    def _compose_async(
        self, fn: Callable[..., Awaitable[Any]], outer: Emitter | None
    ) -> Callable[..., Awaitable[Any]]:
        return self._wrap_async(fn, self._emitter(outer, fn))

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorate a sync or async function.

        Example:
            >>> import resilience as rs
            >>> @rs.Retry(on=ConnectionError, attempts=3)
            ... def fetch() -> str:
            ...     return "data"
            >>> fetch()
            'data'
        """
        return self._decorate(fn, None)

    def wrap(self, fn: Callable[P, T], /, *, operation: str | None = None) -> Callable[P, T]:
        """``fn`` (a sync or a coroutine function) running under this policy, for adapters.

        The same as decorating ``fn`` (``policy(fn)``), with the operation named explicitly:
        events carry ``operation`` (a low-cardinality name such as ``"GET api.example.com"``
        or an RPC method) instead of ``fn``'s qualified name, and an
        :class:`resilience.Idempotent` inside without a ``namespace=`` keeps its records under
        it. Wrap once per operation and reuse the result: building it is the costly part. A
        coroutine function (``inspect.iscoroutinefunction``) is wrapped for ``await``; wrapping
        a wrapped function joins its composition, like stacked decorators. ``fn`` itself is
        never modified.

        Example:
            >>> import resilience as rs
            >>> seen = []
            >>> policy = rs.Retry(on=ConnectionError, attempts=2, listeners=[seen.append])
            >>> def send(n: int) -> int:
            ...     if not seen:
            ...         raise ConnectionError("reset")
            ...     return n * 2
            >>> call = policy.wrap(send, operation="POST /orders")
            >>> call(21), seen[0].operation
            (42, 'POST /orders')
        """
        em: Emitter | None = None
        if operation is not None:
            if not isinstance(cast(object, operation), str) or not operation:
                raise ConfigurationError(f"operation must be a non-empty str, got {operation!r}")
            em = replace(self._emitter(None, fn), operation=operation, function="")
        return self._decorate(fn, em)

    def _decorate(self, fn: Callable[P, T], em: Emitter | None) -> Callable[P, T]:
        if not callable(fn):
            raise ConfigurationError(f"{type(self).__name__} decorates callables, got {fn!r}")
        if em is None:
            em = self._emitter(None, fn)
        if inspect.iscoroutinefunction(fn):
            awrapped = self._wrap_async(fn, em)
            if awrapped is fn:  # a no-op composition: never mutate the user's function

                async def awrapped(*args: Any, **kwargs: Any) -> Any:
                    return await fn(*args, **kwargs)

            awrapped = functools.wraps(fn)(awrapped)
            setattr(awrapped, _CHAIN_ATTR, chain_of(fn))  # stacked decorators: one composition
            return cast(Callable[P, T], awrapped)
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise ConfigurationError(
                f"{type(self).__name__} cannot decorate generator functions ({qualname(fn)}): "
                "their body runs after the call returns"
            )
        wrapped = self._wrap_sync(fn, em)
        if wrapped is fn:

            def wrapped(*args: Any, **kwargs: Any) -> Any:
                return fn(*args, **kwargs)

        wrapped = functools.wraps(fn)(wrapped)
        setattr(wrapped, _CHAIN_ATTR, chain_of(fn))
        return cast(Callable[P, T], wrapped)

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` (a sync function) under this policy.

        Example:
            >>> import resilience as rs
            >>> rs.Timeout(5).call(sum, [1, 2, 3])
            6
        """
        result: T = self._compose_sync(fn, None)(*args, **kwargs)
        return result

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` (an async function) under this policy.

        Example:
            >>> import asyncio, resilience as rs
            >>> async def answer() -> int:
            ...     return 42
            >>> asyncio.run(rs.Timeout(1).acall(answer))
            42
        """
        result: T = await self._compose_async(fn, None)(*args, **kwargs)
        return result

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "kind")
        return f"{type(self).__name__}({fields})"
