"""What the Redis store runs: the :class:`RedisOp` protocol, the Lua prelude and reply helpers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from .._lua import script

R_co = TypeVar("R_co", covariant=True)

__all__ = ["LUA_NOW", "RedisOp", "Script", "redis_errors", "text", "to_us"]

#: Lua prelude prepended to every script:
#:
#: * ``now_us()``: the server clock in integer microseconds (``TIME``), unless the store was built
#:   with an injected ``clock=`` (tests), in which case ARGV[1] carries that clock's reading.
#: * ``us(n)``: an integer number of microseconds as an exact decimal string (``tostring`` would
#:   print ``1.7e+15``).
#: * ``load(key, now, field...)``: ``0`` (absent or logically expired), ``1, values`` (live) or
#:   ``2`` (corrupt: wrong type or missing expiry). Every state is a hash whose field ``x`` holds
#:   its expiry in microseconds of the script clock, so the logical expiry follows the same clock
#:   as the decisions (server ``TIME`` in production, the injected clock in tests) while
#:   ``PEXPIRE`` garbage-collects the key.
#: * ``expire(key, now, ttl_us)``: set the expiry field and the key's ``PEXPIRE`` (``>= 1 ms``).
LUA_NOW = script("resilience.stores", "prelude.lua")

#: A script as the store runs it: (source, SHA1, key suffixes, execute_command options).
Script = tuple[str, str, tuple[str, ...], dict[str, Any]]


def to_us(value: float) -> int:
    """Seconds as integer microseconds (rounded), the unit every Lua twin works in.

    Example:
        >>> to_us(1.5), to_us(0.0000004)
        (1500000, 0)
    """
    return round(value * 1_000_000)


def text(value: Any) -> str:
    """A reply element as ``str`` (replies are ``bytes`` unless ``decode_responses=True``).

    Example:
        >>> text(b"claimed"), text("claimed")
        ('claimed', 'claimed')
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogatepass")
    return str(value)


def redis_errors() -> Any:
    """``redis.exceptions``, imported on first need (redis-py is an optional dependency)."""
    import redis.exceptions

    return redis.exceptions


@runtime_checkable
class RedisOp(Protocol[R_co]):
    """A :class:`~resilience.stores.StoreOp` that also has a Lua twin.

    Attributes:
        key: the logical key (hashed into the Redis key).
        LUA: the script body; it is prefixed with :data:`LUA_NOW`, receives the entity's keys as
            ``KEYS`` (see ``KEY_SUFFIXES``) and ``ARGV[1]`` = clock override (``''`` in
            production), ``ARGV[2:]`` = :meth:`lua_args`.
        KEY_SUFFIXES: the suffixes of the entity's Redis keys (default ``("s",)``).
        LUA_STANDALONE: ``True`` when ``LUA`` does not use the :data:`LUA_NOW` helpers (it is
            then sent without them: a hot script pays for no unused closures).
        BINARY_REPLY: ``True`` when the reply is one packed binary string (never decoded by the
            client; read straight from the socket on the store's direct path).
        RAW_REPLY: ``True`` when the reply (of any shape: an array holding byte payloads) must
            not be decoded by the client.
        DURABLE: ``True`` when losing the write in a failover would break the policy's promise
            (idempotency records): with ``wait_replicas=N`` the store then waits for N replicas
            to acknowledge it (``WAIT``) before returning.
    """

    key: str
    LUA: ClassVar[str]

    def lua_args(self) -> Sequence[str | bytes | int | float]:
        """The script's arguments after the clock override."""
        ...

    def parse(self, reply: Any) -> R_co:
        """Turn the script's reply into the operation's result."""
        ...
