"""The direct path: a plain ``redis.Redis`` client's scripts sent pre-packed on a kept connection.

redis-py's per-command machinery (argument encoding, retry wrapper, command observability) costs
more than the round trip of a hot decision, so with a plain standalone client the store packs
the ``EVALSHA`` here and sends it on a connection it keeps, borrowing one from the pool under
contention, with the same error handling (a failed connection is closed; no retry). Commands
sent this way do not appear in redis-py's own instrumentation.

A packed binary reply (a rate-limit decision) is read here too, straight from the connection's
socket (its ``socket_timeout`` bounds every read): one bulk string or one error, after any RESP3
push frames (dropped); anything else is a protocol error (the connection is closed).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ._ops import redis_errors

__all__ = ["BULK", "Direct", "binary_reply", "bulks", "direct_path", "resp"]


def resp(args: list[Any]) -> bytes:
    """``EVALSHA`` and ``args`` as one RESP command (redis-py's encoding of str/int/float).

    Example:
        >>> resp(["abc", 1, b""])
        b'*4\\r\\n$7\\r\\nEVALSHA\\r\\n$3\\r\\nabc\\r\\n$1\\r\\n1\\r\\n$0\\r\\n\\r\\n'
    """
    return b"*%d\r\n$7\r\nEVALSHA\r\n%b" % (len(args) + 1, bulks(args))


def bulks(args: Any) -> bytes:
    """``args`` as RESP bulk strings, back to back.

    Example:
        >>> bulks([b"ab", 7])
        b'$2\\r\\nab\\r\\n$1\\r\\n7\\r\\n'
    """
    out = []
    for a in args:
        if not isinstance(a, bytes):
            a = (a if isinstance(a, str) else repr(a)).encode("utf-8", "surrogatepass")
        out.append(b"$%d\r\n%b\r\n" % (len(a), a))
    return b"".join(out)


_READ = 65536


def _recv(sock: Any, data: bytes) -> bytes:
    """``data`` and what ``sock`` has next (the server closing the connection is an error)."""
    more: bytes = sock.recv(_READ)
    if not more:
        raise redis_errors().ConnectionError("Connection closed by server.")
    return data + more


_AGGREGATES = {b"*": 1, b">": 1, b"~": 1, b"%": 2, b"|": 2}


def _frame_end(data: bytes, pos: int) -> int:
    """Where the RESP frame at ``pos`` of ``data`` ends (``-1``: not all of it is there yet).

    Example:
        >>> _frame_end(b">2\\r\\n$3\\r\\nabc\\r\\n:1\\r\\n$1\\r\\n", 0)
        17
        >>> _frame_end(b"$3\\r\\nab", 0)  # two of the three bytes
        -1
    """
    eol = data.find(b"\r\n", pos)
    if eol < 0:
        return -1
    kind = data[pos : pos + 1]
    if kind in (b"$", b"!", b"="):
        n = int(data[pos + 1 : eol])
        end = eol + 2 if n < 0 else eol + 4 + n
        return end if len(data) >= end else -1
    per = _AGGREGATES.get(kind)
    if per is None:
        return eol + 2  # a one-line frame
    end = eol + 2
    for _ in range(per * max(0, int(data[pos + 1 : eol]))):
        end = _frame_end(data, end)
        if end < 0:
            return -1
    return end


def binary_reply(data: bytes) -> tuple[bytes | None, bytes]:
    """``(reply, data)`` from what was read so far: the reply once all of it is there (after any
    RESP3 push frames: out-of-band notifications, dropped), else ``None`` and the bytes to keep.
    The reply must be a bulk string; an error reply is raised as redis-py raises it.

    Example:
        >>> binary_reply(b"$2\\r\\nok\\r\\n"), binary_reply(b"$2\\r\\no")
        ((b'ok', b''), (None, b'$2\\r\\no'))
    """
    while True:
        end = _frame_end(data, 0)
        if end < 0:
            return None, data
        kind = data[:1]
        if kind != b">":
            break
        data = data[end:]  # a push frame before the reply
    if end == len(data):
        head = data.find(b"\r\n")
        if kind == b"$":
            n = int(data[1:head])
            if n >= 0:
                return data[head + 2 : head + 2 + n], b""
        elif kind in (b"-", b"!"):
            from redis._parsers.base import BaseParser

            msg = data[1:head] if kind == b"-" else data[head + 2 : end - 2]
            parse_error: Any = BaseParser.parse_error  # NOSCRIPT -> NoScriptError, ...
            raise parse_error(msg.decode("utf-8", "replace"))
    # more than one reply, or not a bulk string: not a binary script's reply
    raise redis_errors().InvalidResponse(f"unexpected reply to a binary script: {data[:40]!r}")


def _read_binary(sock: Any) -> bytes:
    """The reply of a binary script read from ``sock`` (see :func:`binary_reply`)."""
    reply, data = binary_reply(_recv(sock, b""))
    while reply is None:
        reply, data = binary_reply(_recv(sock, data))
    return reply


#: The ``EVALSHA`` options of a script whose reply is one packed binary string (read straight
#: from the socket by :func:`binary_reply` on a direct path); other options are redis-py's.
BULK: dict[str, Any] = {"NEVER_DECODE": []}


def _roundtrip(conn: Any, data: bytes, options: dict[str, Any]) -> Any:
    """Send the packed command ``data`` on ``conn`` and read the reply (a failed connection is
    closed): straight from the socket for :data:`BULK` options, else redis-py's reader (not
    decoded when ``options`` ask for that)."""
    try:
        if options is BULK:
            sock = conn._sock
            if sock is None:
                conn.connect()
                sock = conn._sock
            sock.sendall(data)
            return _read_binary(sock)
        conn.send_packed_command([data])
        return conn.read_response(disable_decoding=bool(options))
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

    def call(self, data: bytes, options: dict[str, Any]) -> Any:
        """The reply of the packed ``EVALSHA`` ``data`` (``options``: the script's, see
        :func:`_roundtrip`)."""
        lock = self.lock
        if lock.acquire(False):
            try:
                conn = self.conn
                if conn is None or self.pid != os.getpid():
                    conn = self.conn = self.pool.get_connection(*self.pool_args)
                    self.pid = os.getpid()
                return _roundtrip(conn, data, options)
            finally:
                lock.release()
        pool = self.pool
        conn = pool.get_connection(*self.pool_args)
        try:
            return _roundtrip(conn, data, options)
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
