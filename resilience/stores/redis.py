"""The Redis store: shared state for many processes and hosts, one round trip per decision.

Every operation is one ``EVALSHA`` of a Lua twin of the operation's pure ``apply`` function, run
atomically on the server with the server's clock (``TIME``), so hosts with skewed clocks agree.

* **Scripts** are loaded lazily, cached by SHA, and reloaded transparently on ``NOSCRIPT``
  (restart, failover, ``SCRIPT FLUSH``).
* **Keys**: ``<prefix>:{<sha256(logical key)[:32]>}:<suffix>``. The user-supplied parts of a key
  (user ids, IPs, routes) are hashed, so keys have a fixed length and cannot inject separators
  or hash tags; every key of one entity shares the hash tag, so multi-key scripts work on Redis
  Cluster. Every key a script writes gets a TTL (except a breaker forced open by ``open()``,
  which lasts until ``close()``/``reset()``). No ``KEYS``/``SCAN`` on hot paths.
* **Faults** (the table in ``docs/redis.md``): ``from_url`` sets bounded socket timeouts (0.25 s
  per reply and per connect by default) and turns off redis-py's automatic command retries: a
  script that timed out may still have run on the server, and re-sending it would apply a
  non-idempotent decision (a permit, a failure count) twice and multiply the latency bound; the
  policy's ``on_store_error`` decides instead. Backend errors become
  :class:`resilience.StoreError` at this boundary. An internal breaker fails fast (no network
  wait) after ``failure_threshold`` failures *in a row* (each from a call that began after the
  previous one failed, so one slow moment that times out many concurrent calls counts once);
  then a single probe at a time tries Redis every ``probe_interval`` (50 ms) and the first that
  reaches it ends the fail-fast. A script error or an unparsable reply (a poisoned key, a bug)
  is that key's :class:`~resilience.StoreError` only: it never counts toward the fail-fast. Each
  policy then applies its ``on_store_error`` decision (limiter ``"open"``, idempotency
  ``"closed"``, breaker ``"local"``). The Lua twins treat an undecodable state (NaN, out of
  range, another type) as absent and delete it; the policy emits
  ``StoreFailed(decision="reset")``.
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
  :meth:`RedisStore.from_url` serves sync and async policies: one sync client, and one async
  client per event loop (asyncio connections belong to the loop that opened them; each is
  closed when its loop shuts down, with its own sentinel connections for a Sentinel URL, and
  past 16 connections per loop, calls queue for one). A store given only a sync client runs
  async operations in a worker thread; one given only an async client cannot serve sync code,
  and from another event loop its calls fail with :class:`~resilience.StoreError`. From async
  code nothing blocks the loop: give-backs (a cancelled call's permit, a waiter's reservation)
  run as tasks (:meth:`RedisStore.apply_soon`).
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar, Protocol, TypeVar, cast, runtime_checkable

from .._clock import Clock, resolve_clock
from .._types import positive_int, seconds
from ..errors import ConfigurationError, StoreError
from ._lua import script
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
LUA_NOW = script("resilience.stores", "prelude.lua")

#: The longest an async call queues for one of its loop's connections (``from_url`` stores;
#: ``timeout=`` overrides it), when that is longer than ``socket_timeout``.
POOL_WAIT = 1.0


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
_UNACKED = object()  # a durable write's reply when too few replicas acknowledged it


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
    """The store's fail-fast breaker around the backend (thread-safe, tiny).

    * **An outage, not a slow reply.** Only sequential evidence counts: a failure is counted
      when its call started after the previous counted failure (``epoch`` unchanged since the
      call began), so calls that time out together in one slow moment count once, and
      ``threshold`` counted failures in a row (no success in between) open the breaker.
    * **Quick recovery.** While open, every call fails fast except one probe at a time, admitted
      ``interval`` seconds after the last failure; the first probe that reaches the backend
      closes the breaker.
    * Per-key errors (a script error, an unparsable reply) prove the backend answers: they close
      it too and are never counted.
    """

    __slots__ = (
        "clock",
        "epoch",
        "failures",
        "interval",
        "lock",
        "next_probe",
        "probing",
        "threshold",
    )

    def __init__(self, threshold: int, interval: float, clock: Clock) -> None:
        self.threshold = threshold
        self.interval = interval
        self.clock = clock
        self.failures = 0  # counted failures in a row (the hot path reads only this)
        self.epoch = 0  # bumped by every counted failure
        self.probing = False
        self.next_probe = float("-inf")
        self.lock = threading.Lock()

    def check(self) -> bool:
        """Whether this call is the probe; raises :class:`StoreError` when failing fast."""
        if self.failures < self.threshold:
            return False
        now = self.clock.monotonic()
        with self.lock:
            if self.failures < self.threshold:
                return False
            if self.probing or now < self.next_probe:
                raise StoreError("redis store unavailable (failing fast after errors)")
            self.probing = True
        return True

    def success(self) -> None:
        with self.lock:
            self.failures = 0
            self.probing = False
            self.next_probe = float("-inf")

    def failure(self, epoch: int, probe: bool) -> None:
        """A backend failure of a call that began at ``epoch`` (``probe``: it was the probe)."""
        with self.lock:
            if probe:
                self.probing = False
            if probe or epoch == self.epoch:
                self.epoch += 1
                self.failures += 1
                if self.failures >= self.threshold:
                    self.next_probe = self.clock.monotonic() + self.interval

    def abandon(self) -> None:
        """The probe ended without an answer either way (cancelled): let another call probe."""
        with self.lock:
            self.probing = False


#: Error codes of replies that describe the server's state, not one key's script: they count
#: as backend failures. (redis-py maps some to subclasses of ``ResponseError``; the rest keep
#: their code at the start of the message.)
_SERVER_STATE_CODES = (
    "BUSY",
    "CLUSTERDOWN",
    "LOADING",
    "MASTERDOWN",
    "MISCONF",
    "NOAUTH",
    "NOPERM",
    "NOREPLICAS",
    "OOM",
    "READONLY",
    "TRYAGAIN",
    "UNBLOCKED",
)


def _is_key_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a deterministic error of one key's script (not a backend failure).

    A script that raises (a poisoned value it cannot represent, a wrong type, a bug) fails the
    same way on every retry and on any other connection, and says nothing about the server's
    health; ``OOM``, ``READONLY``, ``BUSY``... do.
    """
    errors = _errors()
    return type(exc) is errors.ResponseError and not str(exc).startswith(_SERVER_STATE_CODES)


