"""The public extension surface: Policy.wrap and its hooks, the deadline API, and adapters that
use nothing else (an AST scan of interceptors/)."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import resilience as rs
from resilience.testing import FakeClock

ROOT = Path(__file__).resolve().parents[2]
INTERCEPTORS = ROOT / "interceptors"

#: Private resilience names adapters still import, on purpose (shrink this list, never grow it):
#: clock plumbing (``resolve_clock`` returns the shared system clock the fast paths compare by
#: identity) and the shared validation helpers.
ALLOWED_PRIVATE: dict[str, set[str]] = {
    "resilience._clock": {"Clock", "RandomLike", "resolve_clock"},
    "resilience._types": {
        "Duration",
        "ExceptionSpec",
        "check_listeners",
        "exception_predicate",
        "header_names",
        "method_names",
        "optional_seconds",
        "positive_int",
        "positive_number",
        "seconds",
        "status_codes",
    },
}
#: Policy internals an adapter must never reach for (the public ``wrap`` replaces them).
POLICY_INTERNALS = {"_compose_sync", "_compose_async", "_wrap_sync", "_wrap_async", "_emitter"}
#: Private attributes the adapters own (of their own objects, or set by them on an exception):
#: any other ``obj._name`` outside ``self``/``cls`` is reaching into a resilience object.
ADAPTER_OWNED = {"_ctx", "_resilience_committed", "_trailing"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _check(node: ast.AST, used: set[tuple[str, str]]) -> list[str]:
    """What is wrong with one node of an adapter module (recording allowed exceptions used)."""
    out: list[str] = []
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        mod = node.module
        if mod == "resilience" or mod.startswith("resilience."):
            private_mod = any(_private(part) for part in mod.split("."))
            for alias in node.names:
                if not (private_mod or _private(alias.name)):
                    continue
                if alias.name in ALLOWED_PRIVATE.get(mod, ()):
                    used.add((mod, alias.name))
                else:
                    out.append(f"from {mod} import {alias.name}")
    elif isinstance(node, ast.Import):
        out.extend(
            f"import {a.name}"
            for a in node.names
            if a.name.startswith("resilience.") and any(_private(p) for p in a.name.split("."))
        )
    elif isinstance(node, ast.Attribute):
        base = node.value
        if isinstance(base, ast.Name) and base.id in ("rs", "resilience") and _private(node.attr):
            out.append(f"{base.id}.{node.attr}")
        elif node.attr in POLICY_INTERNALS:
            out.append(f".{node.attr}")  # self._wrap_sync included: override the public hooks
        elif (
            _private(node.attr)
            and node.attr not in ADAPTER_OWNED
            and not (isinstance(base, ast.Name) and base.id in ("self", "cls"))
        ):
            out.append(f"{ast.unparse(node)} (a private attribute of another object)")
    elif isinstance(node, ast.Assign | ast.AugAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        out.extend(
            f"assigns .{t.attr}"
            for t in targets
            if isinstance(t, ast.Attribute) and t.attr in ("__qualname__", "__name__")
        )
    return out


def _violations() -> tuple[list[str], set[tuple[str, str]]]:
    bad: list[str] = []
    used: set[tuple[str, str]] = set()
    for path in sorted(INTERCEPTORS.rglob("*.py")):
        where = path.relative_to(INTERCEPTORS.parent)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            bad.extend(f"{where}:{getattr(node, 'lineno', 0)}: {v}" for v in _check(node, used))
    return bad, used


def test_adapters_use_only_the_public_surface() -> None:
    bad, used = _violations()
    assert bad == []
    allowed = {(m, n) for m, names in ALLOWED_PRIVATE.items() for n in names}
    assert allowed - used == set(), "an allowed exception is no longer used: drop it"


#: The only modules that may name the composition machinery (``Policy._compose_sync`` /
#: ``_compose_async``): the policy base and the pipeline composing its policies.
COMPOSITION_MODULES = {"resilience/_policy.py", "resilience/_pipeline.py"}
_COMPOSITION_PREFIXES = ("_compose_", "_wrap_")


def _composition_names(path: Path) -> list[str]:
    """Every use (attribute, definition, import) of a ``_compose_*`` / ``_wrap_*`` name."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names = [node.name]  # an override of a hook nothing calls any more
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names = [a.asname or a.name for a in node.names]
        else:
            continue
        found.extend(
            f"{path.relative_to(ROOT).as_posix()}:{getattr(node, 'lineno', 0)}: {name}"
            for name in names
            if name.startswith(_COMPOSITION_PREFIXES)
        )
    return found


