"""Generate the sync twin of every async block marked in the source; ``--check`` fails when one
is stale.

Each behaviour that exists for both sync and async callers is written once, as async code, and
its sync twin is generated next to it (the approach of httpcore's ``unasync``, applied to marked
blocks inside a module instead of whole directories, so that a policy's two wrappers stay in
the one class that owns their state)::

    # twin: async  [extra replacements: name=name, ...]
    # twin: +  [more replacements, when they do not fit on one line]
    async def wrap_async(self, fn: AsyncFn, em: Emitter) -> AsyncFn:
        ...
    # twin: end
    # twin: sync (generated from the block above by scripts/twins.py; do not edit)
    def wrap_sync(self, fn: SyncFn, em: Emitter) -> SyncFn:
        ...
    # twin: end

The transformation works on tokens, never on text: ``async`` before ``def`` / ``with`` /
``for`` and every ``await`` are dropped, and names (``NAME`` tokens; identifiers inside comments
and strings too) are renamed through :data:`NAMES` plus the block's extra replacements. The
result is formatted with ``ruff format`` so a twin is byte-for-byte what the formatter keeps.

Usage::

    python scripts/twins.py            # rewrite the stale twins
    python scripts/twins.py --check    # exit 1, naming each stale twin (CI)
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tokenize
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Where marked blocks are looked for.
PACKAGES = ("resilience", "interceptors")

#: Async name -> sync name, for NAME tokens (and whole identifiers in comments and strings).
NAMES: dict[str, str] = {
    "AsyncFn": "SyncFn",
    "wrap_async": "wrap_sync",
    "_async_slow": "_sync_slow",
    "asleep": "sleep",
    "acall": "call",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "StopAsyncIteration": "StopIteration",
    "AsyncIterator": "Iterator",
    "AsyncIterable": "Iterable",
    "AsyncGenerator": "Generator",
    "AbstractAsyncContextManager": "AbstractContextManager",
    "asynccontextmanager": "contextmanager",
    "aclose": "close",
}

SOURCE = re.compile(r"^(?P<indent>[ \t]*)# twin: async(?P<extra>.*)$")
MORE = re.compile(r"^[ \t]*# twin: \+(?P<extra>.*)$")
END = re.compile(r"^[ \t]*# twin: end\s*$")
TWIN_HEADER = "# twin: sync (generated from the block above by scripts/twins.py; do not edit)"
_EXTRA = re.compile(r"\s*(\w+)\s*=\s*(\w+)\s*")
_KEYWORD_PREFIXES = {"def", "with", "for"}
_LAYOUT = {tokenize.NL, tokenize.COMMENT}


class TwinError(Exception):
    """A marked block is malformed (the message names the file and line)."""


@dataclass(frozen=True, slots=True)
class Block:
    """One async source block and the lines its generated twin occupies today."""

    source_start: int  # index of the "# twin: async" line
    body_start: int  # index of the first source line (after any "# twin: +" lines)
    source_end: int  # index of its "# twin: end" line
    twin_start: int  # index of the first line after the source's end (the twin's header)
    twin_end: int  # index one past the twin's "# twin: end" (== twin_start when missing)
    indent: str
    names: dict[str, str]


def parse_extra(text: str, where: str) -> dict[str, str]:
    """``"a=b, c=d"`` -> ``{"a": "b", "c": "d"}``."""
    names: dict[str, str] = {}
    text = text.strip()
    if not text:
        return names
    for item in text.split(","):
        match = _EXTRA.fullmatch(item)
        if match is None:
            raise TwinError(f"{where}: bad replacement {item.strip()!r} (expected name=name)")
        names[match[1]] = match[2]
    return names


def find_blocks(lines: Sequence[str], where: str) -> list[Block]:
    """The marked blocks of a module, in order."""
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = SOURCE.match(lines[i])
        if match is None:
            i += 1
            continue
        start = i
        extra = [match["extra"]]
        j = i + 1
        while j < len(lines) and (more := MORE.match(lines[j])):
            extra.append(more["extra"])
            j += 1
        body_start = j
        while j < len(lines) and not END.match(lines[j]):
            if SOURCE.match(lines[j]):
                raise TwinError(f"{where}:{j + 1}: '# twin: async' inside another block")
            j += 1
        if j == len(lines):
            raise TwinError(f"{where}:{start + 1}: '# twin: async' without '# twin: end'")
        twin_start = j + 1
        twin_end = twin_start
        if twin_start < len(lines) and lines[twin_start].strip().startswith("# twin: sync"):
            k = twin_start + 1
            while k < len(lines) and not END.match(lines[k]):
                k += 1
            if k == len(lines):
                raise TwinError(f"{where}:{twin_start + 1}: generated twin without '# twin: end'")
            twin_end = k + 1
        names = dict(NAMES)
        for n, text in enumerate(extra):
            names.update(parse_extra(text, f"{where}:{start + n + 1}"))
        blocks.append(Block(start, body_start, j, twin_start, twin_end, match["indent"], names))
        i = twin_end
    return blocks


def _rename_words(text: str, names: dict[str, str]) -> str:
    return re.sub(r"\b\w+\b", lambda m: names.get(m[0], m[0]), text)


def unasync(source: str, names: dict[str, str]) -> str:
    """The sync twin of ``source`` (indented code is fine: it is parsed as a class body)."""
    # tokenize needs a statement context for indented code: wrap it in a dummy block
    lines = source.splitlines(keepends=True)
    wrapped = "if True:\n" + "".join(lines)
    edits: list[tuple[int, int, int, str]] = []  # (row, col_start, col_end, text), 1-based rows
    tokens = list(tokenize.generate_tokens(io.StringIO(wrapped).readline))
    for k, tok in enumerate(tokens):
        row, col = tok.start
        if tok.type == tokenize.NAME and tok.string in ("async", "await"):
            nxt = next(t for t in tokens[k + 1 :] if t.type not in _LAYOUT)
            if tok.string == "async" and nxt.string not in _KEYWORD_PREFIXES:
                continue
            if nxt.start[0] != row:
                raise TwinError(
                    f"{tok.string!r} at line {row - 1} must share a line with its operand"
                )
            edits.append((row, col, nxt.start[1], ""))
        elif tok.type == tokenize.NAME and tok.string in names:
            edits.append((row, col, tok.end[1], names[tok.string]))
        elif tok.type in (tokenize.COMMENT, tokenize.STRING) and tok.start[0] == tok.end[0]:
            renamed = _rename_words(tok.string, names)
            if renamed != tok.string:
                edits.append((row, col, tok.end[1], renamed))
        elif tok.type == tokenize.STRING:
            # a multi-line string (a docstring): rename line by line
            first_row, first_col = tok.start
            for n, part in enumerate(tok.string.split("\n")):
                renamed = _rename_words(part, names)
                if renamed != part:
                    start_col = first_col if n == 0 else 0
                    edits.append((first_row + n, start_col, start_col + len(part), renamed))
    out = wrapped.splitlines(keepends=True)
    for row, start, end, text in sorted(edits, reverse=True):
        line = out[row - 1]
        out[row - 1] = line[:start] + text + line[end:]
    return "".join(out[1:])


def generate(text: str, where: str) -> str:
    """The module text with every twin regenerated (not yet formatted)."""
    lines = text.splitlines(keepends=True)
    blocks = find_blocks(lines, where)
    if not blocks:
        return text
    out: list[str] = []
    pos = 0
    for block in blocks:
        out.extend(lines[pos : block.twin_start])
        body = "".join(lines[block.body_start : block.source_end])
        try:
            twin = unasync(body, block.names)
        except (TwinError, tokenize.TokenError, SyntaxError) as exc:
            raise TwinError(f"{where}:{block.source_start + 1}: {exc}") from exc
        out.append(f"{block.indent}{TWIN_HEADER}\n")
        out.append(twin)
        out.append(f"{block.indent}# twin: end\n")
        pos = block.twin_end
    out.extend(lines[pos:])
    return "".join(out)


def ruff_format(text: str, path: Path) -> str:
    """``text`` as ``ruff format`` writes it (the project's settings)."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(path), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise TwinError(f"{path}: ruff format failed on the generated twin:\n{done.stderr}")
    return done.stdout


def modules(paths: Iterable[Path]) -> list[Path]:
    """Every module under ``paths`` that has a marked block."""
    return [
        path
        for base in paths
        for path in sorted(base.rglob("*.py"))
        if "# twin: async" in path.read_text(encoding="utf-8")
    ]


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run(check: bool, paths: Sequence[Path] | None = None) -> list[Path]:
    """Regenerate (or, with ``check``, only compare) every twin; returns the stale modules."""
    stale: list[Path] = []
    for path in modules(paths or [ROOT / p for p in PACKAGES]):
        text = path.read_text(encoding="utf-8")
        new = generate(text, _name(path))
        if new != text:
            new = ruff_format(new, path)
        if new != text:
            stale.append(path)
            if not check:
                path.write_text(new, encoding="utf-8")
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail when a twin is stale")
    args = parser.parse_args(argv)
    try:
        stale = run(args.check)
    except TwinError as exc:
        print(f"twins: {exc}", file=sys.stderr)
        return 2
    for path in stale:
        verb = "stale" if args.check else "regenerated"
        print(f"twins: {verb}: {_name(path)}", file=sys.stderr)
    if args.check and stale:
        print("twins: run `python scripts/twins.py` and commit the result", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
