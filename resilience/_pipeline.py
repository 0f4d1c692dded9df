"""Pipelines: policies composed outermost-first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._policy import Emitter, Policy, chain_of, function_identity
from ._types import AsyncFn, SyncFn, qualname
from .errors import ConfigurationError
from .events import Listener

__all__ = ["Pipeline"]


class Pipeline(Policy):
    """Compose policies; the first one is the outermost.

    ``Pipeline(a, b, c).call(fn)`` runs ``a(b(c(fn)))``. The canonical order is::

        Fallback → Timeout(total) → Retry → CircuitBreaker → RateLimiter / Bulkhead
        → Timeout(attempt)

    Composition happens once per decorated function, so a call pays only for the policies'
    own work. A pipeline's listeners receive the events of every policy inside it, tagged with
    the pipeline's name. Pipelines nest.

    Args:
        *policies: the policies, outermost first.
        name: the pipeline name (``resilience.pipeline`` attribute in telemetry).
        listeners: listeners for every event raised inside the pipeline.

    Example:
        >>> import resilience as rs
        >>> clock = rs.testing.FakeClock()
        >>> pipeline = rs.Pipeline(
        ...     rs.Fallback(on=ValueError, value="cached"),
        ...     rs.Retry(on=ValueError, attempts=2, backoff=rs.backoff.constant(1), clock=clock),
        ...     name="lookup",
        ... )
        >>> @pipeline
        ... def lookup() -> str:
        ...     raise ValueError("down")
        >>> lookup(), clock.sleeps
        ('cached', [1.0])
        >>> [p["kind"] for p in pipeline.describe()["policies"]]
        ['fallback', 'retry']
    """

    kind = "pipeline"

    def __init__(
        self, *policies: Policy, name: str = "pipeline", listeners: Sequence[Listener] = ()
    ) -> None:
        super().__init__(name=name, listeners=listeners)
        for p in policies:
            if not isinstance(p, Policy):
                raise ConfigurationError(
                    f"Pipeline takes resilience policies, got {p!r}"
                    + (" (a list? unpack it: Pipeline(*policies))" if isinstance(p, list) else "")
                )
        self.policies: tuple[Policy, ...] = tuple(policies)

    def describe(self) -> dict[str, Any]:
        """The composition as plain data, outermost first."""
        return {
            "kind": self.kind,
            "name": self.name,
            "policies": [p.describe() for p in self.policies],
        }

    def _emitter(self, outer: Emitter | None, fn: object) -> Emitter:
        if outer is None:
            return Emitter(
                self.listeners, self.name, qualname(fn), function_identity(fn), chain=chain_of(fn)
            )
        chain = outer.chain if outer.chain is not None else chain_of(fn)
        return Emitter(
            self.listeners + outer.listeners,
            outer.pipeline,
            outer.operation,
            outer.function,
            chain=chain,
        )

    # twin: async _compose_async=_compose_sync
    def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        """``fn`` under every policy of the pipeline, the first one outermost."""
        for p in reversed(self.policies):
            fn = p._compose_async(fn, em)
        return fn

    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        """``fn`` under every policy of the pipeline, the first one outermost."""
        for p in reversed(self.policies):
            fn = p._compose_sync(fn, em)
        return fn

    # twin: end
