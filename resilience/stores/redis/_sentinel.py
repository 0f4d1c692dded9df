"""Redis Sentinel: the ``redis+sentinel://`` URL form and clients of the master it names."""

from __future__ import annotations

from typing import Any, cast

from ...errors import ConfigurationError

__all__ = ["SENTINEL_SCHEMES", "blocking_sentinel_pool", "parse_sentinel_url", "sentinel_client"]

SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
SENTINEL_QUERY = ("sentinel_username", "sentinel_password")


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
        if name not in SENTINEL_QUERY:
            raise bad(f"unknown option {name!r} (pass client options as keyword arguments)")
        options[name] = value
    if url.startswith("rediss+"):
        options["ssl"] = True
    return sentinels, path[0], options


def sentinel_client(
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
    for name in SENTINEL_QUERY:
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


def blocking_sentinel_pool() -> Any:
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
