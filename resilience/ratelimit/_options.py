"""The rate limiter's parameters: validation of every option, and the bucket numbers they give.

:func:`limit_params` turns ``rate`` / ``per`` / ``burst`` / ``warmup`` / ``cold_factor`` into the
plain floats the pure core (and its Lua twin) compute with; :func:`options` validates a
:class:`~resilience.RateLimiter`'s constructor arguments (bad input raises
:class:`~resilience.ConfigurationError`) and checks both stores can represent the bucket.

Example:
    >>> limit_params(100, 1.0, warmup=10, cold_factor=3).max_tokens
    1000.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

from .._types import (
    MAX_SECONDS,
    MIN_SECONDS,
    Duration,
    optional_seconds,
    positive_int,
    positive_number,
    ratio,
    seconds,
)
from ..errors import ConfigurationError
from ..stores.base import Store

__all__ = ["LimitParams", "Options", "limit_params", "options"]

_INF = math.inf


class LimitParams(NamedTuple):
    """The numbers a bucket's transition needs (plain floats, JSON/Lua friendly).

    Attributes:
        interval: ``T = per / rate``, seconds per permit at the stable rate (``inf``: rate 0).
        burst: ``B``, the bucket size in permits.
        warning_tokens: Sentinel's ``warningToken`` (0 without warm-up).
        max_tokens: Sentinel's ``maxToken`` (0 without warm-up: warm-up is off).
        slope: extra seconds per permit per stored token above the warning line.
        cooldown: seconds an idle limiter takes to store one more token.
    """

    interval: float
    burst: float
    warning_tokens: float
    max_tokens: float
    slope: float
    cooldown: float


def limit_params(
    rate: float,
    per: float = 1.0,
    burst: float | None = None,
    warmup: float | None = None,
    cold_factor: float = 3.0,
) -> LimitParams:
    """Compute a bucket's :class:`LimitParams` (inputs already validated).

    Example:
        >>> p = limit_params(100, 1.0, warmup=10, cold_factor=3)
        >>> p.warning_tokens, p.max_tokens, round(p.interval * p.burst, 6)
        (500.0, 1000.0, 1.0)
    """
    if rate == 0:
        return LimitParams(_INF, 0.0, 0.0, 0.0, 0.0, 1.0)
    interval = per / rate
    b = max(1.0, float(rate)) if burst is None else float(burst)
    if not warmup:
        return LimitParams(interval, b, 0.0, 0.0, 0.0, 1.0)
    count = rate / per  # permits per second
    warning = warmup * count / (cold_factor - 1.0)
    max_tokens = warning + 2.0 * warmup * count / (1.0 + cold_factor)
    slope = (cold_factor - 1.0) * interval / (max_tokens - warning)
    return LimitParams(interval, b, warning, max_tokens, slope, warmup / max_tokens)


def representable(
    p: LimitParams, rate: float, per: float, cold_factor: float, what: str
) -> LimitParams:
    """``p`` if both stores can represent a bucket with these parameters, else raise.

    The emission interval ``per / rate`` must be between 1 µs (the stores' resolution: a
    shorter one is lost in the rounding of ``tat``) and ``MAX_SECONDS``, and so must the
    longest a bucket's state can last: a full backlog of cold permits plus the cool-down,
    ``burst * interval * (cold_factor + 2) + warmup`` (``burst * interval`` without warm-up).
    """
    t = p.interval
    if t == _INF:
        return p
    if not MIN_SECONDS <= t <= MAX_SECONDS:
        raise ConfigurationError(
            f"rate {rate:g} per {per:g} s{what} gives an emission interval (per / rate) of "
            f"{t:g} s; it must be between {MIN_SECONDS:g} and {MAX_SECONDS:g} seconds (at most "
            f"1,000,000 permits per second, at least one per {MAX_SECONDS:g} s)"
        )
    horizon = p.burst * t * ((cold_factor + 2.0) if p.max_tokens else 1.0)
    if p.max_tokens:
        horizon += p.cooldown * p.max_tokens
    if horizon > MAX_SECONDS:
        raise ConfigurationError(
            f"burst {p.burst:g} at {t:g} s per permit{what} keeps a bucket's state for up to "
            f"{horizon:g} s (burst * per / rate"
            + (" * (cold_factor + 2) + warmup" if p.max_tokens else "")
            + f"); it must be at most {MAX_SECONDS:g} seconds: lower burst or per, or raise rate"
        )
    return p


def window(
    rate: float, per: Duration, burst: float | None, warmup: Duration | None, cold_factor: float
) -> tuple[float, float, float | None, float | None, float]:
    """One window's validated ``(rate, per, burst, warmup, cold_factor)`` (seconds as floats)."""
    rate = positive_number(rate, "rate", allow_zero=True)
    per_s = seconds(per, "per", allow_zero=False)
    if burst is not None:
        burst = positive_number(burst, "burst")
        if rate and burst < 1:
            raise ConfigurationError(f"burst must be >= 1 permit, got {burst!r}")
    warmup_s = optional_seconds(warmup, "warmup", allow_zero=False)
    cf = positive_number(cold_factor, "cold_factor")
    if cf <= 1:
        raise ConfigurationError(f"cold_factor must be > 1, got {cold_factor!r}")
    return rate, per_s, burst, warmup_s, cf


