"""Client construction: ``RedisStore.from_url``'s options and the redis-py clients they make
(standalone, Cluster, Sentinel; sync, and async for one event loop)."""

from __future__ import annotations

from typing import Any

from ..._types import seconds
from ...errors import ConfigurationError
from ._sentinel import SENTINEL_SCHEMES, blocking_sentinel_pool, parse_sentinel_url, sentinel_client

__all__ = ["is_async_client", "new_async_client", "new_sync_client", "url_options"]

#: The longest an async call queues for one of its loop's connections (``from_url`` stores;
#: ``timeout=`` overrides it), when that is longer than ``socket_timeout``.
POOL_WAIT = 1.0


def is_async_client(client: Any) -> bool:
    """Whether ``client`` is a redis-py asyncio client (its commands are coroutines)."""
    import inspect

    execute = getattr(client, "execute_command", None)
    return execute is not None and inspect.iscoroutinefunction(execute)


def url_options(
    url: object,
    *,
    cluster: bool,
    socket_timeout: float,
    socket_connect_timeout: float,
    wait_replicas: int,
    wait_timeout: float,
    client_kwargs: dict[str, Any],
) -> dict[str, Any]:
    """The validated client options of :meth:`RedisStore.from_url` (with the private
    ``_cluster`` and ``_sentinel`` flags); a bad URL or option raises
    :class:`~resilience.ConfigurationError` here, not on first use.

    Example:
        >>> opts = url_options(
        ...     "redis://127.0.0.1:6379/0", cluster=False, socket_timeout=0.25,
        ...     socket_connect_timeout=0.25, wait_replicas=0, wait_timeout=0.05, client_kwargs={}
        ... )
        >>> opts["socket_timeout"], opts["_cluster"], opts["_sentinel"]
        (0.25, False, False)
    """
    schemes = ("redis://", "rediss://", "unix://", *SENTINEL_SCHEMES)
    if not isinstance(url, str) or not url.startswith(schemes):
        raise ConfigurationError(
            f"url must be a redis:// URL (or rediss://, unix://, redis+sentinel://), got {url!r}"
        )
    sentinel = url.startswith(SENTINEL_SCHEMES)
    if sentinel:
        if cluster:
            raise ConfigurationError("a Sentinel URL cannot be used with cluster=True")
        parse_sentinel_url(url)  # a bad URL fails here, not on first use
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
    return kwargs


def _split(options: dict[str, Any]) -> tuple[bool, bool, dict[str, Any]]:
    """``(cluster, sentinel, redis-py keyword arguments)`` of :func:`url_options`' result."""
    kwargs = dict(options)
    cluster = bool(kwargs.pop("_cluster", False))
    sentinel = bool(kwargs.pop("_sentinel", False))
    return cluster, sentinel, kwargs


def new_sync_client(url: str, options: dict[str, Any]) -> tuple[Any, list[Any]]:
    """A sync client for ``url`` without command retries, and (Sentinel URL) its sentinels'
    clients."""
    cluster, sentinel, kwargs = _split(options)
    if "retry" not in kwargs:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        kwargs["retry"] = Retry(NoBackoff(), 0)
    if sentinel:
        return sentinel_client(url, kwargs, asynchronous=False)
    if cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url, **kwargs), []
    import redis

    return redis.Redis.from_url(url, **kwargs), []


def new_async_client(url: str, options: dict[str, Any]) -> tuple[Any, list[Any]]:
    """A new async client for one event loop, and (Sentinel URL) its sentinels' clients."""
    cluster, sentinel, kwargs = _split(options)
    if "retry" not in kwargs:
        from redis.asyncio.retry import Retry as AsyncRetry
        from redis.backoff import NoBackoff

        kwargs["retry"] = AsyncRetry(NoBackoff(), 0)
    if cluster:
        from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

        return AsyncRedisCluster.from_url(url, **kwargs), []
    import redis.asyncio

    blocking = not kwargs.get("single_connection_client") and "connection_pool_class" not in kwargs
    if blocking:
        # a burst of concurrent decisions is not an outage: past max_connections they queue
        # for a connection instead of failing (redis-py's default pool raises "Too many
        # connections" past 100). The queue wait is bounded separately from the reply
        # timeout: waiting behind 300 healthy decisions on a busy loop is not a slow Redis.
        kwargs.setdefault("max_connections", 16)  # per event loop; more only adds connects
        kwargs.setdefault("timeout", max(POOL_WAIT, kwargs.get("socket_timeout") or 0.0))
    if sentinel:
        if blocking:
            kwargs["connection_pool_class"] = blocking_sentinel_pool()
        return sentinel_client(url, kwargs, asynchronous=True)
    if not blocking:
        return redis.asyncio.Redis.from_url(url, **kwargs), []
    pool = redis.asyncio.BlockingConnectionPool.from_url(url, **kwargs)
    return redis.asyncio.Redis.from_pool(pool), []
