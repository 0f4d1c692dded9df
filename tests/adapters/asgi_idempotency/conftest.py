"""Fixtures of the IdempotencyMiddleware tests: a fresh counting Starlette app per test."""

from __future__ import annotations

import pytest

from .idempotency_app import App


@pytest.fixture
def app() -> App:
    return App()
