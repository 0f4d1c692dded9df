"""The docs' ```python snippets: every one is type-checked, and run unless it says why not.

* **Run**: each page's snippets run in order, in one namespace per page (a later snippet sees
  the names an earlier one defined, as a reader does).
* **Type-checked**: each page's snippets, concatenated in the same order, pass ``mypy
  --strict`` with the project's configuration; the module mypy sees keeps every snippet line at
  its line number in the page, so an error reads ``docs/page.md:LINE``.
* A snippet that cannot run here (it needs a server, a network, a real Redis) is marked with
  an HTML comment on the line right above its fence, saying why; it is still type-checked::

      <!-- not run: needs a Redis server -->
      ```python
      ...
      ```

* A migration guide's "before" snippet written for a library that is not installed here is
  marked ``<!-- not checked: needs DIST -->`` (``DIST`` its distribution name) and is neither
  run nor type-checked; the test fails once ``DIST`` is installed, so the mark must then go.

The site builds with ``mkdocs build --strict``, API reference included.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]
_FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_NOT_RUN = re.compile(r"<!--\s*not run:\s*(\S.*?)\s*-->\s*\n$")
_NOT_CHECKED = re.compile(r"<!--\s*not checked: needs ([\w.-]+)[^>]*-->\s*\n$")


@dataclass(frozen=True)
class Snippet:
    """One ```python block of a page."""

    page: Path
    line: int  # the page's line number of the block's first code line
    code: str
    not_run: str | None  # why it is only type-checked, or None
    needs: str | None = None  # the missing distribution of a snippet neither run nor checked


def snippets(page: Path) -> list[Snippet]:
    """The page's python blocks, in order."""
    text = page.read_text()
    out = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()]
        reason = _NOT_RUN.search(before[-200:])
        missing = _NOT_CHECKED.search(before[-200:])
        out.append(
            Snippet(
                page,
                before.count("\n") + 2,
                m.group(1),
                reason.group(1) if reason else missing.group(0) if missing else None,
                missing.group(1) if missing else None,
            )
        )
    return out


def _id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=[_id(p) for p in PAGES])
def test_snippets_run(page: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for s in snippets(page):
        if s.not_run is None:
            # compiled at its own line of the page, so a traceback points into the page
            code = "\n" * (s.line - 1) + s.code
            exec(compile(code, str(page.relative_to(ROOT)), "exec"), namespace)


def test_docs_have_snippets() -> None:
    every = [s for p in PAGES for s in snippets(p)]
    assert len(every) >= 10
    assert sum(s.not_run is None for s in every) >= len(every) * 3 // 4, "most snippets run"


def test_not_run_markers_give_a_reason() -> None:
    # a marker that is not right above a python fence would silently do nothing
    for page in PAGES:
        text = page.read_text()
        marked = len(re.findall(r"<!--\s*not (?:run|checked):", text))
        assert marked == sum(s.not_run is not None for s in snippets(page)), _id(page)


def test_unchecked_snippets_need_a_missing_library() -> None:
    for page in PAGES:
        for s in snippets(page):
            if s.needs is not None:
                assert page.parent.name == "migration", f"{_id(page)}:{s.line}"
                with pytest.raises(importlib.metadata.PackageNotFoundError):
                    importlib.metadata.distribution(s.needs)  # installed: check the snippet


def _as_module(page: Path) -> str:
    """The page's snippets as one module, each line at its line number in the page."""
    lines = [""] * (page.read_text().count("\n") + 1)
    for s in snippets(page):
        if s.needs is not None:
            continue
        for i, code in enumerate(s.code.splitlines()):
            lines[s.line - 1 + i] = code
    return "\n".join(lines) + "\n"


@functools.cache
def _mypy_report() -> dict[str, list[str]]:
    """One mypy run over every page's snippets: the error lines, by page."""
    # a fixed place, ignored by git, with a cache of its own: mypy's cache knows modules by
    # name, and replays a cached module's errors under the path it had when they were found
    tmp = ROOT / ".mypy_cache" / "docs-snippets"
    shutil.rmtree(tmp / "pages", ignore_errors=True)
    (tmp / "pages").mkdir(parents=True)
    tmp = tmp / "pages"
    sources: dict[str, Path] = {}
    for page in PAGES:
        if snippets(page):
            name = "docs_" + re.sub(r"\W", "_", _id(page).removesuffix(".md"))
            (tmp / f"{name}.py").write_text(_as_module(page))
            sources[str(tmp / f"{name}.py")] = page
    roles = tmp / "docs__griffe_roles.py"
    shutil.copy(DOCS / "_griffe_roles.py", roles)
    sources[str(roles)] = DOCS / "_griffe_roles.py"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--no-error-summary",
            "--cache-dir",
            str(tmp.parent / "cache"),
            "--show-absolute-path",
            *sorted(sources),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode in (0, 1), out.stdout + out.stderr  # 2: mypy itself failed
    report: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        path, sep, rest = line.partition(":")
        if sep and path in sources:
            where = _id(sources[path])
            report.setdefault(where, []).append(f"{where}:{rest}")
    return report


TYPED = [*PAGES, DOCS / "_griffe_roles.py"]


@pytest.mark.parametrize("page", TYPED, ids=[_id(p) for p in TYPED])
def test_snippets_type_check(page: Path) -> None:
    pytest.importorskip("mypy")
    errors = _mypy_report().get(_id(page), [])
    assert not errors, "\n".join(errors)


def _mkdocs() -> str | None:
    found = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    return found if Path(found).exists() else None


@pytest.mark.skipif(
    _mkdocs() is None or importlib.util.find_spec("mkdocstrings_handlers") is None,
    reason="the docs dependency group (mkdocs, mkdocstrings[python]) is not installed",
)
def test_site_builds(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(_mkdocs()), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    reference = (tmp_path / "site" / "reference" / "policies" / "index.html").read_text()
    assert 'id="resilience.Retry"' in reference
    assert ":class:`" not in reference  # the roles became links or code
    assert '<a class="autorefs autorefs-internal"' in reference


def test_roles_become_cross_references() -> None:
    griffe = pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("docs_roles", DOCS / "_griffe_roles.py")
    assert spec is not None
    assert spec.loader is not None
    roles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(roles)
    module = griffe.Module("pkg")
    cls = griffe.Class("Thing", parent=module)
    module.set_member("Thing", cls)
    cls.set_member("go", griffe.Function("go", parent=cls))
    text = roles.rewrite(
        "Use :meth:`go` or :class:`~pkg.Thing`.\n\n"
        "    items / more: grouped.\n\n"
        "Example:\n    >>> 1\n\n"
        "The order is::\n\n    a -> b\n",
        cls,
    )
    assert '<autoref identifier="pkg.Thing.go" optional><code>go()</code></autoref>' in text
    assert '<autoref identifier="pkg.Thing" optional><code>Thing</code></autoref>' in text
    assert "    items: grouped.\n    more: grouped." in text
    assert "\nExamples:\n" in text
    assert "The order is:\n\n    a -> b" in text
