"""The Redis store: shared state for many processes and hosts, one round trip per decision.

Every operation is one ``EVALSHA`` of a Lua twin of the operation's pure ``apply`` function, run
atomically on the server with the server's clock (``TIME``), so hosts with skewed clocks agree.

* **Scripts** are loaded lazily, cached by SHA, and reloaded transparently on ``NOSCRIPT``
  (restart, failover, ``SCRIPT FLUSH``).
* **Keys**: ``<prefix>:{<sha256(logical key)[:32]>}:<suffix>``. The user-supplied parts of a key
  (user ids, IPs, routes) are hashed, so keys have a fixed length and cannot inject separators
  or hash tags; every key of one entity shares the hash tag, so multi-key scripts work on Redis
  Cluster. Every key a script writes gets a TTL. No ``KEYS``/``SCAN`` on hot paths.
* **Faults**: ``from_url`` sets short socket timeouts (0.1 s by default). Backend errors become
  :class:`resilience.StoreError` at this boundary. An internal breaker opens after
  ``failure_threshold`` consecutive failures and then fails fast (no network wait) for
  ``probe_interval`` seconds, so a hung Redis costs one timeout, not one per call; each policy
  then applies its ``on_store_error`` decision (limiter ``"open"``, idempotency ``"closed"``,
  breaker ``"local"``).
* **Clients**: ``redis.Redis``, ``redis.asyncio.Redis``, ``redis.cluster.RedisCluster`` and
  ``redis.asyncio.cluster.RedisCluster``. A store built by :meth:`RedisStore.from_url` serves sync
  and async policies (it creates each client on first use). A store given only a sync client runs
  async operations in a worker thread; one given only an async client cannot serve sync code.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from .._clock import Clock, resolve_clock
from .._types import positive_int, seconds
from ..errors import ConfigurationError, StoreError

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

__all__ = ["RedisOp", "RedisStore", "LUA_NOW"]

#: Lua prelude: ``now_us()`` is the server clock in microseconds, unless the store was built with
#: an injected ``clock=`` (tests), in which case ARGV[1] carries that clock's reading.
LUA_NOW = """
local function now_us()
  if ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""


@runtime_checkable
class RedisOp(Protocol[R_co]):
    """A :class:`~resilience.stores.StoreOp` that also has a Lua twin.

    Attributes:
        key: the logical key (hashed into the Redis key).
        LUA: the script body; it is prefixed with :data:`LUA_NOW`, receives the entity's keys as
            ``KEYS`` (see ``KEY_SUFFIXES``) and ``ARGV[1]`` = clock override (``''`` in
            production), ``ARGV[2:]`` = :meth:`lua_args`.
        KEY_SUFFIXES: the suffixes of the entity's Redis keys (default ``("s",)``).
    """

    key: str
    LUA: ClassVar[str]

    def lua_args(self) -> Sequence[str | int | float]:
        """The script's arguments after the clock override."""
        ...

    def parse(self, reply: Any) -> R_co:
        """Turn the script's reply into the operation's result."""
        ...


class _Breaker:
    """Consecutive-failure breaker around the backend (thread-safe, tiny)."""

    def __init__(self, threshold: int, interval: float, clock: Clock) -> None:
        self.threshold = threshold
        self.interval = interval
        self.clock = clock
        self.failures = 0
        self.open_until = float("-inf")
        self.lock = threading.Lock()

    def check(self) -> None:
        if self.failures >= self.threshold:
            now = self.clock.monotonic()
            with self.lock:
                if now < self.open_until:
                    raise StoreError("redis store unavailable (failing fast after errors)")
                # one caller probes; the others keep failing fast until it reports
                self.open_until = now + self.interval

    def success(self) -> None:
        if self.failures:
            with self.lock:
                self.failures = 0
                self.open_until = float("-inf")

    def failure(self) -> None:
        with self.lock:
            self.failures += 1
            if self.failures >= self.threshold:
                self.open_until = self.clock.monotonic() + self.interval


