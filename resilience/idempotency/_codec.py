"""Keys, owners, codecs and fingerprints: how a call becomes a record's key and its result text."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from typing import Any, Protocol

from ..errors import ConfigurationError

__all__ = ["Codec", "JSONCodec", "args_fingerprint", "record_key"]


def record_key(namespace: str, *parts: str) -> str:
    """A fixed-length store key for a composite idempotency key (length-prefixed, SHA-256).

    Parts are hashed, so user-controlled values (keys, principals, paths) can never collide by
    concatenation nor inject characters into the store's key space.

    Example:
        >>> k = record_key("idem:http", "user-1", "POST", "/orders", "abc")
        >>> k.startswith("idem:http:"), len(k) - len("idem:http:")
        (True, 32)
        >>> k == record_key("idem:http", "user-1", "POST", "/orders", "abd")
        False
    """
    h = hashlib.sha256()
    for part in parts:
        raw = part.encode("utf-8", "surrogatepass")
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    return f"{namespace}:{h.hexdigest()[:32]}"


_OWNER_PREFIX = os.urandom(6).hex()
_owner_seq = itertools.count(1)


def _new_owner() -> str:
    # unique per process (random prefix) and per claim (counter); next() on count is atomic
    return f"{_OWNER_PREFIX}-{next(_owner_seq)}"


class Codec(Protocol):
    """How outcomes are turned into stored text and back (``codec=``)."""

    def encode(self, value: Any, /) -> str | bytes:
        """Serialize a result (raise ``TypeError`` / ``ValueError`` when it cannot)."""
        ...

    def decode(self, data: str | bytes, /) -> Any:
        """Deserialize what :meth:`encode` produced."""
        ...


class JSONCodec:
    """The default codec: compact JSON (safe to decode; never pickle).

    JSON round-trips ``dict`` (with ``str`` keys), ``list``, ``str``, ``int``, ``float``,
    ``bool`` and ``None``; a tuple is replayed as a list.

    Example:
        >>> codec = JSONCodec()
        >>> codec.decode(codec.encode({"id": 7, "tags": ["a"]}))
        {'id': 7, 'tags': ['a']}
    """

    def encode(self, value: Any, /) -> str:
        """``json.dumps`` without spaces; refuses NaN and infinities."""
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def decode(self, data: str | bytes, /) -> Any:
        """``json.loads``."""
        return json.loads(data)


_JSON = JSONCodec()


def args_fingerprint(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The default fingerprint: SHA-256 of the canonical JSON of ``[args, kwargs]``.

    Raises:
        ConfigurationError: an argument is not JSON-serializable (pass ``fingerprint=``).

    Example:
        >>> args_fingerprint((1, "a"), {"b": 2}) == args_fingerprint((1, "a"), {"b": 2})
        True
        >>> args_fingerprint((1,), {}) == args_fingerprint((2,), {})
        False
    """
    try:
        text = json.dumps([args, kwargs], sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            "the default idempotency fingerprint needs JSON-serializable arguments "
            f"({exc}); pass fingerprint=callable(*args, **kwargs) -> str | bytes, "
            "or fingerprint=None to not compare arguments"
        ) from None
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
