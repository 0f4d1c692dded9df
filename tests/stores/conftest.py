"""Fixtures of the store tests: every store kind (memory, standalone Redis, Redis Cluster) behind
one factory, and the closing of the stores the fault-model tests open.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from resilience.stores.memory import MemoryStore
from resilience.stores.redis import RedisStore
from resilience.testing import FakeClock

from ..redis_servers import RedisCluster, RedisServer
from .conformance import StoreFactory
from .fault_support import OPEN_STORES


@pytest.fixture(params=["memory", "redis", "cluster"])
def make_store(request: pytest.FixtureRequest) -> Iterator[StoreFactory]:
    """A factory of fresh stores (a new key prefix each) on one backend."""
    made: list[RedisStore] = []

    def factory(clock: FakeClock) -> Any:
        if request.param == "memory":
            return MemoryStore(clock=clock)
        prefix = f"conf{uuid.uuid4().hex[:12]}"
        if request.param == "redis":
            server: RedisServer = request.getfixturevalue("redis_server")
            store = RedisStore.from_url(server.url, prefix=prefix, clock=clock, socket_timeout=2.0)
        else:
            cluster: RedisCluster = request.getfixturevalue("redis_cluster")
            store = RedisStore.from_url(
                cluster.url, prefix=prefix, cluster=True, clock=clock, socket_timeout=2.0
            )
        made.append(store)
        return store

    yield factory
    for store in made:
        store.close()


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    while OPEN_STORES:
        OPEN_STORES.pop().close()
