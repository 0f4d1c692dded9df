"""The :class:`RedisStore` class: client selection, keys, the script cache and the calls."""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, Literal, TypeVar, cast

from ..._clock import Clock, resolve_clock
from ..._types import positive_int, seconds
from ...errors import ConfigurationError, StoreError
from ..base import StoreOp
from ._clients import is_async_client, new_async_client, new_sync_client, url_options
from ._direct import BULK, Direct, bulks, direct_path, resp
from ._durable import Durable
from ._faults import WRONG_LOOP, Breaker, parse_reply
from ._loops import LoopClients
from ._ops import LUA_NOW, Script, redis_errors

R = TypeVar("R")

__all__ = ["RedisStore"]

_KEY_CACHE_SIZE = 10_000


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
        given_async: Any = None  # a given async client (from_url: one per event loop)
        if client is not None:
            if is_async_client(client):
                given_async = client
            elif callable(getattr(client, "evalsha", None)):
                self._sync = client
            else:
                raise ConfigurationError(f"client must be a redis-py client, got {client!r}")
        self._url = _url
        self._client_kwargs = options = _client_kwargs or {}
        self._sentinels_sync: list[Any] = []  # with a Sentinel URL: the sync sentinels' clients
        self._injected_clock = clock is not None
        self._clock = resolve_clock(clock)
        self._breaker = Breaker(
            positive_int(failure_threshold, "failure_threshold"),
            seconds(probe_interval, "probe_interval", allow_zero=False),
            self._clock,
        )
        self.wait_replicas = positive_int(wait_replicas, "wait_replicas", minimum=0)
        self.wait_timeout = seconds(wait_timeout, "wait_timeout", allow_zero=False)
        self._durable = Durable(
            self.wait_replicas, max(1, round(self.wait_timeout * 1000)), self._breaker
        )
        self._shas: dict[type, Script] = {}
        self._key_cache: dict[str, tuple[tuple[str, ...], list[str]]] = {}
        # (op class, key) -> the packed head of its EVALSHA (the direct paths)
        self._heads: dict[tuple[type, str], tuple[int, bytes]] = {}
        self._lock = threading.Lock()
        new_client: Callable[[], tuple[Any, list[Any]]] | None = None
        if _url is not None:
            new_client = partial(new_async_client, _url, options)
        self._aclients = LoopClients(given_async, new_client, self._breaker)
        self._loops = self._aclients.loops  # event loop -> its LoopClient (weak keys)
        self._background: set[Any] = set()  # apply_soon tasks (strong references)
        # the direct path of a plain redis.Redis client (None: none; False: not decided yet)
        self._direct: Direct | Literal[False] | None = False

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
        options = url_options(
            url,
            cluster=cluster,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
            client_kwargs=client_kwargs,
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
            _client_kwargs=options,
        )

    # -- clients ------------------------------------------------------------------------------
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
                    self._sync, self._sentinels_sync = new_sync_client(
                        self._url, self._client_kwargs
                    )
        return self._sync

    def async_client(self) -> Any:
        """The async client for the running event loop (``from_url``: created on first use in
        each loop, closed when that loop shuts down), the given async client, or ``None`` if
        only a sync client was given."""
        entry = self._aclients.entry()
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

    def _script(self, op: Any) -> Script:
        cls = type(op)
        entry = self._shas.get(cls)
        if entry is None:
            lua = getattr(cls, "LUA", None)
            if not isinstance(lua, str):
                raise ConfigurationError(f"{cls.__name__} has no Lua twin; it cannot run on Redis")
            src = lua if getattr(cls, "LUA_STANDALONE", False) else LUA_NOW + lua
            suffixes = tuple(getattr(cls, "KEY_SUFFIXES", ("s",)))
            # a binary reply must not go through the client's decode_responses; one packed
            # string (BULK) is read straight from the socket on a direct path
            options: dict[str, Any] = (
                BULK
                if getattr(cls, "BINARY_REPLY", False)
                else {"NEVER_DECODE": []}
                if getattr(cls, "RAW_REPLY", False)
                else {}
            )
            entry = (src, hashlib.sha1(src.encode()).hexdigest(), suffixes, options)
            self._shas[cls] = entry
        return entry

    def _call(self, op: Any) -> tuple[list[Any], str, dict[str, Any]]:
        """``(EVALSHA arguments, script source, options)`` for ``op``."""
        src, sha, suffixes, options = self._shas.get(type(op)) or self._script(op)
        keys = self._keys(op.key, suffixes)
        now = repr(round(self._clock.monotonic() * 1_000_000)) if self._injected_clock else b""
        return [sha, len(keys), *keys, now, *op.lua_args()], src, options

    def _packed(self, op: Any) -> tuple[bytes, str, dict[str, Any]]:
        """``(the packed EVALSHA command, script source, options)`` for ``op`` on a direct path:
        the script's SHA, keys and clock override are packed once per key."""
        cls = type(op)
        src, sha, suffixes, options = self._shas.get(cls) or self._script(op)
        tail = op.lua_args()
        if self._injected_clock:
            return resp(self._call(op)[0]), src, options
        cached = self._heads.get((cls, op.key))
        if cached is None or cached[0] != len(tail):
            keys = self._keys(op.key, suffixes)
            head = bulks([sha, len(keys), *keys, b""])
            heads = self._heads
            if len(heads) >= _KEY_CACHE_SIZE:
                heads.clear()  # bounded: rotating user keys cannot grow it
            n = len(keys) + 4 + len(tail)
            cached = heads[cls, op.key] = (len(tail), b"*%d\r\n$7\r\nEVALSHA\r\n%b" % (n, head))
        return cached[1] + bulks(tail), src, options

    # -- apply --------------------------------------------------------------------------------
    def apply(self, op: StoreOp[R], /) -> R:
        """Run ``op``'s Lua twin: one ``EVALSHA`` round trip (plus one ``EVAL`` after
        ``NOSCRIPT``). Raises :class:`~resilience.StoreError` when Redis fails (or when this
        key's script fails: such an error stays with the key and never makes the store fail
        fast)."""
        client = self._sync or self.sync_client()  # before a probe is admitted, like aapply
        durable = self.wait_replicas and getattr(type(op), "DURABLE", False)
        direct = self._direct if self._direct is not False else self._direct_path(client)
        if direct is not None and not durable:
            data, src, options = self._packed(op)
        else:
            args, src, options = self._call(op)
        breaker = self._breaker
        epoch = breaker.epoch
        probe = breaker.check() if breaker.failures else False
        if durable:
            return cast(R, self._durable.run(op, client, args, src, options, epoch, probe))
        try:
            try:
                if direct is not None:
                    reply = direct.call(data, options)
                else:
                    reply = client.execute_command("EVALSHA", *args, **options)
            except redis_errors().NoScriptError:
                args = self._call(op)[0]
                args[0] = src
                reply = client.execute_command("EVAL", *args, **options)
        except (redis_errors().RedisError, OSError) as exc:
            raise breaker.failed(op, exc, epoch, probe) from exc
        except BaseException:
            if probe:
                breaker.abandon()
            raise
        if breaker.failures:
            breaker.success()
        return cast(R, parse_reply(op, reply))

    def _direct_path(self, client: Any) -> Direct | None:
        """Decide once whether ``client`` takes the direct path (a plain ``redis.Redis``)."""
        self._direct = direct = direct_path(client)
        return direct

    async def aapply(self, op: StoreOp[R], /) -> R:
        """The async twin of :meth:`apply` (never blocks the event loop; from any event loop)."""
        entry = await self._aclients.ready_entry()
        if entry is None:
            import asyncio

            return await asyncio.to_thread(self.apply, op)
        client = entry.client
        durable = self.wait_replicas and getattr(type(op), "DURABLE", False)
        direct = entry.direct
        if direct is not None and not durable:
            data, src, options = self._packed(op)
        else:
            args, src, options = self._call(op)
        breaker = self._breaker
        epoch = breaker.epoch
        probe = breaker.check() if breaker.failures else False
        if durable:
            return cast(R, await self._durable.arun(op, client, args, src, options, epoch, probe))
        try:
            try:
                if direct is not None:
                    reply = await direct.call(data, options)
                else:
                    reply = await client.execute_command("EVALSHA", *args, **options)
            except redis_errors().NoScriptError:
                args = self._call(op)[0]
                args[0] = src
                reply = await client.execute_command("EVAL", *args, **options)
        except (redis_errors().RedisError, OSError) as exc:
            raise breaker.failed(op, exc, epoch, probe) from exc
        except WRONG_LOOP as exc:  # a given async client used from another event loop
            raise breaker.wrong_loop(exc, probe) from exc
        except BaseException:
            if probe:
                breaker.abandon()
            raise
        if breaker.failures:
            breaker.success()
        return cast(R, parse_reply(op, reply))

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
        direct = self._direct
        if direct:
            direct.close()
        if self._sync is not None and self._url is not None:
            self._sync.close()
        for sentinel in self._sentinels_sync:
            sentinel.close()

    async def aclose(self) -> None:
        """Close the running loop's async client (if this store created it) and, with a
        Sentinel URL, its sentinel connections; every loop's client is also closed when its
        loop shuts down."""
        await self._aclients.aclose()

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r}, url={self._url!r})"
