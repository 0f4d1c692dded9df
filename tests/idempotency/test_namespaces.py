"""Idempotency record namespaces: per function, explicit, stable across processes and pipelines,
the old layout.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import resilience as rs
from resilience._policy import function_identity
from resilience.idempotency import (
    IdempotencyRecords,
    args_fingerprint,
    record_key,
)
from resilience.testing import FakeClock

from ..conftest import Runner
from .support import Counter, by_first_arg, policy


def test_records_are_namespaced_by_function(clock: FakeClock) -> None:
    p = policy(clock)

    @p
    def one(k: str) -> str:
        return "one"

    @p
    def two(k: str) -> str:
        return "two"

    assert (one("k"), two("k"), one("k")) == ("one", "two", "one")


def _function_in(module: str, source: str, name: str) -> Any:
    """A function defined in a module called ``module`` (as ``import module`` would)."""
    namespace: dict[str, Any] = {"__name__": module}
    exec(source, namespace)
    return namespace[name]


_CREATE = """
runs = []
def create(k):
    runs.append(k)
    return __name__
async def acreate(k):
    return create(k)
"""


def test_same_qualname_in_two_modules_never_shares_records(
    runner: Runner, clock: FakeClock
) -> None:
    """billing.create and refunds.create on one store: each runs, each returns its own."""
    store = rs.MemoryStore(clock=clock)
    p = policy(clock, store=store)
    name = "acreate" if runner.is_async else "create"
    billing = _function_in("billing", _CREATE, name)
    refunds = _function_in("refunds", _CREATE, name)
    assert billing.__qualname__ == refunds.__qualname__ == name
    assert runner.run(p, billing, "k") == "billing"
    assert runner.run(p, refunds, "k") == "refunds"  # was "billing", without running
    assert runner.run(p, billing, "k") == "billing"
    assert len(store) == 2


def test_explicit_namespace_shares_records(runner: Runner, clock: FakeClock) -> None:
    p = policy(clock, namespace="orders.create")
    first, second = Counter(runner), Counter(runner, {"run": "second"})
    assert runner.run(p, first.fn, "k") == {"run": 1}
    assert runner.run(p, second.fn, "k") == {"run": 1}  # a replay of the first one's record
    assert (first.n, second.n) == (1, 0)
    assert p.describe()["namespace"] == "orders.create"
    with pytest.raises(rs.ConfigurationError, match="namespace"):
        policy(clock, namespace="")


def test_namespace_is_stable_across_processes_and_pipelines(clock: FakeClock) -> None:
    store = rs.MemoryStore(clock=clock)
    main = _function_in("__main__", _CREATE, "create")
    child = _function_in("__mp_main__", _CREATE, "create")  # a spawned multiprocessing child
    assert function_identity(main) == function_identity(child) == "__main__:create"
    rs.Idempotent(key=by_first_arg, store=store, clock=clock)(main)("k")
    # inside a pipeline the record key is the same as for the bare policy
    wrapped = rs.Pipeline(rs.Retry(on=OSError), rs.Idempotent(key=by_first_arg, store=store))
    assert wrapped(child)("k") == "__main__"
    assert child.__globals__["runs"] == []  # replayed: the same record in both "processes"
    assert list(store._data) == [record_key("idem:idempotency", "__main__:create", "k")]


def test_namespace_of_the_old_layout_reads_old_records(clock: FakeClock) -> None:
    """Records written before the module was part of the namespace stay readable."""
    store = rs.MemoryStore(clock=clock)
    old = IdempotencyRecords(store=store, namespace="idem:idempotency", clock=clock)
    claim = old.claim(old.key("create", "k"), args_fingerprint(("k",), {}))  # the old layout
    assert old.complete(claim, "r" + "s" + json.dumps("old result"))
    create = _function_in("billing", _CREATE, "create")
    p = rs.Idempotent(key=by_first_arg, store=store, namespace="create", clock=clock)
    assert p(create)("k") == "old result"
    assert create.__globals__["runs"] == []
