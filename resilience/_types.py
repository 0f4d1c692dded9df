"""Shared type aliases and validation helpers (private)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeVar, cast

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .events import Listener

P = ParamSpec("P")
T = TypeVar("T")

#: The callable a sync wrapper protects and returns (see ``scripts/twins.py``).
SyncFn: TypeAlias = Callable[..., Any]
#: Its async twin: a coroutine function.
AsyncFn: TypeAlias = Callable[..., Awaitable[Any]]

#: A duration: float seconds or a :class:`datetime.timedelta`.
Duration: TypeAlias = float | int | timedelta

#: ``on=`` / ``on_result=`` take an exception type, a tuple of types, or a predicate.
ExceptionSpec: TypeAlias = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
)


#: The longest duration any parameter may have: 1e9 s (about 31.7 years). Both stores must
#: represent it: the Redis scripts work in integer microseconds held in Lua doubles (exact up to
#: 2**53 µs, about 285 years, and ``now + duration`` must stay below that: the server clock is
#: already about 1.8e15 µs), pass expiries to ``PEXPIRE`` in milliseconds (Lua prints numbers
#: with 14 significant digits: at most 1e14 ms), and Python waits on locks and events, whose
#: timeouts cannot exceed ``threading.TIMEOUT_MAX`` (about 9.2e9 s).
MAX_SECONDS = 1e9
#: The shortest non-zero duration where zero is not allowed (a period, a window, a TTL): 1 µs,
#: the stores' resolution (a shorter one would round to 0 on Redis).
MIN_SECONDS = 1e-6
#: The largest count or number a parameter may have: 2**53, the largest integer a double (and
#: so a Lua number on Redis) holds exactly.
MAX_COUNT = 2**53


def _fmt(v: float) -> str:
    return f"{v:g}"


def seconds(
    value: Duration, name: str, *, allow_zero: bool = True, maximum: float = MAX_SECONDS
) -> float:
    """Convert a :data:`Duration` to float seconds, validating its range.

    The allowed range is ``0`` (with ``allow_zero``) to ``maximum`` (default
    :data:`MAX_SECONDS`), or :data:`MIN_SECONDS` to ``maximum`` without ``allow_zero``.

    Example:
        >>> seconds(1.5, "per"), seconds(timedelta(minutes=1), "ttl")
        (1.5, 60.0)
        >>> seconds(1e300, "ttl")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        resilience.errors.ConfigurationError: ttl must be at most 1e+09 seconds (allowed: ...
    """
    if isinstance(value, timedelta):
        out = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"{name} must be a number of seconds or a timedelta, got {value!r}"
        )
    else:
        try:
            out = float(value)
        except OverflowError:  # an int too large for a float
            out = math.inf
    low = 0.0 if allow_zero else MIN_SECONDS
    if not low <= out <= maximum or out == math.inf:  # NaN fails too
        if math.isnan(out) or math.isinf(out):
            head = "finite"
        elif out < low:
            head = ">= 0 seconds" if allow_zero else "> 0 seconds"
        else:
            head = f"at most {_fmt(maximum)} seconds"
        if maximum == math.inf:
            allowed = f"{_fmt(low)} seconds or more"
        else:
            allowed = f"{_fmt(low)} to {_fmt(maximum)} seconds"
            if maximum == MAX_SECONDS:
                allowed += ", about 31.7 years"
        raise ConfigurationError(f"{name} must be {head} (allowed: {allowed}), got {value!r}")
    return out


def optional_seconds(
    value: Duration | None, name: str, *, allow_zero: bool = True, maximum: float = MAX_SECONDS
) -> float | None:
    """Like :func:`seconds` but lets ``None`` through."""
    if value is None:
        return None
    return seconds(value, name, allow_zero=allow_zero, maximum=maximum)


def positive_int(value: object, name: str, *, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
    """Validate an integer parameter in ``[minimum, maximum]`` (default up to :data:`MAX_COUNT`).

    Example:
        >>> positive_int(3, "attempts")
        3
        >>> positive_int(0, "attempts")
        Traceback (most recent call last):
        ...
        resilience.errors.ConfigurationError: attempts must be an integer >= 1 and <= 2**53, got 0
    """
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        top = "2**53" if maximum == MAX_COUNT else str(maximum)
        raise ConfigurationError(
            f"{name} must be an integer >= {minimum} and <= {top}, got {value!r}"
        )
    return value


def ratio(value: object, name: str, *, allow_zero: bool = False) -> float:
    """Validate a ratio in (0, 1] (or [0, 1] with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number in (0, 1], got {value!r}")
    try:
        v = float(value)
    except OverflowError:
        v = math.inf
    low_ok = v >= 0 if allow_zero else v > 0
    if not (low_ok and v <= 1) or math.isnan(v):
        bound = "[0, 1]" if allow_zero else "(0, 1]"
        raise ConfigurationError(f"{name} must be in {bound}, got {value!r}")
    return v


def positive_number(
    value: object, name: str, *, allow_zero: bool = False, maximum: float = MAX_COUNT
) -> float:
    """Validate a number in ``(0, maximum]`` (``[0, maximum]`` with ``allow_zero``).

    Example:
        >>> positive_number(2.5, "multiplier")
        2.5
        >>> positive_number(1e300, "rate")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        resilience.errors.ConfigurationError: rate must be a finite number > 0 and <= 2**53, ...
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except OverflowError:
        v = math.inf
    if not (0 <= v <= maximum) or (v == 0 and not allow_zero):  # NaN fails too
        bound = ">= 0" if allow_zero else "> 0"
        top = "2**53" if maximum == MAX_COUNT else _fmt(maximum)
        raise ConfigurationError(
            f"{name} must be a finite number {bound} and <= {top}, got {value!r}"
        )
    return v


def status_codes(value: object, name: str) -> frozenset[int]:
    """Validate a collection of HTTP status codes (integers 100 to 599).

    Example:
        >>> sorted(status_codes([409, 500], "release_statuses"))
        [409, 500]
    """
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigurationError(f"{name} must be a collection of HTTP status codes, got {value!r}")
    out = set()
    for s in value:
        if isinstance(s, bool) or not isinstance(s, int) or not 100 <= s <= 599:
            raise ConfigurationError(
                f"{name} must hold HTTP status codes (integers 100 to 599), got {s!r}"
            )
        out.add(s)
    return frozenset(out)


def method_names(value: object, name: str) -> frozenset[str]:
    """Validate a collection of HTTP method names (upper-cased).

    Example:
        >>> sorted(method_names(["post", "PUT"], "methods"))
        ['POST', 'PUT']
    """
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigurationError(
            f"{name} must be a collection of HTTP method names (not a single str), got {value!r}"
        )
    out = set()
    for m in value:
        if not isinstance(m, str) or not m.isascii() or not m.isalpha():
            raise ConfigurationError(f"{name} must hold HTTP method names, got {m!r}")
        out.add(m.upper())
    return frozenset(out)


def header_names(value: object, name: str) -> frozenset[str]:
    """Validate a collection of HTTP header names (lower-cased).

    Example:
        >>> sorted(header_names(["X-Request-Id"], "replay_headers"))
        ['x-request-id']
    """
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigurationError(
            f"{name} must be a collection of header names (not a single str), got {value!r}"
        )
    out = set()
    for h in value:
        if not isinstance(h, str) or not h.isascii() or not h or any(c in h for c in " :\r\n"):
            raise ConfigurationError(f"{name} must hold HTTP header names, got {h!r}")
        out.add(h.lower())
    return frozenset(out)


def exception_predicate(spec: object, name: str) -> Callable[[BaseException], bool]:
    """Turn an ``on=`` spec into a predicate over exceptions."""
    if isinstance(spec, type) and issubclass(spec, BaseException):
        exc_type: type[BaseException] = spec
        return lambda exc: isinstance(exc, exc_type)
    if isinstance(spec, tuple):
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in spec):
            raise ConfigurationError(f"{name} tuple must hold only exception types, got {spec!r}")
        types: tuple[type[BaseException], ...] = spec
        return lambda exc: isinstance(exc, types)
    if callable(spec):
        fn: Callable[[BaseException], bool] = spec
        return fn
    raise ConfigurationError(
        f"{name} must be an exception type, a tuple of exception types or a predicate, got {spec!r}"
    )


def result_predicate(spec: object, name: str) -> Callable[[object], bool]:
    """Turn an ``on_result=`` spec into a predicate over results."""
    if callable(spec) and not isinstance(spec, type):
        fn: Callable[[object], bool] = spec
        return fn
    raise ConfigurationError(
        f"{name} must be a predicate (a callable returning bool), got {spec!r}"
    )


def qualname(fn: object) -> str:
    """A low-cardinality operation name for a callable."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        name = type(fn).__qualname__
    return str(name)


def check_name(name: object) -> str:
    """Validate a policy name (a non-empty string)."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"name must be a non-empty string, got {name!r}")
    return name


def check_listeners(listeners: object) -> tuple[Listener, ...]:
    """Validate a ``listeners=`` argument: a sequence of callables (returned as a tuple)."""
    if isinstance(listeners, str | bytes) or not isinstance(listeners, Iterable):
        raise ConfigurationError(f"listeners must be a sequence of callables, got {listeners!r}")
    out = tuple(listeners)
    for listener in out:
        if not callable(listener):
            raise ConfigurationError(f"listeners must be callables, got {listener!r}")
    return cast("tuple[Listener, ...]", out)
