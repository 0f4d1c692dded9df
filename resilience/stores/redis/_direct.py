"""The direct path: a plain ``redis.Redis`` client's scripts sent pre-packed on a kept connection.

redis-py's per-command machinery (argument encoding, retry wrapper, command observability) costs
more than the round trip of a hot decision, so with a plain standalone client the store packs
the ``EVALSHA`` here and sends it on a connection it keeps, borrowing one from the pool under
contention, with the same error handling (a failed connection is closed; no retry). Commands
sent this way do not appear in redis-py's own instrumentation.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ._ops import redis_errors

__all__ = ["Direct", "direct_path", "resp"]


def resp(args: list[Any]) -> bytes:
    """``EVALSHA`` and ``args`` as one RESP command (redis-py's encoding of str/int/float).

    Example:
        >>> resp(["abc", 1, b""])
        b'*4\\r\\n$7\\r\\nEVALSHA\\r\\n$3\\r\\nabc\\r\\n$1\\r\\n1\\r\\n$0\\r\\n\\r\\n'
    """
    out = [b"*%d\r\n$7\r\nEVALSHA\r\n" % (len(args) + 1)]
    for a in args:
        if not isinstance(a, bytes):
            a = (a if isinstance(a, str) else repr(a)).encode("utf-8", "surrogatepass")
        out.append(b"$%d\r\n%b\r\n" % (len(a), a))
    return b"".join(out)


def _roundtrip(conn: Any, args: list[Any], raw: bool) -> Any:
    """Send ``EVALSHA args`` on ``conn`` and read the reply (a failed connection is closed)."""
    try:
        conn.send_packed_command([resp(args)])
        return conn.read_response(disable_decoding=raw)
    except redis_errors().ResponseError:
        raise  # the whole reply was read: the connection is fine
    except BaseException:
        conn.disconnect()  # a reply may be pending on this connection
        raise


class Direct:
    """The kept connection of one store's pool, shared by its threads.

    One connection is kept for the store (taking one from the pool and giving it back costs
    more than the round trip itself); a caller that finds it busy (another thread) borrows one
    from the pool. After a fork the kept connection belongs to the parent: the child takes its
    own.
    """

    __slots__ = ("conn", "lock", "pid", "pool", "pool_args")

    def __init__(self, pool: Any, pool_args: tuple[str, ...]) -> None:
        self.pool = pool
        self.pool_args = pool_args  # get_connection's arguments (older redis-py: a command name)
        self.conn: Any = None
        self.pid = 0
        self.lock = threading.Lock()

    def call(self, args: list[Any], raw: bool) -> Any:
        """The reply of ``EVALSHA args`` (``raw``: not decoded)."""
        lock = self.lock
        if lock.acquire(False):
            try:
                conn = self.conn
                if conn is None or self.pid != os.getpid():
                    conn = self.conn = self.pool.get_connection(*self.pool_args)
                    self.pid = os.getpid()
                return _roundtrip(conn, args, raw)
            finally:
                lock.release()
        pool = self.pool
        conn = pool.get_connection(*self.pool_args)
        try:
            return _roundtrip(conn, args, raw)
        finally:
            pool.release(conn)

    def close(self) -> None:
        """Give the kept connection back to the pool."""
        with self.lock:
            if self.conn is not None:
                self.pool.release(self.conn)
            self.conn = None


def direct_path(client: Any) -> Direct | None:
    """The direct path of a plain ``redis.Redis`` client (not ``single_connection_client``, a
    redis-py pool), else ``None`` (the client's own ``execute_command`` is used)."""
    import redis

    pool: Any = getattr(client, "connection_pool", None)
    direct = (
        type(client) is redis.Redis
        and getattr(client, "connection", None) is None  # not single_connection_client
        and pool is not None
        and type(pool) in (redis.ConnectionPool, redis.BlockingConnectionPool)
    )
    if not direct:
        return None
    import inspect

    param = inspect.signature(pool.get_connection).parameters.get("command_name")
    return Direct(pool, () if param is None or param.default is None else ("EVALSHA",))
