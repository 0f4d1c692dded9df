"""A griffe extension for the API reference: the docstrings' reST-ish roles and sections.

The code's docstrings are Google style, with two habits of their own that mkdocstrings does
not read natively:

* ``:class:`~resilience.Retry```-style roles (``class``, ``func``, ``meth``, ``mod``, ``attr``,
  ``data``, ``exc``, ``obj``) become cross-references: a link when the target is documented
  in the reference, plain code otherwise (never a broken link, so ``mkdocs --strict`` holds);
  a leading ``~`` shows the last component only, as in Sphinx;
* an ``Example:`` section is read like ``Examples:`` (its ``>>>`` lines render as code);
* a paragraph ending in ``::`` ends in ``:``, and the indented block after it renders as code
  (Markdown's indented code block), as in reST;
* an argument line naming several parameters at once (``include / exclude: ...``) documents
  each of them (griffe's check that every documented parameter exists stays on).
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")
_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.M)
_LITERAL = re.compile(r"(\S)::[ \t]*$", re.M)
_GROUPED = re.compile(r"^([ \t]+)(\w+(?:[ \t]*/[ \t]*\w+)+):(.*)$", re.M)


def _resolve(target: str, obj: griffe.Object) -> str:
    """``target``'s full path, looked up like Sphinx does: in ``obj``, then its parents."""
    if target.startswith("."):
        target = target.lstrip(".")
    head = target.split(".", 1)[0]
    scope: griffe.Object | None = obj
    while scope is not None:
        member = scope.members.get(head)
        if member is not None:
            path = member.target_path if isinstance(member, griffe.Alias) else member.path
            return path + target[len(head) :]
        scope = scope.parent
    return target


def _reference(match: re.Match[str], obj: griffe.Object) -> str:
    short, target = match.group(2), match.group(3).strip().removesuffix("()")
    title = target.rsplit(".", 1)[-1] if short else target.lstrip(".")
    if match.group(1) in ("func", "meth"):
        title += "()"
    ident = html.escape(_resolve(target, obj), quote=True)
    return f'<autoref identifier="{ident}" optional><code>{html.escape(title)}</code></autoref>'


def _split_group(match: re.Match[str]) -> str:
    indent, names, rest = match.groups()
    return "\n".join(f"{indent}{name.strip()}:{rest}" for name in names.split("/"))


def rewrite(text: str, obj: griffe.Object) -> str:
    """``text`` with its roles as cross-references and ``Example:`` read as ``Examples:``."""
    text = _EXAMPLE.sub(r"\1Examples:", text)
    text = _LITERAL.sub(r"\1:", text)
    text = _GROUPED.sub(_split_group, text)
    return _ROLE.sub(lambda m: _reference(m, obj), text)


class Roles(griffe.Extension):
    """Rewrite every docstring with :func:`rewrite` as griffe loads it."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring in place."""
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value, obj)