def _key_error(op: Any, exc: BaseException) -> StoreError:
    return StoreError(
        f"redis store: the operation on {op.key!r} failed ({type(exc).__name__}: {exc}); "
        "the store keeps serving other keys"
    )


class _LoopClient:
    """The async client of one event loop (see :meth:`RedisStore._loop_client`), and with a
    Sentinel URL the clients of its sentinels (closed with it)."""

    __slots__ = ("client", "closer", "init_lock", "ready", "sentinels")

    def __init__(self, client: Any, sentinels: Sequence[Any] = ()) -> None:
        self.client = client
        self.sentinels = list(sentinels)
        self.ready = False
        self.init_lock: Any = None
        self.closer: Any = None


async def _aclose_all(client: Any, sentinels: Sequence[Any]) -> None:
    """Close an async client, then the sentinel clients it asked for the master."""
    try:
        await client.aclose()
    finally:
        for sentinel in sentinels:
            await sentinel.aclose()


async def _close_at_loop_shutdown(
    client: Any, sentinels: Sequence[Any], forget: Callable[[], object]
) -> AsyncIterator[None]:
    """An async generator whose ``finally`` closes ``client`` (and its ``sentinels``):
    ``asyncio.run`` (and pytest's loops) close every live async generator while the loop still
    runs, so the client's connections are closed on their own loop before it is closed;
    ``forget`` then drops the loop's entry (the client's pool refers to its loop)."""
    try:
        yield None
    finally:
        forget()
        try:
            await _aclose_all(client, sentinels)
        except Exception:  # pragma: no cover - best effort at shutdown
            pass


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


_BLOCKING_SENTINEL_POOL: Any = None


def _blocking_sentinel_pool() -> Any:
    """redis-py's async Sentinel pool, queueing for a connection past ``max_connections`` (up
    to ``timeout``) like ``BlockingConnectionPool`` instead of raising "Too many connections"."""
    global _BLOCKING_SENTINEL_POOL
    if _BLOCKING_SENTINEL_POOL is None:
        from redis.asyncio import BlockingConnectionPool
        from redis.asyncio.sentinel import SentinelConnectionPool

        class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
            pass

        _BLOCKING_SENTINEL_POOL = BlockingSentinelConnectionPool
    return _BLOCKING_SENTINEL_POOL


