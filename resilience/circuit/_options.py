"""The breaker's parameters: validation and their translation into the core's units (private).

:func:`options` checks every argument of :class:`resilience.CircuitBreaker` (bad input raises
:class:`resilience.ConfigurationError`) and returns an :class:`Options`: the validated public
values plus the :class:`~resilience.circuit._core.Config` the state machine runs on, the store
TTL and the packed configuration the Lua twin reads.

Example:
    >>> from resilience.circuit._options import options
    >>> o = options(failure_count=5)
    >>> o.min_calls, o.cfg.failure_count, o.cfg.open_us
    (1, 5, (30000000,))
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .._clock import RandomLike, resolve_random
from .._types import (
    MAX_SECONDS,
    Duration,
    ExceptionSpec,
    exception_predicate,
    positive_int,
    ratio,
    result_predicate,
    seconds,
)
from ..errors import ConfigurationError
from ..stores.base import Store
from . import _core as core

__all__ = ["US", "Options", "lua_config", "options"]

US = 1_000_000.0  # microseconds per second: the core's time unit
MAX_BUCKETS = 1000  # the state (3 numbers per bucket) is read and written by every decision
OPEN_TABLE = 32  # dynamic open durations are tabulated for this many consecutive openings
STREAK_TTL_S = 86400.0  # a stored failure streak survives this long without any decision


@dataclass(frozen=True, slots=True)
class Options:
    """A breaker's validated parameters (seconds), its core configuration (µs) and its store
    settings (``ttl_s``: the TTL of a stored state; ``lua``: the packed configuration)."""

    failure_ratio: float | None
    failure_count: int | None
    consecutive_failures: int | None
    slow_call_ratio: float | None
    slow_call_duration: float | None
    min_calls: int
    window: float
    buckets: int
    open_for: Any
    half_open_calls: int
    half_open_timeout: float
    on: Callable[[BaseException], bool]
    on_result: Callable[[Any], bool] | None
    count_rejections: bool
    store: Store | None
    on_store_error: Literal["local", "open", "closed"]
    cfg: core.Config
    ttl_s: float
    lua: bytes


def open_table(open_for: object, rnd: RandomLike) -> tuple[int, ...]:
    """``open_for`` (seconds, or a backoff schedule) as the core's table of open durations."""
    delay = getattr(open_for, "delay", None)
    if callable(delay):
        out: list[int] = []
        prev: float | None = None
        for n in range(1, OPEN_TABLE + 1):
            try:
                d = float(delay(n, prev, rnd))
            except (TypeError, ValueError, OverflowError) as exc:
                raise ConfigurationError(
                    f"open_for schedule failed for opening {n}: {exc}"
                ) from None
            if not 0 <= d <= MAX_SECONDS:  # NaN fails too
                raise ConfigurationError(
                    f"open_for schedule produced an invalid duration {d!r} for opening {n}: "
                    f"open durations must be between 0 and {MAX_SECONDS:g} seconds"
                )
            prev = d
            out.append(max(1, round(d * US)))
        while len(out) > 1 and out[-1] == out[-2]:
            out.pop()
        return tuple(out)
    try:
        return (round(seconds(open_for, "open_for", allow_zero=False) * US),)  # type: ignore[arg-type]
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{exc} (open_for also accepts a resilience.backoff schedule)"
        ) from None


def lua_config(cfg: core.Config, ttl_s: float) -> bytes:
    """The configuration as the Lua twin reads it (``ARGV[2]`` of ``breaker.lua``)."""
    return struct.pack(
        f"<{11 + len(cfg.open_us)}d",
        cfg.failure_ratio,
        cfg.failure_count,
        cfg.slow_call_ratio,
        cfg.min_calls,
        cfg.buckets,
        cfg.bucket_us,
        cfg.half_open_calls,
        cfg.half_open_timeout_us,
        cfg.bad_mask,
        round(ttl_s * US),
        cfg.consecutive_failures,
        *cfg.open_us,
    )


