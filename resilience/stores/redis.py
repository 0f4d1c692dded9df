"""The Redis store: shared state for many processes and hosts, one round trip per decision.

Every operation is one ``EVALSHA`` of a Lua twin of the operation's pure ``apply`` function, run
atomically on the server with the server's clock (``TIME``), so hosts with skewed clocks agree.

* **Scripts** are loaded lazily, cached by SHA, and reloaded transparently on ``NOSCRIPT``
  (restart, failover, ``SCRIPT FLUSH``).
* **Keys**: ``<prefix>:{<sha256(logical key)[:32]>}:<suffix>``. The user-supplied parts of a key
  (user ids, IPs, routes) are hashed, so keys have a fixed length and cannot inject separators
  or hash tags; every key of one entity shares the hash tag, so multi-key scripts work on Redis
  Cluster. Every key a script writes gets a TTL. No ``KEYS``/``SCAN`` on hot paths.
* **Faults**: ``from_url`` sets short socket timeouts (0.1 s by default) and turns off
  redis-py's automatic command retries: a script that timed out may still have run on the
  server, and re-sending it would apply a non-idempotent decision (a permit, a failure count)
  twice and multiply the latency bound; the policy's ``on_store_error`` decides instead.
  Backend errors become :class:`resilience.StoreError` at this boundary. An internal breaker
  opens after ``failure_threshold`` consecutive failures and then fails fast (no network wait) for
  ``probe_interval`` seconds, so a hung Redis costs one timeout, not one per call; each policy
  then applies its ``on_store_error`` decision (limiter ``"open"``, idempotency ``"closed"``,
  breaker ``"local"``).
* **Hot path**: the rate limiter's and breaker's states are single string values of packed
  doubles written with ``SET PX`` (a decision is ``TIME``, ``GET``, ``SET`` inside one script;
  no decimal formatting), their parameters and replies are packed the same way, and with a plain
  ``redis.Redis`` client the store sends the pre-packed ``EVALSHA`` on a connection it keeps
  (redis-py's per-command machinery costs more than the round trip), borrowing from the pool
  under contention. Commands sent this way do not appear in redis-py's own instrumentation.
* **Clients**: ``redis.Redis``, ``redis.asyncio.Redis``, ``redis.cluster.RedisCluster`` and
  ``redis.asyncio.cluster.RedisCluster``; ``from_url`` also takes a ``redis+sentinel://`` URL
  (clients of the master Sentinel names, following failovers). The writes of ``DURABLE``
  operations can wait for replica acknowledgements (``wait_replicas``). A store built by
  :meth:`RedisStore.from_url` serves sync and async policies (it creates each client on
  first use). A store given only a sync client runs async operations in a worker thread; one
  given only an async client cannot serve sync code.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, TypeVar, cast, runtime_checkable

from .._clock import Clock, resolve_clock
from .._types import positive_int, seconds
from ..errors import ConfigurationError, StoreError
from .base import StoreOp

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

__all__ = ["LUA_NOW", "RedisOp", "RedisStore", "parse_sentinel_url", "text", "to_us"]

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
LUA_NOW = """
local function now_us()
  if ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function us(n)
  return string.format('%d', n)
end
local function load(key, now, ...)
  local vals = redis.pcall('HMGET', key, 'x', ...)
  if vals['err'] then return 2 end
  local x = table.remove(vals, 1)
  if not x then
    for i = 1, select('#', ...) do
      if vals[i] then return 2 end
    end
    return 0
  end
  x = tonumber(x)
  if not x then return 2 end
  if x <= now then
    redis.call('DEL', key)
    return 0
  end
  return 1, vals
end
local function expire(key, now, ttl)
  redis.call('HSET', key, 'x', us(now + ttl))
  redis.call('PEXPIRE', key, math.max(1, math.ceil(ttl / 1000)))
