"""Each package's ``__all__`` is exactly its public surface (no leaked imports, nothing hidden)."""

from __future__ import annotations

import importlib
import tomllib
import types
from pathlib import Path

import pytest

PACKAGES = [
    "resilience",
    "resilience.circuit",
    "resilience.delivery",
    "resilience.idempotency",
    "resilience.ratelimit",
    "resilience.stores",
    "resilience.stores.redis",
    "interceptors",
    "interceptors.asgi",
    "interceptors.grpc",
    "interceptors.httpx",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_the_public_surface(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    public = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and attr != "annotations"
        and (not isinstance(value, types.ModuleType) or attr in exported)
    }
    assert public == exported, f"not in __all__: {sorted(public - exported)}"
    assert all(hasattr(module, attr) for attr in exported)


def test_version_is_the_installed_distributions() -> None:
    import resilience

    pyproject = tomllib.loads((Path(__file__).parent.parent.parent / "pyproject.toml").read_text())
    assert resilience.__version__ == pyproject["project"]["version"]
