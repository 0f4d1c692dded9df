"""A minimal HTTP/1.1 client for the load generator.

The load generator is the measuring instrument, so it must stay cheap: a general-purpose client
(httpx) costs ~10x more CPU per request, and on a busy two-core machine that showed up as
event-loop lag in the *measurements*. This one speaks just enough HTTP/1.1 for the order
service (a POST with a JSON body, a Content-Length response) over a pool of keep-alive
connections.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class ClientError(Exception):
    """The request failed: connection refused or reset, a malformed answer, or the timeout."""


class Response:
    """Status, headers (lower-case names) and body of one answer."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Client:
    """POSTs to one ``host:port`` over pooled keep-alive connections (``limit``: seconds)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[Conn] = []

    async def post(self, path: str, body: bytes, headers: dict[str, str], limit: float) -> Response:
        head = f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
        head += "content-type: application/json\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        data = (head + f"content-length: {len(body)}\r\n\r\n").encode() + body
        try:
            async with asyncio.timeout(limit):
                while self.idle:  # a pooled connection the server may have closed meanwhile
                    conn = self.idle.pop()
                    try:
                        return await self._exchange(conn, data)
                    except (OSError, asyncio.IncompleteReadError, EOFError):
                        continue
                conn = await asyncio.open_connection(self.host, self.port)
                try:
                    return await self._exchange(conn, data)
                except (asyncio.IncompleteReadError, EOFError) as exc:
                    raise ClientError("connection closed") from exc
        except TimeoutError as exc:
            raise ClientError("timed out") from exc
        except OSError as exc:
            raise ClientError(str(exc)) from exc

    async def _exchange(self, conn: Conn, data: bytes) -> Response:
        reader, writer = conn
        done = False
        try:
            writer.write(data)
            line = await reader.readline()
            if not line:
                raise EOFError
            status = int(line.split(b" ", 2)[1])
            headers: dict[str, str] = {}
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            done = True
        finally:
            if done and headers.get("connection", "").lower() != "close":
                self.idle.append(conn)
            else:
                writer.close()
        return Response(status, headers, body)

    async def aclose(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()