end
"""


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


_KEY_CACHE_SIZE = 10_000


def _resp(args: list[Any]) -> bytes:
    """``EVALSHA`` and ``args`` as one RESP command (redis-py's encoding of str/int/float)."""
    out = [b"*%d\r\n$7\r\nEVALSHA\r\n" % (len(args) + 1)]
    for a in args:
        if not isinstance(a, bytes):
            a = (a if isinstance(a, str) else repr(a)).encode("utf-8", "surrogatepass")
        out.append(b"$%d\r\n%b\r\n" % (len(a), a))
    return b"".join(out)


def _roundtrip(conn: Any, args: list[Any], raw: bool) -> Any:
    """Send ``EVALSHA args`` on ``conn`` and read the reply (a failed connection is closed)."""
    try:
        conn.send_packed_command([_resp(args)])
        return conn.read_response(disable_decoding=raw)
    except _errors().ResponseError:
        raise  # the whole reply was read: the connection is fine
    except BaseException:
        conn.disconnect()  # a reply may be pending on this connection
        raise


#: A script as the store runs it: (source, SHA1, key suffixes, execute_command options).
_Script = tuple[str, str, tuple[str, ...], dict[str, Any]]


def _errors() -> Any:
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
        BINARY_REPLY: ``True`` when the reply is packed binary (never decoded by the client).
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


_SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
_SENTINEL_QUERY = ("sentinel_username", "sentinel_password")


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    """``(sentinels, service name, options)`` of a Sentinel URL (see :meth:`RedisStore.from_url`).

    The form is ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``
    ``[?sentinel_username=...&sentinel_password=...]`` (``rediss+sentinel://``: TLS to the
    master). The credentials and ``db`` are the master's; the sentinels' own credentials, if
    any, are the query options. The default sentinel port is 26379.

    Example:
        >>> parse_sentinel_url("redis+sentinel://:pw@10.0.0.1,10.0.0.2:26380/shop/2")
        ([('10.0.0.1', 26379), ('10.0.0.2', 26380)], 'shop', {'password': 'pw', 'db': 2})
    """
    from urllib.parse import parse_qsl, unquote, urlsplit

    def bad(why: str) -> ConfigurationError:
        return ConfigurationError(
            f"invalid Sentinel URL {url!r}: {why} (expected redis+sentinel://[[user]:password@]"
            "host[:port][,host[:port]...]/service_name[/db])"
        )

    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    options: dict[str, Any] = {}
    if userinfo:
        user, _, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if password:
            options["password"] = unquote(password)
    sentinels: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        host, port = item, "26379"
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise bad(f"bad host {item!r}")
                port = rest[1:]
        elif ":" in item:
            host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise bad(f"bad sentinel address {item!r}")
        sentinels.append((host, int(port)))
    path = [unquote(p) for p in parts.path.split("/")[1:]]
    if not path or not path[0] or len(path) > 2:
        raise bad("the path must be /service_name or /service_name/db")
    if len(path) == 2:
        if not path[1].isdigit():
            raise bad(f"db must be a number, got {path[1]!r}")
        options["db"] = int(path[1])
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in _SENTINEL_QUERY:
            raise bad(f"unknown option {name!r} (pass client options as keyword arguments)")
        options[name] = value
    if url.startswith("rediss+"):
        options["ssl"] = True
    return sentinels, path[0], options


def _sentinel_client(
    url: str, kwargs: dict[str, Any], *, asynchronous: bool
) -> tuple[Any, list[Any]]:
    """A client of the master that Sentinel names for the URL's service, and the clients of
    the sentinels (to close with it).

    Its connection pool asks the sentinels for the master's address whenever it connects, and
    drops its connections when the address changes, so the client follows failovers.
    """
    sentinels, service, options = parse_sentinel_url(url)
    connection = {**options, **kwargs}
    sentinel_kwargs: dict[str, Any] = {
        k: v for k, v in connection.items() if k in ("socket_timeout", "socket_connect_timeout")
    }
    for name in _SENTINEL_QUERY:
        if name in connection:
            sentinel_kwargs[name.removeprefix("sentinel_")] = connection.pop(name)
    sentinel_kwargs.update(connection.pop("sentinel_kwargs", None) or {})
    if asynchronous:
        import redis.asyncio
        from redis.asyncio.sentinel import Sentinel as AsyncSentinel

        manager: Any = cast(Any, AsyncSentinel)(sentinels, sentinel_kwargs=sentinel_kwargs)
        client = manager.master_for(service, redis_class=redis.asyncio.Redis, **connection)
        return client, list(manager.sentinels)
    import redis
    from redis.sentinel import Sentinel

    manager = cast(Any, Sentinel)(sentinels, sentinel_kwargs=sentinel_kwargs)
    return manager.master_for(service, redis_class=redis.Redis, **connection), manager.sentinels


class RedisStore:
    """Shared state in Redis or Redis Cluster.

    Args:
        client: a sync or async redis-py client (standalone or cluster), or ``None`` with
            ``from_url``.
        prefix: the first part of every key this store writes.
        failure_threshold: consecutive backend failures that make the store fail fast.
        probe_interval: how long it fails fast before one call probes the backend again.
        wait_replicas: ``0`` (default) or the number of replicas that must acknowledge the
            writes of ``DURABLE`` operations (idempotency claims, renewals and outcomes)
            before the store returns: the script and a ``WAIT wait_replicas wait_timeout`` go
            in one round trip, and a write not acknowledged in time raises
            :class:`~resilience.StoreError` (the policy's ``on_store_error`` applies: by default
            an idempotent call is refused rather than risk running twice after a failover).
            Rate-limit and breaker decisions never wait.
        wait_timeout: the longest a durable write waits for its acknowledgements (seconds;
            shorter than ``socket_timeout``).
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
        wait_replicas: int = 0,
        wait_timeout: float = 0.05,
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
        self._sentinels_sync: list[Any] = []  # with a Sentinel URL: the sentinels' clients
        self._sentinels_async: list[Any] = []
        self._injected_clock = clock is not None
        self._clock = resolve_clock(clock)
        self._breaker = _Breaker(
            positive_int(failure_threshold, "failure_threshold"),
            seconds(probe_interval, "probe_interval", allow_zero=False),
            self._clock,
        )
        self.wait_replicas = positive_int(wait_replicas, "wait_replicas", minimum=0)
        self.wait_timeout = seconds(wait_timeout, "wait_timeout", allow_zero=False)
        self._wait_ms = max(1, round(self.wait_timeout * 1000))
        self._shas: dict[type, _Script] = {}
        self._key_cache: dict[str, tuple[tuple[str, ...], list[str]]] = {}
        self._lock = threading.Lock()
        self._async_ready = False
        self._async_init_lock: Any = None
        self._pool: Any = False  # the direct path's pool (False: not decided yet; see apply)
        self._pool_args: tuple[str, ...] = ()
        self._conn: Any = None  # the direct path's kept connection
        self._conn_pid = 0
        self._conn_lock = threading.Lock()

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
        wait_replicas: int = 0,
        wait_timeout: float = 0.05,
        clock: Clock | None = None,
        **client_kwargs: Any,
    ) -> RedisStore:
        """A store whose sync and async clients are created from ``url`` on first use.

        Socket timeouts are bounded (0.1 s by default) so a hung Redis cannot hang callers.
        ``cluster=True`` makes Redis Cluster clients. A Sentinel URL,
        ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]``
        (``rediss+sentinel://`` for TLS to the master; the sentinels' own credentials as
        ``?sentinel_username=...&sentinel_password=...``; see :func:`parse_sentinel_url`),
        makes clients of the master the sentinels name: they ask the sentinels again when a
        connection fails, so they follow a failover. Other keyword arguments go to the redis-py
        client (``sentinel_kwargs=`` to the sentinel connections, with a Sentinel URL).

        Example:
            >>> import resilience as rs
            >>> store = rs.RedisStore.from_url(
            ...     "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/shop", wait_replicas=1
            ... )
            >>> store.wait_replicas
            1
        """
        url_: object = url
        schemes = ("redis://", "rediss://", "unix://", *_SENTINEL_SCHEMES)
        if not isinstance(url_, str) or not url_.startswith(schemes):
            raise ConfigurationError(
                "url must be a redis:// URL (or rediss://, unix://, redis+sentinel://), "
                f"got {url!r}"
            )
        sentinel = url_.startswith(_SENTINEL_SCHEMES)
        if sentinel:
            if cluster:
                raise ConfigurationError("a Sentinel URL cannot be used with cluster=True")
            parse_sentinel_url(url_)  # a bad URL fails here, not on first use
        kwargs = {
            "socket_timeout": seconds(socket_timeout, "socket_timeout", allow_zero=False),
            "socket_connect_timeout": seconds(
                socket_connect_timeout, "socket_connect_timeout", allow_zero=False
            ),
            "_cluster": cluster,
            "_sentinel": sentinel,
            **client_kwargs,
        }
        if wait_replicas and seconds(wait_timeout, "wait_timeout") >= kwargs["socket_timeout"]:
            raise ConfigurationError(
                f"wait_timeout ({wait_timeout!r} s) must be shorter than socket_timeout "
                f"({socket_timeout!r} s): the reply of a durable write includes the wait"
            )
        return cls(
            None,
            prefix=prefix,
            failure_threshold=failure_threshold,
            probe_interval=probe_interval,
            clock=clock,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
            _url=url,
            _client_kwargs=kwargs,
        )

    # -- clients ------------------------------------------------------------------------------
    def _kwargs(self) -> tuple[bool, dict[str, Any]]:
        kwargs = dict(self._client_kwargs)
        cluster = bool(kwargs.pop("_cluster", False))
        kwargs.pop("_sentinel", None)
        return cluster, kwargs

    @property
    def _sentinel(self) -> bool:
        return bool(self._client_kwargs.get("_sentinel"))

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
                    if "retry" not in kwargs:
                        from redis.backoff import NoBackoff
                        from redis.retry import Retry

                        kwargs["retry"] = Retry(NoBackoff(), 0)
                    if self._sentinel:
                        self._sync, self._sentinels_sync = _sentinel_client(
                            self._url, kwargs, asynchronous=False
                        )
                    elif cluster:
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
                    if "retry" not in kwargs:
                        from redis.asyncio.retry import Retry as AsyncRetry
                        from redis.backoff import NoBackoff

                        kwargs["retry"] = AsyncRetry(NoBackoff(), 0)
                    if self._sentinel:
                        self._async, self._sentinels_async = _sentinel_client(
                            self._url, kwargs, asynchronous=True
                        )
                    elif cluster:
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

    def _keys(self, key: str, suffixes: tuple[str, ...]) -> list[str]:
        cached = self._key_cache.get(key)
        if cached is None or cached[0] != suffixes:
            cache = self._key_cache
            if len(cache) >= _KEY_CACHE_SIZE:
                cache.clear()  # bounded: rotating user keys cannot grow it
            cached = cache[key] = (suffixes, [self.redis_key(key, s) for s in suffixes])
        return cached[1]

    def _script(self, op: Any) -> _Script:
        cls = type(op)
        entry = self._shas.get(cls)
        if entry is None:
            lua = getattr(cls, "LUA", None)
            if not isinstance(lua, str):
                raise ConfigurationError(f"{cls.__name__} has no Lua twin; it cannot run on Redis")
            src = lua if getattr(cls, "LUA_STANDALONE", False) else LUA_NOW + lua
            suffixes = tuple(getattr(cls, "KEY_SUFFIXES", ("s",)))
            # a packed binary reply must not go through the client's decode_responses
            binary = getattr(cls, "BINARY_REPLY", False)
            options: dict[str, Any] = {"NEVER_DECODE": []} if binary else {}
            entry = (src, hashlib.sha1(src.encode()).hexdigest(), suffixes, options)
            self._shas[cls] = entry
        return entry

    def _call(self, op: Any) -> tuple[list[Any], str, dict[str, Any]]:
        """``(EVALSHA arguments, script source, options)`` for ``op``."""
        src, sha, suffixes, options = self._shas.get(type(op)) or self._script(op)
        keys = self._keys(op.key, suffixes)
        now = repr(round(self._clock.monotonic() * 1_000_000)) if self._injected_clock else b""
        return [sha, len(keys), *keys, now, *op.lua_args()], src, options

    # -- apply --------------------------------------------------------------------------------
    def apply(self, op: StoreOp[R], /) -> R:
        """Run ``op``'s Lua twin: one ``EVALSHA`` round trip (plus one ``EVAL`` after
        ``NOSCRIPT``). Raises :class:`~resilience.StoreError` when Redis fails."""
        args, src, options = self._call(op)
        breaker = self._breaker
        if breaker.failures:
            breaker.check()
        client = self._sync or self.sync_client()
        if self.wait_replicas and getattr(type(op), "DURABLE", False):
            return cast("RedisOp[R]", op).parse(self._durable(client, args, src, options))
        pool = self._pool if self._pool is not False else self._direct_pool(client)
        try:
            try:
                if pool is not None:
                    reply = self._direct(pool, args, bool(options))
                else:
                    reply = client.execute_command("EVALSHA", *args, **options)
            except _errors().NoScriptError:
                args[0] = src
                reply = client.execute_command("EVAL", *args, **options)
        except (_errors().RedisError, OSError) as exc:
            breaker.failure()
            raise StoreError(f"redis store failed: {type(exc).__name__}: {exc}") from exc
        if breaker.failures:
            breaker.success()
        return cast("RedisOp[R]", op).parse(reply)

    # -- durable writes (wait_replicas) ---------------------------------------------------------
    # The script and a WAIT are pipelined on one connection (WAIT counts the replicas that have
    # this connection's writes; it cannot run inside a script). On a cluster the WAIT is sent to
    # the node that owns the key; if the topology changed meanwhile (the script was redirected),
    # the write counts as unacknowledged.
    def _durable_pipeline(
        self, client: Any, command: str, args: list[Any], options: dict[str, Any]
    ) -> tuple[Any, Any]:
        node = None
        if callable(getattr(client, "get_node_from_key", None)):  # a cluster client
            node = client.get_node_from_key(args[2])
            pipe = client.pipeline()
            pipe.execute_command(command, *args, **options)
            pipe.execute_command("WAIT", self.wait_replicas, self._wait_ms, target_nodes=node)
        else:
            pipe = client.pipeline(transaction=False)
            pipe.execute_command(command, *args, **options)
            pipe.execute_command("WAIT", self.wait_replicas, self._wait_ms)
        return pipe, node

    def _durable_reply(self, client: Any, args: list[Any], node: Any, replies: list[Any]) -> Any:
        reply, acked = replies
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(acked, BaseException):
            raise acked
        if node is not None and client.get_node_from_key(args[2]).name != node.name:
            acked = -1  # redirected: the WAIT went to the previous owner of the key
        if int(acked) < self.wait_replicas:
            raise StoreError(
                f"redis store: write not acknowledged by {self.wait_replicas} replica(s) within "
                f"{self._wait_ms} ms (a failover could lose it)"
            )
        return reply

    def _durable(self, client: Any, args: list[Any], src: str, options: dict[str, Any]) -> Any:
        """Run the script, then WAIT for ``wait_replicas`` replicas (pipelined: one round trip).
        An unacknowledged write raises :class:`StoreError` (the server answered: the store
        does not start failing fast)."""
        breaker = self._breaker
        try:
            pipe, node = self._durable_pipeline(client, "EVALSHA", args, options)
            replies = pipe.execute(raise_on_error=False)
            if isinstance(replies[0], _errors().NoScriptError):
                args[0] = src
                pipe, node = self._durable_pipeline(client, "EVAL", args, options)
                replies = pipe.execute(raise_on_error=False)
            reply = self._durable_reply(client, args, node, replies)
        except (_errors().RedisError, OSError) as exc:
            breaker.failure()
            raise StoreError(f"redis store failed: {type(exc).__name__}: {exc}") from exc
        if breaker.failures:
            breaker.success()
        return reply

    async def _adurable(
        self, client: Any, args: list[Any], src: str, options: dict[str, Any]
    ) -> Any:
        """The async twin of :meth:`_durable`."""
        breaker = self._breaker
        try:
            pipe, node = self._durable_pipeline(client, "EVALSHA", args, options)
            replies = await pipe.execute(raise_on_error=False)
            if isinstance(replies[0], _errors().NoScriptError):
                args[0] = src
                pipe, node = self._durable_pipeline(client, "EVAL", args, options)
                replies = await pipe.execute(raise_on_error=False)
            reply = self._durable_reply(client, args, node, replies)
        except (_errors().RedisError, OSError) as exc:
            breaker.failure()
            raise StoreError(f"redis store failed: {type(exc).__name__}: {exc}") from exc
        if breaker.failures:
            breaker.success()
        return reply

    def _direct_pool(self, client: Any) -> Any:
        """The connection pool of a plain ``redis.Redis`` client (the direct path), else None.

        Scripts run by a plain standalone client skip redis-py's generic command machinery
        (per-call argument encoding, retry wrapper, command observability): the command is
        packed here and sent on a pooled connection, with the same error handling (a failed
        connection is closed and returned to the pool; no retry).
        """
        import redis

        pool: Any = getattr(client, "connection_pool", None)
        direct = (
            type(client) is redis.Redis
            and getattr(client, "connection", None) is None  # not single_connection_client
            and pool is not None
            and type(pool) in (redis.ConnectionPool, redis.BlockingConnectionPool)
        )
        self._pool = pool if direct else None
        if direct:
            import inspect

            param = inspect.signature(pool.get_connection).parameters.get("command_name")
            self._pool_args = () if param is None or param.default is None else ("EVALSHA",)
        return self._pool

    def _direct(self, pool: Any, args: list[Any], raw: bool) -> Any:
        # One connection is kept for the store (taking one from the pool and giving it back
        # costs more than the round trip itself); a caller that finds it busy (another thread)
        # borrows one from the pool. After a fork the kept connection belongs to the parent.
        lock = self._conn_lock
        if lock.acquire(False):
            try:
                conn = self._conn
                if conn is None or self._conn_pid != os.getpid():
                    conn = self._conn = pool.get_connection(*self._pool_args)
                    self._conn_pid = os.getpid()
                return _roundtrip(conn, args, raw)
            finally:
                lock.release()
        conn = pool.get_connection(*self._pool_args)
        try:
            return _roundtrip(conn, args, raw)
        finally:
            pool.release(conn)

    async def _ready_async_client(self) -> Any:
        """The async client, initialized once (redis-py's async cluster client races when many
        coroutines make its first request concurrently)."""
        client = self._async or self.async_client()
        if client is None or self._async_ready or not callable(getattr(client, "initialize", None)):
            return client
        import asyncio

        if self._async_init_lock is None:
            self._async_init_lock = asyncio.Lock()
        async with self._async_init_lock:
            if not self._async_ready:
                try:
                    await client.initialize()
                except Exception as exc:
                    self._breaker.failure()
                    raise StoreError(f"redis store failed: {type(exc).__name__}: {exc}") from exc
                self._async_ready = True
        return client

    async def aapply(self, op: StoreOp[R], /) -> R:
        """The async twin of :meth:`apply`."""
        client = await self._ready_async_client()
        if client is None:
            import asyncio

            return await asyncio.to_thread(self.apply, op)
        args, src, options = self._call(op)
        if self._breaker.failures:
            self._breaker.check()
        if self.wait_replicas and getattr(type(op), "DURABLE", False):
            return cast("RedisOp[R]", op).parse(await self._adurable(client, args, src, options))
        try:
            try:
                reply = await client.execute_command("EVALSHA", *args, **options)
            except _errors().NoScriptError:
                args[0] = src
                reply = await client.execute_command("EVAL", *args, **options)
        except (_errors().RedisError, OSError) as exc:
            self._breaker.failure()
            raise StoreError(f"redis store failed: {type(exc).__name__}: {exc}") from exc
        if self._breaker.failures:
            self._breaker.success()
        return cast("RedisOp[R]", op).parse(reply)

    def close(self) -> None:
        """Close the sync client (if this store created it)."""
        with self._conn_lock:
            if self._conn is not None and self._pool:
                self._pool.release(self._conn)
            self._conn = None
        if self._sync is not None and self._url is not None:
            self._sync.close()
        for sentinel in self._sentinels_sync:
            sentinel.close()

    async def aclose(self) -> None:
        """Close the async client (if this store created it)."""
        if self._async is not None and self._url is not None:
            await self._async.aclose()
        for sentinel in self._sentinels_async:
            await sentinel.aclose()

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r}, url={self._url!r})"
