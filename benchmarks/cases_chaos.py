"""Chaos policies: the per-call cost of a chaos policy that is off, on but not injecting, and
injecting every call (an Outcome answering instead of the function), sync and async."""

from __future__ import annotations

from ._harness import Case

_SETUP = "import resilience as rs\n"
#: (name, the policy's constructor, note)
_CONFIGS = [
    (
        "disabled",
        "rs.chaos.Outcome(rate=1.0, value=0, enabled=False)",
        "enabled=False: no wrapper is built",
    ),
    (
        "enabled, rate 0",
        "rs.chaos.Outcome(rate=0.0, value=0)",
        "one random draw per call, never injects",
    ),
    (
        "switch callable, rate 0",
        "rs.chaos.Outcome(rate=0.0, value=0, enabled=lambda: True)",
        "the switch is asked per call",
    ),
    (
        "rate 1 (Outcome)",
        "rs.chaos.Outcome(rate=1.0, value=0)",
        "every call answered by the policy (the function does not run)",
    ),
]

CASES: list[Case] = [
    Case(
        f"chaos/{side}",
        name,
        f"{_SETUP}wrapped = {make}({'abare' if side == 'async' else 'bare'})",
        "await wrapped()" if side == "async" else "wrapped()",
        side == "async",
        note=note,
    )
    for side in ("sync", "async")
    for name, make, note in _CONFIGS
]
