"""The outbox tests run each sequence on a memory store and on a redis-server (same clock)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from resilience.stores.memory import MemoryStore
from resilience.stores.redis import RedisStore
from resilience.testing import FakeClock

from ..redis_servers import RedisServer


@pytest.fixture
def prefix() -> str:
    return f"ob{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, clock: FakeClock, prefix: str) -> Iterator[Any]:
    """A memory store, or a Redis store whose scripts decide on the same fake clock."""
    if request.param == "memory":
        yield MemoryStore(clock=clock)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    redis_store = RedisStore.from_url(server.url, prefix=prefix, clock=clock, socket_timeout=2.0)
    yield redis_store
    redis_store.close()
