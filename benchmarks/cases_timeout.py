"""Timeout: the per-call cost of a timeout that never fires."""

from __future__ import annotations

from ._harness import Case

CASES: list[Case] = [
    Case(
        "timeout/async",
        "resilience",
        "import resilience as rs\nwrapped = rs.Timeout(5)(abare)",
        "await wrapped()",
        True,
        note="Timeout(5), never fires",
    ),
    Case(
        "timeout/async",
        "asyncio.timeout (raw)",
        "import asyncio\nasync def wrapped():\n    async with asyncio.timeout(5):\n"
        "        return await abare()",
        "await wrapped()",
        True,
    ),
    Case(
        "timeout/async",
        "asyncio.wait_for (raw)",
        "import asyncio\nasync def wrapped():\n    return await asyncio.wait_for(abare(), 5)",
        "await wrapped()",
        True,
    ),
    Case(
        "timeout/sync",
        "resilience",
        "import resilience as rs\nwrapped = rs.Timeout(5)(bare)",
        "wrapped()",
        note="cooperative: deadline published, checked on return",
    ),
]
