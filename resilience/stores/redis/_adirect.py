"""The async direct path: a loop's own ``redis.asyncio`` client's scripts sent pre-packed on a
connection kept for that loop.

The async twin of :mod:`._direct`. redis-py's async command path wraps every command in its
retry machinery and every write in a task with its own timeout (``asyncio.wait_for``), which
costs more than the round trip of a hot decision; here the ``EVALSHA`` is written on the kept
connection directly (a write that does not fit the socket buffer waits for it under the
connection's ``socket_timeout``) and the reply is read under the same timeout: a binary
reply (a rate-limit decision) straight from the connection's stream, others with redis-py's
reader. A coroutine that finds the kept connection busy (another decision of the same loop in
flight) borrows one from the pool. A failed or cancelled call closes its connection (a reply
may be pending on it; the next call reconnects). Only a store's own per-loop clients
(``RedisStore.from_url``) take it: their connections belong to one loop.
"""

from __future__ import annotations

from typing import Any

from ._direct import BULK, binary_reply
from ._ops import redis_errors

__all__ = ["AsyncDirect", "async_direct_path"]


async def _recv(reader: Any, data: bytes) -> bytes:
    """``data`` and what ``reader`` has next (the server closing the connection is an error)."""
    more: bytes = await reader.read(65536)
    if not more:
        raise redis_errors().ConnectionError("Connection closed by server.")
    return data + more


async def _read_binary(reader: Any) -> bytes:
    """The reply of a binary script (see :func:`~._direct.binary_reply`)."""
    reply, data = binary_reply(await _recv(reader, b""))
    while reply is None:
        reply, data = binary_reply(await _recv(reader, data))
    return reply


async def _roundtrip(conn: Any, data: bytes, options: dict[str, Any]) -> Any:
    """Send the packed ``data`` on ``conn`` and read the reply (a failed connection is closed)."""
    try:
        writer = conn._writer
        if writer is None or not conn.is_connected:
            await conn.connect()
            writer = conn._writer
        writer.write(data)
        if writer.transport.get_write_buffer_size():  # the socket buffer is full: wait for it
            import asyncio

            timeout = conn.socket_timeout
            try:
                await asyncio.wait_for(writer.drain(), timeout)
            except TimeoutError:
                raise redis_errors().TimeoutError("Timeout writing to socket") from None
        if options is not BULK:
            return await conn.read_response(disable_decoding=bool(options))
        timeout = conn.socket_timeout
        if not timeout:
            return await _read_binary(conn._reader)
        import asyncio

        try:
            async with asyncio.timeout(timeout):
                return await _read_binary(conn._reader)
        except TimeoutError:
            raise redis_errors().TimeoutError("Timeout reading from socket") from None
    except redis_errors().ResponseError:
        raise  # the whole reply was read: the connection is fine
    except BaseException:
        await conn.disconnect(nowait=True)  # a reply may be pending on this connection
        raise


class AsyncDirect:
    """The kept connection of one event loop's pool (one loop: no thread lock needed)."""

    __slots__ = ("busy", "conn", "pool", "pool_args")

    def __init__(self, pool: Any, pool_args: tuple[str, ...]) -> None:
        self.pool = pool
        self.pool_args = pool_args
        self.conn: Any = None
        self.busy = False

    async def call(self, data: bytes, options: dict[str, Any]) -> Any:
        """The reply of the packed ``EVALSHA`` ``data`` (``options``: the script's; :data:`BULK`:
        one packed string read straight from the stream)."""
        if not self.busy:
            self.busy = True
            try:
                conn = self.conn
                if conn is None:
                    conn = self.conn = await self.pool.get_connection(*self.pool_args)
                return await _roundtrip(conn, data, options)
            finally:
                self.busy = False
        pool = self.pool
        conn = await pool.get_connection(*self.pool_args)
        try:
            return await _roundtrip(conn, data, options)
        finally:
            await pool.release(conn)

    async def aclose(self) -> None:
        """Give the kept connection back to the pool."""
        conn, self.conn = self.conn, None
        if conn is not None:
            await self.pool.release(conn)


def async_direct_path(client: Any) -> AsyncDirect | None:
    """The direct path of a plain ``redis.asyncio.Redis`` client (not
    ``single_connection_client``, a redis-py pool, connections with a stream writer), else
    ``None`` (the client's own ``execute_command`` is used)."""
    import redis.asyncio

    pool: Any = getattr(client, "connection_pool", None)
    direct = (
        type(client) is redis.asyncio.Redis
        and getattr(client, "connection", None) is None  # not single_connection_client
        and pool is not None
        and type(pool) in (redis.asyncio.ConnectionPool, redis.asyncio.BlockingConnectionPool)
        and pool.connection_class is redis.asyncio.Connection
        and hasattr(redis.asyncio.Connection(), "_writer")
    )
    if not direct:
        return None
    import inspect

    param = inspect.signature(pool.get_connection).parameters.get("command_name")
    return AsyncDirect(pool, () if param is None or param.default is None else ("EVALSHA",))