def test_only_the_policy_base_and_the_pipeline_use_the_composition_internals() -> None:
    """A policy overrides the public ``wrap_sync`` / ``wrap_async`` (the machinery calls
    nothing else), and composes other policies through ``policy.wrap`` or a Pipeline."""
    bad = [
        use
        for package in ("resilience", "interceptors")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.relative_to(ROOT).as_posix() not in COMPOSITION_MODULES
        for use in _composition_names(path)
    ]
    assert bad == []
    # the scan sees the uses it allows
    assert any(
        u.endswith(": _compose_sync")
        for u in _composition_names(ROOT / "resilience" / "_pipeline.py")
    )


def test_no_test_policy_overrides_a_hook_nothing_calls() -> None:
    """The tests' own policies override the public hooks too (``_wrap_sync`` is never called)."""
    stale = [
        f"{path.relative_to(ROOT).as_posix()}:{node.lineno}: {node.name}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name in ("_wrap_sync", "_wrap_async")
    ]
    assert stale == []


# -- Policy.wrap ---------------------------------------------------------------------------------


def test_wrap_names_the_operation_and_leaves_fn_alone() -> None:
    seen: list[rs.events.Event] = []
    retry = rs.Retry(
        on=ConnectionError, attempts=2, backoff=rs.backoff.constant(0), listeners=[seen.append]
    )
    calls: list[int] = []

    def attempt(n: int) -> int:
        calls.append(n)
        if len(calls) == 1:
            raise ConnectionError("reset")
        return n

    wrapped = retry.wrap(attempt, operation="GET api.local")
    assert wrapped(7) == 7
    assert calls == [7, 7]
    assert {e.operation for e in seen} == {"GET api.local"}
    assert attempt.__qualname__.endswith("attempt")
    assert attempt.__name__ == "attempt"
    # without operation= it is the decorator: the function's qualified name
    seen.clear()
    calls.clear()
    assert retry.wrap(attempt)(1) == 1
    assert {e.operation for e in seen} == {attempt.__qualname__}


def test_wrap_detects_coroutine_functions_and_pipelines_name_themselves() -> None:
    seen: list[rs.events.Event] = []
    clock = FakeClock()
    pipeline = rs.Pipeline(
        rs.Retry(on=ValueError, attempts=2, backoff=rs.backoff.constant(0), clock=clock),
        name="edge",
        listeners=[seen.append],
    )
    failed: list[bool] = []

    async def attempt() -> str:
        if not failed:
            failed.append(True)
            raise ValueError("once")
        return "ok"

    wrapped = pipeline.wrap(attempt, operation="/shop.Orders/Create")
    assert asyncio.run(wrapped()) == "ok"
    assert seen
    assert all(e.operation == "/shop.Orders/Create" and e.pipeline == "edge" for e in seen)


@pytest.mark.parametrize("bad", ["", 3, b"op"])
def test_wrap_rejects_a_bad_operation(bad: Any) -> None:
    with pytest.raises(rs.ConfigurationError, match="operation"):
        rs.Timeout(1).wrap(lambda: None, operation=bad)


def test_wrap_scopes_idempotency_records_by_operation() -> None:
    """An Idempotent without namespace= keeps its records under the wrapped operation."""
    store = rs.MemoryStore()
    runs: list[str] = []

    def make(tag: str) -> Callable[[str], str]:
        def handler(key: str) -> str:
            runs.append(tag)
            return tag

        return handler

    idem = rs.Idempotent(store=store, key=lambda key: key)
    a = idem.wrap(make("a"), operation="POST /a")
    b = idem.wrap(make("b"), operation="POST /b")
    a2 = idem.wrap(make("a2"), operation="POST /a")
    assert (a("k"), b("k"), a2("k")) == ("a", "b", "a")  # a2 replays POST /a's record
    assert runs == ["a", "b"]