def share(
    p: LimitParams, rate: float, per: float, warmup: float | None, cf: float, local_share: float
) -> LimitParams:
    """The parameters of this process's ``local_share`` of a window (a store outage)."""
    b = p.burst
    return representable(
        limit_params(rate * local_share, per, max(1.0, b * local_share) if rate else b, warmup, cf),
        rate * local_share,
        per,
        cf,
        f" (this process's local share, {local_share:g} of the limit)",
    )


class Options(NamedTuple):
    """A :class:`~resilience.RateLimiter`'s validated options (see its docstring)."""

    rate: float
    per: float
    burst: float | None
    warmup: float | None
    cold_factor: float
    max_wait: float
    store: Store | None
    key: Callable[..., str | None] | None
    max_keys: int
    on_store_error: Literal["open", "closed", "local"]
    local_share: float | None
    params: LimitParams
    #: the parameters of this process's share of the limit while the store fails (``"local"``)
    local_params: LimitParams


def options(
    *,
    rate: float,
    per: Duration,
    burst: float | None,
    warmup: Duration | None,
    cold_factor: float,
    max_wait: Duration,
    store: Store | None,
    key: Callable[..., str | None] | None,
    max_keys: int,
    on_store_error: Literal["open", "closed", "local"],
    instances: int | None,
    local_share: float | None,
) -> Options:
    """Validate a rate limiter's options (:class:`~resilience.ConfigurationError` otherwise).

    Example:
        >>> o = options(rate=10, per=1.0, burst=None, warmup=None, cold_factor=3.0,
        ...     max_wait=0.0, store=None, key=None, max_keys=10, on_store_error="open",
        ...     instances=None, local_share=None)
        >>> o.params.burst, o.params.interval
        (10.0, 0.1)
    """
    rate, per_s, burst, warmup_s, cf = window(rate, per, burst, warmup, cold_factor)
    max_wait_s = seconds(max_wait, "max_wait")
    if store is not None and not callable(getattr(store, "apply", None)):
        raise ConfigurationError(
            f"store must be a resilience.stores.Store (with apply()), got {store!r}"
        )
    if key is not None and not callable(key):
        raise ConfigurationError(f"key must be a callable or None, got {key!r}")
    max_keys = positive_int(max_keys, "max_keys")
    if on_store_error not in ("open", "closed", "local"):
        raise ConfigurationError(
            f"on_store_error must be 'open', 'closed' or 'local', got {on_store_error!r}"
        )
    if instances is not None and local_share is not None:
        raise ConfigurationError("give instances or local_share, not both")
    if instances is not None:
        local_share = 1.0 / positive_int(instances, "instances")
    elif local_share is not None:
        local_share = ratio(local_share, "local_share")
    if on_store_error == "local" and store is not None and local_share is None:
        raise ConfigurationError(
            "on_store_error='local' needs instances= (how many processes share the limit) "
            "or local_share= (this process's fraction of it, e.g. 0.25)"
        )
    params = representable(limit_params(rate, per_s, burst, warmup_s, cf), rate, per_s, cf, "")
    local_params = params
    if local_share is not None and local_share < 1.0 and store is not None:
        local_params = share(params, rate, per_s, warmup_s, cf, local_share)
    return Options(
        rate,
        per_s,
        burst,
        warmup_s,
        cf,
        max_wait_s,
        store,
        key,
        max_keys,
        on_store_error,
        local_share,
        params,
        local_params,
    )
