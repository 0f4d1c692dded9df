"""Policy specifications of a scenario: build the real policy objects, or say which field is bad.

Every error is a :class:`~resilience.ConfigurationError` whose message starts with the path of
the offending field (``pipelines.resilient[2].attempts``), then says what was expected and what
the scenario holds.
"""

from __future__ import annotations

import difflib
import inspect
import json
import random as _random
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

import resilience as rs

from ..errors import ConfigurationError, RejectedError, TimeoutExceededError
from ._loop import SimClock

__all__ = [
    "BACKOFFS",
    "POLICIES",
    "DependencyError",
    "build_policies",
    "fail",
    "field_path",
    "reject_unknown",
    "validate_pipelines",
]


class DependencyError(ConnectionError):
    """The synthetic dependency failed (an error, an outage or a hang that ended).

    Example:
        >>> isinstance(DependencyError("refused"), ConnectionError)
        True
    """


#: Policy ``type`` names of a scenario file → class names in :mod:`resilience`.
POLICIES: dict[str, str] = {
    "timeout": "Timeout",
    "retry": "Retry",
    "circuit_breaker": "CircuitBreaker",
    "fallback": "Fallback",
    "rate_limiter": "RateLimiter",
    "bulkhead": "Bulkhead",
    "adaptive_concurrency": "AdaptiveConcurrency",
    "adaptive_throttle": "AdaptiveThrottle",
    "hedge": "Hedge",
    "chaos_fault": "chaos.Fault",
    "chaos_latency": "chaos.Latency",
    "chaos_outcome": "chaos.Outcome",
}
#: Backoff ``kind`` names → the :mod:`resilience.backoff` factories.
BACKOFFS: dict[str, Callable[..., Any]] = {
    "constant": rs.backoff.constant,
    "exponential": rs.backoff.exponential,
    "decorrelated": rs.backoff.decorrelated,
    "schedule": rs.backoff.schedule,
}
_ON: dict[str, Callable[[], type[BaseException]]] = {
    "error": lambda: DependencyError,
    "timeout": lambda: TimeoutExceededError,
    "rejected": lambda: RejectedError,
    "any": lambda: Exception,
}
# constructor parameters the simulator sets itself, and those a scenario file cannot express
_INJECTED = frozenset({"clock", "random", "listeners"})
_PYTHON_ONLY = frozenset(
    {"store", "on_result", "handler", "retry_after", "key", "factory", "action"}
)
_EXPECTED = {
    "Duration": "a number of seconds",
    "int": "an integer",
    "float": "a number",
    "Iterable[Duration]": "an array of seconds",
    "Duration | Callable[[int], float] | HedgeDelay": (
        "a number of seconds or a percentile table {percentile = ..., ...}"
    ),
}
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_LEADING_NAME = re.compile(r"^(\w+)")


def field_path(base: str, key: str | int) -> str:
    """``base`` extended by a table key or an array index, TOML-style.

    Example:
        >>> field_path(field_path(field_path("pipelines", "my api"), 2), "attempts")
        'pipelines."my api"[2].attempts'
    """
    if isinstance(key, int):
        return f"{base}[{key}]"
    part = key if _BARE_KEY.match(key) else json.dumps(key)
    return f"{base}.{part}" if base else part


def fail(path: str, message: str) -> NoReturn:
    """Raise the :class:`~resilience.ConfigurationError` for the field at ``path``."""
    raise ConfigurationError(f"{path}: {message}")


def reject_unknown(table: Mapping[str, Any], allowed: Iterable[str], path: str, what: str) -> None:
    """Fail on the first key of ``table`` not in ``allowed``, suggesting the closest one.

    Example:
        >>> reject_unknown({"attemps": 3}, ["attempts", "backoff"], "p[0]", "retry")
        Traceback (most recent call last):
        ...
        resilience.errors.ConfigurationError: p[0].attemps: unknown key for retry, did you mean \
'attempts'? (expected one of: attempts, backoff)
    """
    known = sorted(allowed)
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f", did you mean {close[0]!r}?" if close else ""
            fail(
                field_path(path, str(key)),
                f"unknown key for {what}{hint} (expected one of: {', '.join(known)})",
            )


def _unknown_name(
    path: str, what: str, value: object, names: Iterable[str], context: str = ""
) -> NoReturn:
    known = sorted(names)
    close = difflib.get_close_matches(str(value), known, n=1)
    if not close and isinstance(value, str) and value:
        close = [k for k in known if k.startswith(value)][:1]
    hint = f", did you mean {close[0]!r}?" if close else ""
    where = f" for {context}" if context else ""
    fail(path, f"unknown {what} {value!r}{where}{hint} (expected one of: {', '.join(known)})")