class _Tagging(rs.Policy):
    """A custom policy on the public hooks only: appends its name to a shared trail."""

    def __init__(self, name: str, trail: list[str]) -> None:
        super().__init__(name=name)
        self.trail = trail

    def wrap_sync(self, fn: Callable[..., Any], em: rs.Emitter) -> Callable[..., Any]:
        def tagged(*args: Any, **kwargs: Any) -> Any:
            self.trail.append(f"{self.name}:{em.operation}")
            return fn(*args, **kwargs)

        return tagged

    def wrap_async(
        self, fn: Callable[..., Awaitable[Any]], em: rs.Emitter
    ) -> Callable[..., Awaitable[Any]]:
        async def tagged(*args: Any, **kwargs: Any) -> Any:
            self.trail.append(f"{self.name}:{em.operation}")
            return await fn(*args, **kwargs)

        return tagged


def test_custom_policy_on_the_public_hooks_composes() -> None:
    trail: list[str] = []
    pipeline = rs.Pipeline(_Tagging("outer", trail), rs.Timeout(5), _Tagging("inner", trail))
    assert pipeline.wrap(lambda: 1, operation="op")() == 1

    async def two() -> int:
        return 2

    assert asyncio.run(pipeline.wrap(two, operation="aop")()) == 2
    assert trail == ["outer:op", "inner:op", "outer:aop", "inner:aop"]


def test_a_policy_without_hooks_says_what_is_missing() -> None:
    with pytest.raises(NotImplementedError, match="wrap_sync"):
        rs.Policy(name="bare").call(lambda: None)


def test_emitter_refuse_stamps_a_refusal() -> None:
    class Refuse(rs.Policy):
        def wrap_sync(self, fn: Callable[..., Any], em: rs.Emitter) -> Callable[..., Any]:
            def refused(*args: Any, **kwargs: Any) -> Any:
                raise em.refuse(rs.RateLimitedError("no", policy=self.name))

            return refused

    with pytest.raises(rs.RateLimitedError) as info:
        Refuse(name="r").call(lambda: None)
    assert rs.refused_by_policy(info.value)
    assert not rs.refused_by_policy(rs.RateLimitedError("raised by the function itself"))


# -- deadlines -----------------------------------------------------------------------------------


def test_cap_to_deadline() -> None:
    clock = FakeClock()
    assert rs.cap_to_deadline(5.0) == 5.0
    assert rs.cap_to_deadline() is None
    assert rs.cap_to_deadline(1e12) == 1e8  # what transports can represent
    with rs.deadline_scope(2.0, clock=clock):
        assert rs.cap_to_deadline(5.0) == 2.0
        assert rs.cap_to_deadline(0.5) == 0.5
        assert rs.cap_to_deadline() == 2.0
        clock.advance(3)
        assert rs.cap_to_deadline(5.0) == 0.0
        assert rs.cap_to_deadline() == 0.0
    with rs.deadline_scope(1e12, clock=clock):  # a far-off inbound deadline
        assert rs.cap_to_deadline() == 1e8
        assert rs.cap_to_deadline(3.0) == 3.0


def test_publish_and_reset_deadline() -> None:
    clock = FakeClock()
    outer = rs.publish_deadline(1.0, clock=clock)
    inner = rs.publish_deadline(10.0, clock=clock)  # looser: the tighter one stays
    assert rs.remaining() == 1.0
    rs.reset_deadline(inner)
    rs.reset_deadline(outer)
    assert rs.deadline() is None
    for bad in (-1.0, float("nan"), float("inf"), "1"):
        with pytest.raises(rs.ConfigurationError, match="timeout"):
            rs.publish_deadline(bad, clock=clock)  # type: ignore[arg-type]
