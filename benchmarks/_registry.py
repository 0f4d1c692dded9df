"""Collects ``CASES`` from every ``benchmarks/cases_*.py`` module."""

from __future__ import annotations

import importlib
import pkgutil

from ._harness import Case


def all_cases() -> list[Case]:
    """Every registered case, in module then definition order."""
    import benchmarks

    cases: list[Case] = []
    for mod in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        if mod.name.startswith("cases_"):
            module = importlib.import_module(f"benchmarks.{mod.name}")
            cases.extend(module.CASES)
    return cases


def select(cases: list[Case], only: list[str] | None, names: list[str] | None = None) -> list[Case]:
    """Cases whose group starts with one of ``only`` (and, if given, whose name is in ``names``)."""
    out = [c for c in cases if not only or any(c.group.startswith(o) for o in only)]
    if names:
        out = [c for c in out if c.name in names]
    return out


#: the distributions the cases compare with (their versions go into the JSON)
PEERS = (
    "tenacity",
    "stamina",
    "backoff",
    "circuitbreaker",
    "purgatory",
    "aiobreaker",
    "pybreaker",
    "token-bucket",
    "limits",
    "throttled-py",
    "pyrate-limiter",
    "grpcio",
)