class RedisStore:
    """Shared state in Redis or Redis Cluster.

    Args:
        client: a sync or async redis-py client (standalone or cluster), or ``None`` with
            ``from_url``.
        prefix: the first part of every key this store writes.
        failure_threshold: backend failures in a row (calls that began after the previous
            failure, with no success in between) that make the store fail fast.
        probe_interval: while failing fast, how long after the last failure one call (a
            single probe at a time) tries the backend again; its success ends the fail-fast.
        wait_replicas: ``0`` (default) or the number of replicas that must acknowledge the
            writes of ``DURABLE`` operations (idempotency claims, renewals and outcomes)
            before the store returns: the script and a ``WAIT wait_replicas wait_timeout`` go
            in one round trip, and a write not acknowledged in time raises
            :class:`~resilience.StoreError` (the policy's ``on_store_error`` applies: by default
            an idempotent call is refused rather than risk running twice after a failover).
            The server answered, so an unacknowledged write never makes the store fail fast.
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
        failure_threshold: int = 3,
        probe_interval: float = 0.05,
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
        self._async: Any = None  # a given async client (from_url: one per event loop)
        if client is not None:
            if _is_async_client(client):
                self._async = client
            elif callable(getattr(client, "evalsha", None)):
                self._sync = client
            else:
                raise ConfigurationError(f"client must be a redis-py client, got {client!r}")
        self._url = _url
        self._client_kwargs = _client_kwargs or {}
        self._sentinels_sync: list[Any] = []  # with a Sentinel URL: the sync sentinels' clients
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
        self._given = _LoopClient(self._async)  # the given async client's init state
        # event loop -> its _LoopClient (weak: a finished loop's entry goes with the loop)
        self._loops: weakref.WeakKeyDictionary[Any, _LoopClient] = weakref.WeakKeyDictionary()
        self._background: set[Any] = set()  # apply_soon tasks (strong references)
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
        socket_timeout: float = 0.25,
        socket_connect_timeout: float = 0.25,
        failure_threshold: int = 3,
        probe_interval: float = 0.05,
        wait_replicas: int = 0,
        wait_timeout: float = 0.05,
        clock: Clock | None = None,
        **client_kwargs: Any,
    ) -> RedisStore:
        """A store whose sync and async clients are created from ``url`` on first use (one
        async client per event loop).

        Socket timeouts are bounded (0.25 s per reply and per connect by default) so a
        hung Redis cannot hang callers. ``cluster=True`` makes Redis Cluster clients. A Sentinel
        URL, ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]``
        (``rediss+sentinel://`` for TLS to the master; the sentinels' own credentials as
        ``?sentinel_username=...&sentinel_password=...``; see :func:`parse_sentinel_url`),
        makes clients of the master the sentinels name: they ask the sentinels again when a
        connection fails, so they follow a failover (each event loop's async client has its own
        sentinel connections, closed with it). Other keyword arguments go to the redis-py
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

    def _new_async_client(self) -> tuple[Any, list[Any]]:
        """A new async client for one event loop, and (Sentinel URL) its sentinels' clients."""
        assert self._url is not None
        cluster, kwargs = self._kwargs()
        if "retry" not in kwargs:
            from redis.asyncio.retry import Retry as AsyncRetry
            from redis.backoff import NoBackoff

            kwargs["retry"] = AsyncRetry(NoBackoff(), 0)
        if cluster:
            from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

            return AsyncRedisCluster.from_url(self._url, **kwargs), []
        import redis.asyncio

        blocking = (
            not kwargs.get("single_connection_client") and "connection_pool_class" not in kwargs
        )
        if blocking:
            # a burst of concurrent decisions is not an outage: past max_connections they queue
            # for a connection instead of failing (redis-py's default pool raises "Too many
            # connections" past 100). The queue wait is bounded separately from the reply
            # timeout: waiting behind 300 healthy decisions on a busy loop is not a slow Redis.
            kwargs.setdefault("max_connections", 16)  # per event loop; more only adds connects
            kwargs.setdefault("timeout", max(POOL_WAIT, kwargs.get("socket_timeout") or 0.0))
        if self._sentinel:
            if blocking:
                kwargs["connection_pool_class"] = _blocking_sentinel_pool()
            return _sentinel_client(self._url, kwargs, asynchronous=True)
        if not blocking:
            return redis.asyncio.Redis.from_url(self._url, **kwargs), []
        pool = redis.asyncio.BlockingConnectionPool.from_url(self._url, **kwargs)
        return redis.asyncio.Redis.from_pool(pool), []

    def _loop_client(self) -> _LoopClient | None:
        """The running loop's client state: the given async client's, or (``from_url``) a
        client of this loop's own (asyncio connections belong to the loop that opened them)."""
        if self._async is not None:
            return self._given
        if self._url is None:
            return None
        import asyncio

        loop = asyncio.get_running_loop()
        entry = self._loops.get(loop)
        if entry is None:
            with self._lock:
                entry = self._loops.get(loop)
                if entry is None:
                    for old in [lp for lp in self._loops if lp.is_closed()]:
                        del self._loops[old]  # a loop closed without shutdown_asyncgens
                    entry = self._loops[loop] = _LoopClient(*self._new_async_client())
        return entry

    def async_client(self) -> Any:
        """The async client for the running event loop (``from_url``: created on first use in
        each loop, closed when that loop shuts down), the given async client, or ``None`` if
        only a sync client was given."""
        entry = self._loop_client()
        return None if entry is None else entry.client

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
        ``NOSCRIPT``). Raises :class:`~resilience.StoreError` when Redis fails (or when this
        key's script fails: such an error stays with the key and never makes the store fail
        fast)."""
        args, src, options = self._call(op)
        breaker = self._breaker
        epoch = breaker.epoch
        probe = breaker.check() if breaker.failures else False
        client = self._sync or self.sync_client()
        if self.wait_replicas and getattr(type(op), "DURABLE", False):
            return cast(R, self._durable(op, client, args, src, options, epoch, probe))
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
            if _is_key_error(exc):
                breaker.success()  # the server answered
                raise _key_error(op, exc) from exc
            breaker.failure(epoch, probe)
            raise StoreError(f"redis store failed: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            if probe:
                breaker.abandon()
            raise
        if breaker.failures:
            breaker.success()
        return cast(R, self._parse(op, reply))

    @staticmethod
    def _parse(op: Any, reply: Any) -> Any:
        try:
            return cast("RedisOp[Any]", op).parse(reply)
        except Exception as exc:  # a reply this op cannot read: this key's problem
            raise _key_error(op, exc) from exc

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
        """The script's reply, or :data:`_UNACKED` when too few replicas acknowledged it."""
        reply, acked = replies
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(acked, BaseException):
            raise acked
        if node is not None and client.get_node_from_key(args[2]).name != node.name:
            acked = -1  # redirected: the WAIT went to the previous owner of the key
        return reply if int(acked) >= self.wait_replicas else _UNACKED

    def _unacked(self, op: Any) -> StoreError:
        return StoreError(
            f"redis store: the write of {op.key!r} was not acknowledged by {self.wait_replicas} "
            f"replica(s) within {self._wait_ms} ms (a failover could lose it)"
        )

    def _durable(
        self,
        op: Any,
        client: Any,
        args: list[Any],
        src: str,
        options: dict[str, Any],
        epoch: int,
        probe: bool,
    ) -> Any:
        """Run the script, then WAIT for ``wait_replicas`` replicas (pipelined: one round trip),
        with :meth:`apply`'s fault model. An unacknowledged write raises :class:`StoreError`
        (the server answered: the store does not start failing fast)."""
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
            if _is_key_error(exc):
                breaker.success()  # the server answered
                raise _key_error(op, exc) from exc
            breaker.failure(epoch, probe)
            raise StoreError(f"redis store failed: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            if probe:
                breaker.abandon()
            raise
        if breaker.failures:
            breaker.success()
        if reply is _UNACKED:
            raise self._unacked(op)
        return self._parse(op, reply)

    async def _adurable(
        self,
        op: Any,
        client: Any,
        args: list[Any],
        src: str,
        options: dict[str, Any],
        epoch: int,
        probe: bool,
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
            if _is_key_error(exc):
                breaker.success()
                raise _key_error(op, exc) from exc
            breaker.failure(epoch, probe)
            raise StoreError(f"redis store failed: {type(exc).__name__}: {exc}") from exc
        except RuntimeError as exc:  # a given async client used from another event loop
            if probe:
                breaker.abandon()
            raise StoreError(
                f"redis store: the async client cannot be used from this event loop ({exc}); "
                "build the store with RedisStore.from_url to get one client per event loop"
            ) from exc
        except BaseException:
            if probe:
                breaker.abandon()
            raise
        if breaker.failures:
            breaker.success()
        if reply is _UNACKED:
            raise self._unacked(op)
        return self._parse(op, reply)

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
        """The running loop's async client, initialized once per loop (redis-py's async cluster
        client races when many coroutines make its first request concurrently)."""
        entry = self._loop_client()
        if entry is None:
            return None
        client = entry.client
        if entry.closer is None and client is not self._async:
            # close this loop's connections when the loop shuts down (asyncio.run, pytest)
            import asyncio

            loop = asyncio.get_running_loop()
            entry.closer = _close_at_loop_shutdown(
                client, entry.sentinels, lambda: self._loops.pop(loop, None)
            )
            await entry.closer.__anext__()
        if entry.ready or not callable(getattr(client, "initialize", None)):
            return client
        import asyncio

        if entry.init_lock is None:
            entry.init_lock = asyncio.Lock()
        async with entry.init_lock:
            if not entry.ready:
                breaker = self._breaker
                epoch = breaker.epoch
                probe = breaker.check() if breaker.failures else False
                try:
                    await client.initialize()
                except Exception as exc:
                    breaker.failure(epoch, probe)
                    raise StoreError(f"redis store failed: {type(exc).__name__}: {exc}") from exc
                except BaseException:
                    if probe:
                        breaker.abandon()
                    raise
                entry.ready = True
        return client

    async def aapply(self, op: StoreOp[R], /) -> R:
        """The async twin of :meth:`apply` (never blocks the event loop; from any event loop)."""
        client = await self._ready_async_client()
        if client is None:
            import asyncio

            return await asyncio.to_thread(self.apply, op)
        args, src, options = self._call(op)
        breaker = self._breaker
        epoch = breaker.epoch
        probe = breaker.check() if breaker.failures else False
        if self.wait_replicas and getattr(type(op), "DURABLE", False):
            return cast(R, await self._adurable(op, client, args, src, options, epoch, probe))
        try:
            try:
                reply = await client.execute_command("EVALSHA", *args, **options)
            except _errors().NoScriptError:
                args[0] = src
                reply = await client.execute_command("EVAL", *args, **options)
        except (_errors().RedisError, OSError) as exc:
            if _is_key_error(exc):
                breaker.success()
                raise _key_error(op, exc) from exc
            breaker.failure(epoch, probe)
            raise StoreError(f"redis store failed: {type(exc).__name__}: {exc}") from exc
        except RuntimeError as exc:  # a given async client used from another event loop
            if probe:
                breaker.abandon()
            raise StoreError(
                f"redis store: the async client cannot be used from this event loop ({exc}); "
                "build the store with RedisStore.from_url to get one client per event loop"
            ) from exc
        except BaseException:
            if probe:
                breaker.abandon()
            raise
        if breaker.failures:
            breaker.success()
        return cast(R, self._parse(op, reply))

    def apply_soon(
        self, op: StoreOp[Any], /, on_error: Callable[[StoreError], object] | None = None
    ) -> None:
        """Run ``op`` without waiting for its result: on a running event loop as a task (the
        loop never blocks on Redis, and a cancelled caller need not await), else inline.

        For operations whose result nobody needs (giving back a permit or a reservation, a
        cleanup); ``on_error`` receives the :class:`~resilience.StoreError` if one is raised.

        Example:
            >>> import resilience as rs
            >>> class Touch:
            ...     key = "k"
            ...     LUA = "return 1"
            ...     def lua_args(self): return []
            ...     def parse(self, reply): return reply
            >>> store = rs.RedisStore.from_url("redis://127.0.0.1:1/0")  # nothing listens
            >>> errors = []
            >>> store.apply_soon(Touch(), on_error=errors.append)  # no running loop: inline
            >>> type(errors[0]).__name__
            'StoreError'
        """
        asyncio = sys.modules.get("asyncio")
        loop = None
        if asyncio is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        if loop is None:
            try:
                self.apply(op)
            except StoreError as exc:
                if on_error is not None:
                    on_error(exc)
            return
        task = loop.create_task(self._apply_quietly(op, on_error))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _apply_quietly(
        self, op: StoreOp[Any], on_error: Callable[[StoreError], object] | None
    ) -> None:
        try:
            await self.aapply(op)
        except StoreError as exc:
            if on_error is not None:
                on_error(exc)

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
        """Close the running loop's async client (if this store created it) and, with a
        Sentinel URL, its sentinel connections; every loop's client is also closed when its
        loop shuts down."""
        if self._url is None:
            return
        import asyncio

        entry = self._loops.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            closer, entry.closer = entry.closer, None
            if closer is not None:
                await closer.aclose()  # its finally closes the client and its sentinels
            else:
                await _aclose_all(entry.client, entry.sentinels)

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r}, url={self._url!r})"
