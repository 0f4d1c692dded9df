"""Shared type aliases and validation helpers (private)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import ParamSpec, TypeAlias, TypeVar

from .errors import ConfigurationError

P = ParamSpec("P")
T = TypeVar("T")

#: A duration: float seconds or a :class:`datetime.timedelta`.
Duration: TypeAlias = float | int | timedelta

#: ``on=`` / ``on_result=`` take an exception type, a tuple of types, or a predicate.
ExceptionSpec: TypeAlias = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
)


def seconds(value: Duration, name: str, *, allow_zero: bool = True) -> float:
    """Convert a :data:`Duration` to float seconds, validating it."""
    if isinstance(value, timedelta):
        out = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"{name} must be a number of seconds or a timedelta, got {value!r}"
        )
    else:
        out = float(value)
    if math.isnan(out) or math.isinf(out):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    if out < 0 or (out == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(f"{name} must be {bound} seconds, got {value!r}")
    return out


def optional_seconds(value: Duration | None, name: str, *, allow_zero: bool = True) -> float | None:
    """Like :func:`seconds` but lets ``None`` through."""
    return None if value is None else seconds(value, name, allow_zero=allow_zero)


def positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    """Validate an integer parameter."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def ratio(value: object, name: str, *, allow_zero: bool = False) -> float:
    """Validate a ratio in (0, 1] (or [0, 1] with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number in (0, 1], got {value!r}")
    v = float(value)
    low_ok = v >= 0 if allow_zero else v > 0
    if not (low_ok and v <= 1) or math.isnan(v):
        bound = "[0, 1]" if allow_zero else "(0, 1]"
        raise ConfigurationError(f"{name} must be in {bound}, got {value!r}")
    return v


def positive_number(value: object, name: str, *, allow_zero: bool = False) -> float:
    """Validate a finite positive number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
    v = float(value)
    if math.isnan(v) or math.isinf(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


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