def _is_async_client(client: Any) -> bool:
    import inspect

    execute = getattr(client, "execute_command", None)
    return execute is not None and inspect.iscoroutinefunction(execute)


class RedisStore:
    """Shared state in Redis or Redis Cluster.

    Args:
        client: a sync or async redis-py client (standalone or cluster), or ``None`` with
            ``from_url``.
        prefix: the first part of every key this store writes.
        failure_threshold: consecutive backend failures that make the store fail fast.
        probe_interval: how long it fails fast before one call probes the backend again.
        clock: inject a clock **for tests only**: its ``monotonic()`` is sent to the scripts as
            "now" instead of the server's ``TIME``.

    Example:
        >>> import resilience as rs
        >>> store = rs.RedisStore.from_url("redis://127.0.0.1:6379/0", prefix="shop")
        >>> store.redis_key("rl:api:user-1").startswith("shop:{")
        True
    """

    def __init__(
        self,
        client: Any = None,
        *,
        prefix: str = "resilience",
        failure_threshold: int = 5,
        probe_interval: float = 1.0,
        clock: Clock | None = None,
        _url: str | None = None,
        _client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        prefix_: object = prefix
        if not isinstance(prefix_, str) or not prefix_ or any(c in prefix_ for c in "{} \n"):
            raise ConfigurationError(
                f"prefix must be a non-empty string without braces or spaces, got {prefix!r}"
            )
        if client is None and _url is None:
            raise ConfigurationError("RedisStore needs a redis client (or use RedisStore.from_url)")
        self.prefix = prefix
        self._sync: Any = None
        self._async: Any = None
        if client is not None:
            if _is_async_client(client):
                self._async = client
            elif callable(getattr(client, "evalsha", None)):
                self._sync = client
            else:
                raise ConfigurationError(f"client must be a redis-py client, got {client!r}")
        self._url = _url
        self._client_kwargs = _client_kwargs or {}
        self._injected_clock = clock is not None
        self._clock = resolve_clock(clock)
        self._breaker = _Breaker(
            positive_int(failure_threshold, "failure_threshold"),
            seconds(probe_interval, "probe_interval", allow_zero=False),
            self._clock,
        )
        self._shas: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "resilience",
        cluster: bool = False,
        socket_timeout: float = 0.1,
        socket_connect_timeout: float = 0.1,
        failure_threshold: int = 5,
        probe_interval: float = 1.0,
        clock: Clock | None = None,
        **client_kwargs: Any,
    ) -> RedisStore:
        """A store whose sync and async clients are created from ``url`` on first use.

        Socket timeouts are bounded (0.1 s by default) so a hung Redis cannot hang callers.
        ``cluster=True`` makes Redis Cluster clients.
        """
        url_: object = url
        if not isinstance(url_, str) or not url_.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(f"url must be a redis:// URL, got {url!r}")
        kwargs = {
            "socket_timeout": seconds(socket_timeout, "socket_timeout", allow_zero=False),
            "socket_connect_timeout": seconds(
                socket_connect_timeout, "socket_connect_timeout", allow_zero=False
            ),
            "_cluster": cluster,
            **client_kwargs,
        }
        return cls(
            None,
            prefix=prefix,
            failure_threshold=failure_threshold,
            probe_interval=probe_interval,
            clock=clock,
            _url=url,
            _client_kwargs=kwargs,
        )

    # -- clients ------------------------------------------------------------------------------
    def _kwargs(self) -> tuple[bool, dict[str, Any]]:
        kwargs = dict(self._client_kwargs)
        cluster = bool(kwargs.pop("_cluster", False))
        return cluster, kwargs

    def sync_client(self) -> Any:
        """The sync client (created from the URL on first use)."""
        if self._sync is None:
            if self._url is None:
                raise StoreError(
                    "this RedisStore was given an async client; use it from async code, or "
                    "build the store with RedisStore.from_url to serve both"
                )
            with self._lock:
                if self._sync is None:
                    cluster, kwargs = self._kwargs()
                    if cluster:
                        from redis.cluster import RedisCluster

                        self._sync = RedisCluster.from_url(self._url, **kwargs)
                    else:
                        import redis

                        self._sync = redis.Redis.from_url(self._url, **kwargs)
        return self._sync

    def async_client(self) -> Any:
        """The async client (created from the URL on first use), or ``None`` if only a sync
        client was given."""
        if self._async is None and self._url is not None:
            with self._lock:
                if self._async is None:
                    cluster, kwargs = self._kwargs()
                    if cluster:
                        from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

                        self._async = AsyncRedisCluster.from_url(self._url, **kwargs)
                    else:
                        import redis.asyncio

                        self._async = redis.asyncio.Redis.from_url(self._url, **kwargs)
        return self._async

    # -- keys ---------------------------------------------------------------------------------
    def redis_key(self, key: str, suffix: str = "s") -> str:
        """The Redis key for a logical key: fixed length, hash-tagged, injection-proof."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"{self.prefix}:{{{digest}}}:{suffix}"

    def _keys(self, op: RedisOp[Any]) -> list[str]:
        suffixes = getattr(op, "KEY_SUFFIXES", ("s",))
        return [self.redis_key(op.key, s) for s in suffixes]

    def _argv(self, op: RedisOp[Any]) -> list[str | int | float]:
        now = repr(int(self._clock.monotonic() * 1_000_000)) if self._injected_clock else ""
        return [now, *op.lua_args()]

    def _script(self, op: RedisOp[Any]) -> tuple[str, str]:
        src = LUA_NOW + type(op).LUA
        sha = self._shas.get(src)
        if sha is None:
            sha = hashlib.sha1(src.encode()).hexdigest()
            self._shas[src] = sha
        return src, sha

    # -- apply --------------------------------------------------------------------------------
    def apply(self, op: RedisOp[R], /) -> R:
        """Run ``op``'s script (one round trip; a reload round trip after ``NOSCRIPT``)."""
        if not hasattr(type(op), "LUA"):
            raise ConfigurationError(f"{type(op).__name__} has no Lua twin; it cannot run on Redis")
        self._breaker.check()
        client = self.sync_client()
        keys, argv = self._keys(op), self._argv(op)
        src, sha = self._script(op)
        from redis.exceptions import NoScriptError, RedisError

        try:
            try:
                reply = client.evalsha(sha, len(keys), *keys, *argv)
            except NoScriptError:
                reply = client.eval(src, len(keys), *keys, *argv)
        except RedisError as exc:
            self._breaker.failure()
            raise StoreError(f"redis store failed: {type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            self._breaker.failure()
            raise StoreError(f"redis store failed: {exc}") from exc
        self._breaker.success()
        return op.parse(reply)

    async def aapply(self, op: RedisOp[R], /) -> R:
        """The async twin of :meth:`apply`."""
        client = self.async_client()
        if client is None:
            import asyncio

            return await asyncio.to_thread(self.apply, op)
        if not hasattr(type(op), "LUA"):
            raise ConfigurationError(f"{type(op).__name__} has no Lua twin; it cannot run on Redis")
        self._breaker.check()
        keys, argv = self._keys(op), self._argv(op)
        src, sha = self._script(op)
        from redis.exceptions import NoScriptError, RedisError

        try:
            try:
                reply = await client.evalsha(sha, len(keys), *keys, *argv)
            except NoScriptError:
                reply = await client.eval(src, len(keys), *keys, *argv)
        except RedisError as exc:
            self._breaker.failure()
            raise StoreError(f"redis store failed: {type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            self._breaker.failure()
            raise StoreError(f"redis store failed: {exc}") from exc
        self._breaker.success()
        return op.parse(reply)

    def close(self) -> None:
        """Close the sync client (if this store created it)."""
        if self._sync is not None and self._url is not None:
            self._sync.close()

    async def aclose(self) -> None:
        """Close the async client (if this store created it)."""
        if self._async is not None and self._url is not None:
            await self._async.aclose()

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r}, url={self._url!r})"
