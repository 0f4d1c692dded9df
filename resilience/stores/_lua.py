"""Lua scripts shipped as package data (``.lua`` files next to the code that runs them).

Each algorithm's Redis twin lives in its own ``.lua`` file inside the policy's package, so it
reads (and is reviewed, linted and diffed) as Lua. :func:`script` reads one once per process.
``tests/stores/test_lua_scripts.py`` loads every file into a real ``redis-server`` with
``SCRIPT LOAD``, so a syntax error fails the tests, not a production decision.

Example:
    >>> from resilience.stores._lua import script
    >>> "now_us" in script("resilience.stores", "prelude.lua")
    True
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

__all__ = ["script"]


@cache
def script(package: str, name: str) -> str:
    """The text of the Lua file ``name`` shipped in ``package`` (cached)."""
    return files(package).joinpath(name).read_text(encoding="utf-8")