def options(
    *,
    failure_ratio: float | None = None,
    failure_count: int | None = None,
    consecutive_failures: int | None = None,
    slow_call_ratio: float | None = None,
    slow_call_duration: Duration | None = None,
    min_calls: int | None = None,
    window: Duration = 60.0,
    buckets: int = 10,
    open_for: Any = 30.0,
    half_open_calls: int = 1,
    half_open_timeout: Duration | None = None,
    on: ExceptionSpec = Exception,
    on_result: Callable[[Any], bool] | None = None,
    count_rejections: bool = False,
    store: Store | None = None,
    on_store_error: Literal["local", "open", "closed"] = "local",
    random: RandomLike | None = None,
) -> Options:
    """Validate :class:`resilience.CircuitBreaker`'s arguments (see its documentation)."""
    if (
        failure_ratio is None
        and failure_count is None
        and consecutive_failures is None
        and slow_call_ratio is None
    ):
        raise ConfigurationError(
            "CircuitBreaker needs at least one threshold: failure_ratio, failure_count, "
            "consecutive_failures or slow_call_ratio"
        )
    f_ratio = None if failure_ratio is None else ratio(failure_ratio, "failure_ratio")
    f_count = None if failure_count is None else positive_int(failure_count, "failure_count")
    c_fails = (
        None
        if consecutive_failures is None
        else positive_int(consecutive_failures, "consecutive_failures")
    )
    if c_fails is not None:
        if failure_ratio is not None or failure_count is not None:
            raise ConfigurationError(
                "consecutive_failures counts failures since the last success; it cannot be "
                "combined with failure_ratio or failure_count, which count them in the window"
            )
        if min_calls is not None and slow_call_ratio is None:
            raise ConfigurationError(
                "min_calls has no effect with consecutive_failures (a streak opens the "
                "breaker whatever the number of calls); remove it"
            )
    s_ratio = None if slow_call_ratio is None else ratio(slow_call_ratio, "slow_call_ratio")
    if slow_call_ratio is not None and slow_call_duration is None:
        raise ConfigurationError("slow_call_ratio needs slow_call_duration (seconds)")
    if slow_call_duration is not None and slow_call_ratio is None:
        raise ConfigurationError(
            "slow_call_duration has no effect without slow_call_ratio; set both"
        )
    slow_s = (
        None if slow_call_duration is None else seconds(slow_call_duration, "slow_call_duration")
    )
    if min_calls is None:
        min_calls = 10 if (failure_ratio is not None or slow_call_ratio is not None) else 1
    min_calls = positive_int(min_calls, "min_calls")
    window_s = seconds(window, "window", allow_zero=False)
    buckets = positive_int(buckets, "buckets", maximum=MAX_BUCKETS)
    window_us = round(window_s * US)
    if window_us % buckets:
        raise ConfigurationError(
            f"window ({window_s:g} s) must split into {buckets} buckets of whole "
            "microseconds; change window or buckets"
        )
    open_us = open_table(open_for, resolve_random(random))
    half_open_calls = positive_int(half_open_calls, "half_open_calls")
    half_open_s = (
        open_us[0] / US
        if half_open_timeout is None
        else seconds(half_open_timeout, "half_open_timeout", allow_zero=False)
    )
    on_pred = exception_predicate(on, "on")
    on_result_pred = None if on_result is None else result_predicate(on_result, "on_result")
    if not isinstance(count_rejections, bool):
        raise ConfigurationError(f"count_rejections must be a bool, got {count_rejections!r}")
    if store is not None and not callable(getattr(store, "apply", None)):
        raise ConfigurationError(f"store must be a resilience.stores.Store, got {store!r}")
    if on_store_error not in ("local", "open", "closed"):
        raise ConfigurationError(
            f"on_store_error must be 'local', 'open' or 'closed', got {on_store_error!r}"
        )
    cfg = core.Config(
        failure_ratio=f_ratio or 0.0,
        failure_count=f_count or 0,
        slow_call_ratio=s_ratio or 0.0,
        min_calls=min_calls,
        buckets=buckets,
        bucket_us=window_us // buckets,
        open_us=open_us,
        half_open_calls=half_open_calls,
        half_open_timeout_us=round(half_open_s * US),
        bad_mask=(core.FAILURE if (failure_ratio or failure_count or c_fails) else 0)
        | (core.SLOW_BIT if slow_call_ratio is not None else 0),
        consecutive_failures=c_fails or 0,
    )
    ttl_s = (window_us + max(open_us) + cfg.half_open_timeout_us) / US + 60.0
    if c_fails is not None:  # a streak does not expire with the window
        ttl_s = max(ttl_s, STREAK_TTL_S)
    return Options(
        failure_ratio=f_ratio,
        failure_count=f_count,
        consecutive_failures=c_fails,
        slow_call_ratio=s_ratio,
        slow_call_duration=slow_s,
        min_calls=min_calls,
        window=window_s,
        buckets=buckets,
        open_for=open_for if hasattr(open_for, "delay") else open_us[0] / US,
        half_open_calls=half_open_calls,
        half_open_timeout=half_open_s,
        on=on_pred,
        on_result=on_result_pred,
        count_rejections=count_rejections,
        store=store,
        on_store_error=on_store_error,
        cfg=cfg,
        ttl_s=ttl_s,
        lua=lua_config(cfg, ttl_s),
    )
