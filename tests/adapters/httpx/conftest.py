"""Fixtures of the httpx transport tests: one scripted uvicorn server per module; sync and async."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from ..._server import serve
from .httpx_support import (
    Script,
    ScriptedApp,
)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[ScriptedApp, str]]:
    app = ScriptedApp()
    with serve(app) as url:
        yield app, url


@pytest.fixture
def script(server: tuple[ScriptedApp, str]) -> Callable[..., Script]:
    app, url = server
    return lambda *replies: Script(app, url, list(replies))


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)
