"""Helpers of the Redis fault-model tests: stores and raw clients on a test server (closed after
each test), and custom store operations.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import redis

from resilience.stores.redis import RedisStore

from ..redis_servers import RedisServer

OPEN_STORES: list[RedisStore] = []


def open_store(server: RedisServer, **kw: Any) -> RedisStore:
    store = RedisStore.from_url(server.url, prefix=f"fm{uuid.uuid4().hex[:10]}", **kw)
    OPEN_STORES.append(store)
    return store


def raw_client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url)


class ScriptOp:
    key: str

    def apply(self, state: Any | None, now: float) -> tuple[Any | None, int, float | None]:
        return state, 1, None  # (the in-process twin; these tests only run on Redis)


@dataclass
class Ping(ScriptOp):
    key: str
    LUA: ClassVar[str] = "return 1"

    def lua_args(self) -> list[str]:
        return []

    def parse(self, reply: Any) -> int:
        return int(reply)