def _table(value: object, path: str, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        fail(path, f"expected a table ({what}), got {value!r}")
    return value


def _call(
    factory: Callable[..., Any],
    args: list[Any],
    spec: dict[str, Any],
    path: str,
    what: str,
    keys: Iterable[str],
) -> Any:
    """``factory(*args, **spec)``, an error naming the field it is about (when it says)."""
    try:
        return factory(*args, **spec)
    except (ConfigurationError, TypeError, ValueError, ArithmeticError) as exc:
        message = str(exc)
        lead = _LEADING_NAME.match(message)
        if lead and lead.group(1) in set(keys):
            path = field_path(path, lead.group(1))
        fail(path, f"{message} ({what})")


def _parameters(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(factory).parameters)


def _check_spec(
    spec: Mapping[str, Any],
    params: Mapping[str, inspect.Parameter],
    path: str,
    what: str,
    *,
    defaulted: Iterable[str] = (),
) -> None:
    settable = [k for k in params if k not in _INJECTED and k not in _PYTHON_ONLY]
    for key in spec:
        if key in _INJECTED:
            fail(field_path(path, key), f"is set by the simulator; remove it ({what})")
        if key in _PYTHON_ONLY and key in params:
            fail(field_path(path, key), f"takes a Python object: not settable here ({what})")
    reject_unknown(spec, settable, path, what)
    skip = {*defaulted, *_INJECTED}
    for name, p in params.items():
        required = p.default is inspect.Parameter.empty and p.kind not in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        )
        if required and name not in spec and name not in skip:
            expected = _EXPECTED.get(str(p.annotation), "a value")
            fail(field_path(path, name), f"required key missing: expected {expected} ({what})")


def _on(spec: object, path: str, what: str) -> tuple[type[BaseException], ...]:
    names = [spec] if isinstance(spec, str) else spec
    if not isinstance(names, list) or not names:
        fail(path, f"expected an outcome name or a list of them ({what}), got {spec!r}")
    for n in names:
        if n not in _ON:
            _unknown_name(path, "outcome", n, _ON, what)
    return tuple(_ON[n]() for n in names)


def _policy_class(name: str) -> object:
    """The :mod:`resilience` attribute ``name`` names (dotted: ``"chaos.Fault"``), or None."""
    found: object = rs
    for part in name.split("."):
        found = getattr(found, part, None)
    return found


def _backoff(spec: object, rnd: _random.Random, path: str, what: str) -> Any:
    if not isinstance(spec, Mapping):
        return spec  # a number (open_for) or a bad value: the policy says which
    body = dict(spec)
    kind = body.pop("kind", "exponential")
    factory = BACKOFFS.get(kind) if isinstance(kind, str) else None
    if factory is None:
        _unknown_name(field_path(path, "kind"), "backoff kind", kind, BACKOFFS, what)
    params = _parameters(factory)
    label = f"{kind} backoff of {what}"
    _check_spec(body, params, path, label)
    if "random" in params:
        body["random"] = rnd
    return _call(factory, [], body, path, label, body)


def _percentile(spec: Mapping[str, Any], path: str, what: str) -> Any:
    """A hedge's ``delay`` table: :meth:`resilience.Hedge.percentile` of observed latencies."""
    body = dict(spec)
    label = f"percentile delay of {what}"
    _check_spec(body, _parameters(rs.Hedge.percentile), path, label)
    return _call(rs.Hedge.percentile, [], body, path, label, body)


