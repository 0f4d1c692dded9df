"""Fixtures shared by the adapter tests (gRPC clients, scripts, servers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ...grpc_fixtures import Script, start_sync_server
from .grpc_support import (
    Client,
    Served,
)


@pytest.fixture(params=["sync", "aio"])
def client(request: pytest.FixtureRequest) -> Client:
    return Client(request.param)


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def port(script: Script) -> Iterator[int]:
    server, port = start_sync_server(script)
    yield port
    server.stop(None)


@pytest.fixture(params=["sync", "aio"])
def served(request: pytest.FixtureRequest) -> Served:
    return Served(request.param)


@pytest.fixture(params=["sync", "aio"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)
