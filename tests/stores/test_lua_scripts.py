"""Every Lua script the Redis store can run compiles on a real redis-server (SCRIPT LOAD)."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import pkgutil
from pathlib import Path

import redis

import resilience
from resilience.stores.redis import LUA_NOW

from ..redis_servers import RedisServer

ROOT = Path(resilience.__file__).parent


def _script_ops() -> dict[str, str]:
    """``module.Class`` -> the script source exactly as :class:`RedisStore` sends it."""
    out: dict[str, str] = {}
    for info in pkgutil.walk_packages([str(ROOT)], "resilience."):
        if ".simulate" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            lua = cls.__dict__.get("LUA")
            if cls.__module__ != module.__name__ or not isinstance(lua, str):
                continue
            standalone = getattr(cls, "LUA_STANDALONE", False)
            out[f"{module.__name__}.{name}"] = lua if standalone else LUA_NOW + lua
    return out


def test_every_script_compiles_on_redis(redis_server: RedisServer) -> None:
    ops = _script_ops()
    assert len(ops) >= 8, sorted(ops)  # limiter, breaker and idempotency ops at least
    client = redis.Redis.from_url(redis_server.url)
    try:
        for name, src in ops.items():
            sha = client.script_load(src)
            assert sha == hashlib.sha1(src.encode()).hexdigest(), name
    finally:
        client.close()


def test_every_lua_file_is_used() -> None:
    """A ``.lua`` file no script includes is dead code."""
    sources = [*_script_ops().values(), LUA_NOW]
    files = sorted(ROOT.rglob("*.lua"))
    assert files, "the scripts ship as .lua package data"
    for path in files:
        body = "\n".join(
            line for line in path.read_text().splitlines() if not line.startswith("-- ")
        ).strip()
        assert any(body in src for src in sources), path.relative_to(ROOT)
