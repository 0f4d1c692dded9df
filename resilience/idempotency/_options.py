"""Parameter validation of the records client and the policy (bad input: ConfigurationError)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import ConfigurationError
from ._codec import Codec, JSONCodec, args_fingerprint

__all__ = [
    "check_choice",
    "check_codec",
    "check_key",
    "check_namespace",
    "check_store",
    "check_store_errors",
    "fingerprint_of",
    "qualified",
]

_T = TypeVar("_T", bound=str)
_JSON = JSONCodec()
Fingerprint = Callable[[tuple[Any, ...], dict[str, Any]], str]


def check_choice(value: _T, name: str, allowed: tuple[str, ...]) -> _T:
    """``value`` if it is one of ``allowed``.

    Example:
        >>> check_choice("open", "on_store_error", ("closed", "open", "local"))
        'open'
        >>> check_choice("shut", "mode", ("open", "closed"))
        Traceback (most recent call last):
        ...
        resilience.errors.ConfigurationError: mode must be 'open' or 'closed', got 'shut'
    """
    if value not in allowed:
        *head, last = (repr(a) for a in allowed)
        raise ConfigurationError(f"{name} must be {', '.join(head)} or {last}, got {value!r}")
    return value


def check_store(store: Any) -> Any:
    """A resilience store (one with ``apply()`` or ``aapply()``)."""
    if not (callable(getattr(store, "apply", None)) or callable(getattr(store, "aapply", None))):
        raise ConfigurationError(
            f"store must be a resilience store (with apply() or aapply()), got {store!r}"
        )
    return store


def check_namespace(namespace: str | None) -> str | None:
    """A policy's ``namespace=``: a non-empty string or None."""
    value: object = namespace
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigurationError(
            f"namespace must be a non-empty string (or None), got {namespace!r}"
        )
    return namespace


def check_key(key: Callable[..., str | None]) -> Callable[..., str | None]:
    """The policy's ``key=`` callable."""
    if not callable(key):
        raise ConfigurationError(
            f"key must be a callable(*args, **kwargs) -> str | None, got {key!r}"
        )
    return key


def fingerprint_of(fingerprint: Any) -> Fingerprint | None:
    """The ``fingerprint=`` option as ``(args, kwargs) -> hex digest`` (None: not compared)."""
    if fingerprint == "args":
        return args_fingerprint
    if fingerprint is None:
        return None
    if not callable(fingerprint):
        raise ConfigurationError(
            f"fingerprint must be 'args', a callable or None, got {fingerprint!r}"
        )
    user_fp = fingerprint

    def custom(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        out = user_fp(*args, **kwargs)
        if isinstance(out, str):
            out = out.encode("utf-8", "surrogatepass")
        if not isinstance(out, bytes):
            raise ConfigurationError(
                f"fingerprint must return str or bytes, got {type(out).__name__}"
            )
        return hashlib.sha256(out).hexdigest()[:32]

    return custom


def check_codec(codec: Codec | None) -> Codec:
    """The ``codec=`` option (default: :class:`JSONCodec`)."""
    if codec is None:
        return _JSON
    if not (callable(getattr(codec, "encode", None)) and callable(getattr(codec, "decode", None))):
        raise ConfigurationError(f"codec must have encode() and decode(), got {codec!r}")
    return codec


def check_store_errors(store_errors: Any) -> tuple[type[BaseException], ...]:
    """The ``store_errors=`` option: ``"never"`` (no types) or exception types."""
    if store_errors == "never":
        return ()
    types: tuple[Any, ...] = store_errors if isinstance(store_errors, tuple) else (store_errors,)
    if not types or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise ConfigurationError(
            f"store_errors must be 'never' or a tuple of exception types, got {store_errors!r}"
        )
    return types


def qualified(cls: type) -> str:
    """``module.QualName``: how a stored error outcome names its type."""
    return f"{cls.__module__}.{cls.__qualname__}"
