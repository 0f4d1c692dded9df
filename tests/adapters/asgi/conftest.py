"""Fixtures of the ResilienceMiddleware tests: a test app, a permit-counting policy, a real uvicorn
server in front of both.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

import resilience as rs
from interceptors.asgi import (
    ResilienceMiddleware,
)

from ..._asgi_apps import Permits, TestApp
from ..._server import serve


@pytest.fixture
def app() -> TestApp:
    return TestApp()


@pytest.fixture
def permits() -> Permits:
    return Permits()


@pytest.fixture
def guarded(app: TestApp, permits: Permits) -> Iterator[httpx.Client]:
    mw = ResilienceMiddleware(app, pipeline=rs.Pipeline(permits))
    with serve(mw) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client