def _build_one(
    raw: object, clock: SimClock, rnd: _random.Random, listener: Any, path: str
) -> rs.Policy:
    spec = dict(_table(raw, path, "a policy: {type = ..., ...}"))
    if "type" not in spec:
        fail(field_path(path, "type"), f"required key missing (one of: {', '.join(POLICIES)})")
    kind = spec.pop("type")
    cls_name = POLICIES.get(kind, kind) if isinstance(kind, str) else ""
    cls = _policy_class(cls_name) if cls_name else None
    if not (isinstance(cls, type) and issubclass(cls, rs.Policy)) or cls is rs.Pipeline:
        _unknown_name(field_path(path, "type"), "policy type", kind, POLICIES)
    params = _parameters(cls)
    what = str(kind)
    _check_spec(spec, params, path, what, defaulted=("name", "on", "error"))
    if cls_name == "chaos.Fault":  # an outcome name, like on= (default: a dependency error)
        error, epath = spec.get("error", "error"), field_path(path, "error")
        if not isinstance(error, str):
            fail(epath, f"expected an outcome name ({what}), got {error!r}")
        spec["error"] = _on(error, epath, what)[0]
    if "on" in spec:
        spec["on"] = _on(spec["on"], field_path(path, "on"), what)
    elif cls_name == "Retry":
        spec["on"] = (DependencyError, TimeoutExceededError)
    elif cls_name == "Fallback":
        spec["on"] = Exception
    for key in ("backoff", "open_for"):
        if key in spec:
            spec[key] = _backoff(spec[key], rnd, field_path(path, key), what)
    if cls_name == "Hedge" and isinstance(spec.get("delay"), Mapping):
        spec["delay"] = _percentile(spec["delay"], field_path(path, "delay"), what)
    if isinstance(spec.get("budget"), Mapping):
        budget = dict(spec["budget"])
        bpath = field_path(path, "budget")
        _check_spec(budget, _parameters(rs.RetryBudget), bpath, f"budget of {what}")
        spec["budget"] = _call(
            rs.RetryBudget, [], {**budget, "clock": clock}, bpath, f"budget of {what}", budget
        )
    keys = list(spec)
    injected = {"clock": clock, "random": rnd, "listeners": [listener]}
    spec.update({k: v for k, v in injected.items() if k in params})
    args: list[Any] = []
    name_param = params.get("name")
    if name_param is not None:
        name = spec.pop("name", kind)
        if name_param.kind is inspect.Parameter.POSITIONAL_ONLY:
            args.append(name)
        else:
            spec["name"] = name
    if cls_name == "Timeout" and "seconds" in spec:
        args.append(spec.pop("seconds"))
    policy: rs.Policy = _call(cls, args, spec, path, what, keys)
    return policy


def build_policies(
    specs: list[dict[str, Any]],
    clock: SimClock,
    rnd: _random.Random,
    listener: Any,
    *,
    path: str = "policies",
) -> list[rs.Policy]:
    """Construct real policy objects from scenario specifications (outermost first).

    ``type`` is a policy class name (``"CircuitBreaker"``) or its snake-case form
    (``"circuit_breaker"``); the other keys are the constructor's keyword arguments, except:
    ``backoff`` / ``open_for`` tables (``{kind = "exponential", initial = ...}``) become
    :mod:`resilience.backoff` schedules, ``budget`` tables a :class:`resilience.RetryBudget`,
    a hedge's ``delay`` table (``{percentile = 95, ...}``) :meth:`resilience.Hedge.percentile`,
    and ``on`` names outcomes (``"error"``, ``"timeout"``, ``"rejected"``, ``"any"``), as does
    the ``error`` of a ``chaos_fault`` (default ``"error"``). The clock, the random generator
    and the listener are injected; ``name`` defaults to the type.
    A bad entry raises :class:`~resilience.ConfigurationError` naming the field under
    ``path``.

    Example:
        >>> import random
        >>> [p] = build_policies([{"type": "timeout", "seconds": 2}], SimClock(),
        ...                      random.Random(1), lambda e: None)
        >>> p.describe()["seconds"]
        2.0
        >>> build_policies([{"type": "retry", "attempts": 0}], SimClock(),
        ...                random.Random(1), lambda e: None, path="pipelines.p")
        Traceback (most recent call last):
        ...
        resilience.errors.ConfigurationError: pipelines.p[0].attempts: attempts must be an \
integer >= 1 and <= 2**53, got 0 (retry)
    """
    if not isinstance(specs, list):
        fail(path, f"expected an array of policies (outermost first), got {specs!r}")
    return [
        _build_one(raw, clock, rnd, listener, field_path(path, i)) for i, raw in enumerate(specs)
    ]


def validate_pipelines(pipelines: Mapping[str, Any]) -> None:
    """Build every pipeline once (throw-away clock), so a bad one fails before any run.

    Example:
        >>> validate_pipelines({"ok": [{"type": "retry"}], "bad": [{"type": "retyr"}]})
        Traceback (most recent call last):
        ...
        resilience.errors.ConfigurationError: pipelines.bad[0].type: unknown policy type \
'retyr', did you mean 'retry'? (expected one of: adaptive_concurrency, adaptive_throttle, \
bulkhead, chaos_fault, chaos_latency, chaos_outcome, circuit_breaker, fallback, hedge, \
rate_limiter, retry, timeout)
    """
    for name, specs in pipelines.items():
        path = field_path("pipelines", str(name))
        policies = build_policies(specs, SimClock(), _random.Random(0), _ignore, path=path)
        _call(rs.Pipeline, list(policies), {"name": str(name)}, path, "pipeline", ())


def _ignore(event: object) -> None:
    return None
