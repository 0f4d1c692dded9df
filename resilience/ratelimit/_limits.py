"""Several windows and per-key tiers: :class:`Limit`, and the :class:`Tier` a key resolves to.

A :class:`~resilience.RateLimiter` given ``limits=[Limit(...), ...]`` admits a request only if
every window admits it, and then charges all of them at once; ``limits=`` (or ``rate=``) may
also be a callable from the key to its limits (a *tier*). :func:`tier_of` validates what such
a callable returns and turns it into the parameters the pure core computes with.

Example:
    >>> per_second, per_day = Limit(rate=10, per=1), Limit(rate=10_000, per=86_400)
    >>> t = tier_of([per_second, per_day], None)
    >>> t.names, t.quotas, t.spans
    (('1s', '86400s'), (10, 10000), (1.0, 86400.0))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeAlias

from .._types import Duration
from ..errors import ConfigurationError
from ._options import LimitParams, limit_params, representable, share, window

__all__ = ["Limit", "Limits", "Tier", "TierFn", "facts", "tier_of"]


@dataclass(frozen=True)
class Limit:
    """One window of a :class:`~resilience.RateLimiter`: ``rate`` permits per ``per`` seconds.

    The per-window options of the limiter (``burst``, ``warmup``, ``cold_factor``) apply to
    this window alone; ``max_wait`` (pacing), ``cost``, ``key`` and the store are the
    limiter's, shared by its windows. Validated at construction
    (:class:`~resilience.ConfigurationError`).

    Attributes:
        rate: permits per ``per`` seconds (``0`` refuses every call of non-zero cost).
        per: the window in seconds (float or timedelta; kept as float seconds).
        burst: the bucket size in permits; default ``max(1, rate)``.
        warmup: seconds of saturation a cold window takes to reach ``rate`` (``None``: off).
        cold_factor: a cold window admits ``rate / cold_factor`` (must be > 1).
        name: the window's name in the ``RateLimit`` / ``RateLimit-Policy`` fields and in
            :attr:`Decision.windows` (default: ``per`` in seconds, e.g. ``"86400s"``).

    Example:
        >>> Limit(rate=10_000, per=86_400).name
        '86400s'
        >>> Limit(rate=-1)
        Traceback (most recent call last):
        ...
        resilience.errors.ConfigurationError: rate must be a finite number >= 0 and <= 2**53, got -1
    """

    rate: float
    per: Duration = 1.0
    burst: float | None = None
    warmup: Duration | None = None
    cold_factor: float = 3.0
    name: str = ""
    #: the bucket parameters this window computes with
    params: LimitParams = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rate, per, burst, warmup, cf = window(
            self.rate, self.per, self.burst, self.warmup, self.cold_factor
        )
        if not isinstance(self.name, str):
            raise ConfigurationError(f"name must be a string, got {self.name!r}")
        what = f" (window {self.name or f'{per:g}s'!r})"
        params = representable(limit_params(rate, per, burst, warmup, cf), rate, per, cf, what)
        for attr, value in (
            ("rate", rate),
            ("per", per),
            ("burst", burst),
            ("warmup", warmup),
            ("cold_factor", cf),
            ("name", self.name or f"{per:g}s"),
            ("params", params),
        ):
            object.__setattr__(self, attr, value)


#: What ``limits=`` (or a tier callable) gives: one window, or several.
Limits: TypeAlias = Limit | Sequence[Limit]
#: A tier: the key's limits (the global bucket, without a key, is looked up as ``""``).
TierFn: TypeAlias = Callable[[str], Limits]


class Tier(NamedTuple):
    """The windows one key is limited by, as the core computes with them.

    Attributes:
        limits: the windows.
        params: each window's bucket parameters.
        local: each window's parameters for this process's share (a store outage).
        names: each window's name.
        quotas: each window's quota (``RateLimit-Policy: q=``), whole permits.
        spans: seconds each drained window takes to refill (``RateLimit-Policy: w=``).
        max_cost: the largest cost every window can ever admit (the smallest burst).
    """

    limits: tuple[Limit, ...]
    params: tuple[LimitParams, ...]
    local: tuple[LimitParams, ...]
    names: tuple[str, ...]
    quotas: tuple[int, ...]
    spans: tuple[float, ...]
    max_cost: float


def tier_of(limits: object, local_share: float | None) -> Tier:
    """Validate ``limits`` (a :class:`Limit` or a non-empty sequence of them) as a :class:`Tier`.

    Example:
        >>> tier_of([], None)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        resilience.errors.ConfigurationError: limits must be a Limit or a non-empty sequence ...
    """
    items = (limits,) if isinstance(limits, Limit) else limits
    if (
        isinstance(items, str | bytes)
        or not isinstance(items, Sequence)
        or not items
        or not all(isinstance(x, Limit) for x in items)
    ):
        raise ConfigurationError(
            f"limits must be a Limit or a non-empty sequence of Limit, got {limits!r}"
        )
    ws: tuple[Limit, ...] = tuple(items)
    params = tuple(w.params for w in ws)
    local = params
    if local_share is not None and local_share < 1.0:
        local = tuple(
            share(w.params, w.rate, _f(w.per) or 0.0, _f(w.warmup), w.cold_factor, local_share)
            for w in ws
        )
    quotas, spans = facts(params)
    costs = [p.burst for w, p in zip(ws, params, strict=True) if w.rate]
    return Tier(
        ws,
        params,
        local,
        tuple(w.name for w in ws),
        quotas,
        spans,
        min(costs) if costs else math.inf,
    )


def facts(params: tuple[LimitParams, ...]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Each window's quota (whole permits) and refill time in seconds (``RateLimit-Policy``)."""
    quotas = tuple(int(p.burst) for p in params)
    return quotas, tuple(0.0 if p.interval == math.inf else p.burst * p.interval for p in params)


def _f(value: Duration | None) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
