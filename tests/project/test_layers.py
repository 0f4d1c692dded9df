"""The layers of docs/design.md are the imports: each module imports only its layer and below."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

#: lowest first; a module may import from its own layer and the ones before it
LAYERS = ["foundation", "stores", "policies", "tools", "adapters", "commands"]
FOUNDATION = {
    "resilience.errors",
    "resilience._types",
    "resilience._clock",
    "resilience._clock_wheel",
    "resilience._deadline",
    "resilience.events",
}
TOOLS = ("resilience.simulate", "resilience.instrumentation", "resilience.interop")
#: the command line: serves the adapters (the dashboard), so it sits on top of them
COMMANDS = {"resilience.__main__", "resilience._dashboard_cli"}


def layer(module: str) -> str:
    if module in COMMANDS:
        return "commands"
    if module.startswith("interceptors"):
        return "adapters"
    if module in FOUNDATION:
        return "foundation"
    if module == "resilience.stores" or module.startswith("resilience.stores."):
        return "stores"
    if module.startswith(TOOLS) or module in ("resilience.testing", "resilience.pytest_plugin"):
        return "tools"
    return "policies"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            out.add(target)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {t for t in out if t.split(".")[0] in ("resilience", "interceptors")}


def test_every_import_goes_down_the_layers() -> None:
    wrong: list[str] = []
    files = [*(ROOT / "resilience").rglob("*.py"), *(ROOT / "interceptors").rglob("*.py")]
    for path in files:
        source = _module(path)
        if source == "resilience":  # the package's front door re-exports every layer
            continue
        wrong.extend(
            f"{source} ({layer(source)}) imports {target} ({layer(target)})"
            for target in _imports(path)
            if LAYERS.index(layer(target)) > LAYERS.index(layer(source))
        )
    assert not wrong, "\n".join(sorted(wrong))
    assert len(files) > 50


def test_the_design_page_names_every_layer() -> None:
    page = (ROOT / "docs" / "design.md").read_text()
    for name in LAYERS:
        assert name in page, name
