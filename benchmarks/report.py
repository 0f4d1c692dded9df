"""Generate the benchmark tables of ``docs/benchmarks.md`` from the JSON results of a run.

``python -m benchmarks.report --write docs/benchmarks.md`` rewrites every generated block of
the page; ``--check`` exits 1 (and prints a diff) when a block differs from what the JSON
gives, so the tables can never be edited by hand. A block is delimited by marker comments::

    <!-- bench:retry -->
    | case | resilience | tenacity | ...
    <!-- /bench -->

The results are the JSON files in ``benchmarks/results/``, one per script (:data:`SOURCES`
names each file and the command that writes it): ``micro.json`` (``python -m benchmarks``,
what ``make bench`` runs), ``instr.json`` (instruction counts; their rows are left out when
the file is absent), ``grpc.json`` and ``idempotency.json``. A table whose cases are missing
from the JSON is an error (a run with ``--only`` that skipped a group cannot silently blank a
table).
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Results", "Sources", "SOURCES", "render", "generate", "main"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
#: source name -> (file in RESULTS, the command that writes it)
SOURCES = {
    "micro": ("micro.json", "python -m benchmarks --json benchmarks/results/micro.json"),
    "instr": ("instr.json", "python -m benchmarks.instr --json benchmarks/results/instr.json"),
    "grpc": ("grpc.json", "python -m benchmarks.bench_grpc --json benchmarks/results/grpc.json"),
    "idempotency": (
        "idempotency.json",
        "python -m benchmarks.bench_idempotency --json benchmarks/results/idempotency.json",
    ),
}

_BLOCK = re.compile(r"(<!-- bench:([a-z0-9_-]+) -->\n)(.*?)(<!-- /bench -->)", re.S)


class ReportError(Exception):
    """The JSON cannot fill a table (a case is missing or failed), or a marker is unknown."""


@dataclass
class Results:
    """The parsed JSON of one run: metadata plus ``(group, name) -> entry``."""

    meta: dict[str, Any]
    by_case: dict[tuple[str, str], dict[str, Any]]

    @classmethod
    def load(cls, path: Path) -> Results:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if isinstance(doc, list):  # the bare list an older `--json` wrote
            doc = {"results": doc}
        meta = {k: v for k, v in doc.items() if k != "results"}
        by_case = {
            (r.get("group", ""), r.get("name", r.get("config", ""))): r for r in doc["results"]
        }
        return cls(meta, by_case)

    def get(self, group: str, name: str, field: str = "overhead_median") -> float:
        entry = self.by_case.get((group, name))
        if entry is None:
            raise ReportError(f"no result for {group or '-'} / {name}: run that case first")
        value = entry.get(field)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise ReportError(f"{group} / {name} failed: {entry.get('error')}")
        return float(value)


def _num(v: float) -> str:
    """Three significant digits at most: 0.13, 5.3, 15.8, 192."""
    a = abs(v)
    if a < 1:
        return f"{v:.2f}"
    if a < 10:
        return f"{v:.1f}" if a < 9.95 else f"{v:.0f}"
    if a < 100:
        return f"{v:.1f}" if a < 99.95 else f"{v:.0f}"
    return f"{v:.0f}"


def _ratio(r: float) -> str:
    return f"{r:.1f}×" if r < 9.95 else f"{r:.0f}×"


@dataclass
class Sources:
    """Every results file of a directory that exists, by source name (see :data:`SOURCES`)."""

    loaded: dict[str, Results]

    @classmethod
    def load(cls, directory: Path = RESULTS) -> Sources:
        found = {}
        for name, (file, _) in SOURCES.items():
            if (directory / file).exists():
                found[name] = Results.load(directory / file)
        return cls(found)

    def need(self, name: str) -> Results:
        if name not in self.loaded:
            file, command = SOURCES[name]
            raise ReportError(f"no benchmarks/results/{file}: run `{command}`")
        return self.loaded[name]

    def optional(self, name: str) -> Results | None:
        return self.loaded.get(name)


def _us(seconds: float) -> str:
    return f"{_num(seconds * 1e6)} µs"


def _k(instructions: float) -> str:
    return f"{instructions / 1000:.1f} k"


def _vs(value: float, ours: float) -> str:
    """A peer's time with its ratio to ours: ``15.8 µs (126×)``."""
    if ours <= 0:
        return _us(value)
    return f"{_us(value)} ({_ratio(value / ours)})"


# -- the tables --------------------------------------------------------------------------------
_RETRY_ROWS = [
    ("success path, sync", "retry/success/sync"),
    ("success path, async", "retry/success/async"),
    ("failure path, 3 attempts, zero wait, sync", "retry/failure/sync"),
    ("failure path, async", "retry/failure/async"),
]


def _retry(src: Sources) -> list[str]:
    micro, instr = src.need("micro"), src.optional("instr")
    peers = ["tenacity", "stamina", "backoff"]
    out = ["| case | resilience | tenacity | stamina | backoff |", "|---|---:|---:|---:|---:|"]
    for label, group in _RETRY_ROWS:
        ours = micro.get(group, "resilience")
        cells = [_us(ours)]
        for peer in peers:
            name = peer
            if peer == "stamina" and group.startswith("retry/failure"):
                name = "stamina (hooks off)"  # its retry hooks would log every attempt
            cells.append(_vs(micro.get(group, name), ours))
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    if instr is not None:
        g = "retry/success/sync"
        ours_k, backoff_k = (_k(instr.get(g, n, "instructions")) for n in ("resilience", "backoff"))
        out.append(f"| instructions per successful call (callgrind) | {ours_k} | | | {backoff_k} |")
    return out


_BREAKERS = ["resilience", "circuitbreaker", "purgatory", "aiobreaker", "pybreaker"]


def _breaker(src: Sources) -> list[str]:
    micro, instr = src.need("micro"), src.optional("instr")
    g = "breaker/closed/sync"
    ours = micro.get(g, "resilience")
    out = ["| | " + " | ".join(_BREAKERS) + " |", "|---|" + "---:|" * len(_BREAKERS)]
    cells = [_us(ours)] + [_vs(micro.get(g, n), ours) for n in _BREAKERS[1:]]
    out.append("| overhead per call | " + " | ".join(cells) + " |")
    if instr is not None:
        ks = [_k(instr.get(g, n, "instructions")) for n in _BREAKERS]
        out.append("| instructions per call (callgrind) | " + " | ".join(ks) + " |")
    return out


_LIMITERS = [
    ("resilience `RateLimiter` (GCRA, thread-safe)", "resilience decorator"),
    ("token-bucket (not thread-safe)", "token-bucket"),
    ("limits, fixed window", "limits fixed"),
    ("limits, sliding window counter", "limits sliding"),
    ("limits, moving window", "limits moving"),
    ("throttled-py, GCRA", "throttled-py gcra"),
    ("pyrate-limiter", "pyrate-limiter"),
]


def _ratelimit(src: Sources) -> list[str]:
    micro = src.need("micro")
    g = "ratelimit/never/sync"
    ours = micro.get(g, "resilience decorator")
    out = ["| library | overhead per call | × ours |", "|---|---:|---:|"]
    for label, name in _LIMITERS:
        v = micro.get(g, name)
        out.append(f"| {label} | {_us(v)} | {_ratio(v / ours)[:-1] if ours > 0 else 'n/a'} |")
    return out


_TIMEOUTS = [
    ("`rs.Timeout(5)` (one shared deadline timer per event loop)", "resilience"),
    ("`asyncio.timeout(5)`", "asyncio.timeout (raw)"),
    ("`asyncio.wait_for(..., 5)`", "asyncio.wait_for (raw)"),
]


def _timeout(src: Sources) -> list[str]:
    micro = src.need("micro")
    g = "timeout/async"
    ours = micro.get(g, "resilience")
    out = ["| | overhead per call |", "|---|---:|"]
    for i, (label, name) in enumerate(_TIMEOUTS):
        v = micro.get(g, name)
        out.append(f"| {label} | {_us(v) if i == 0 else _vs(v, ours)} |")
    return out


_GRPC = [
    ("a no-op client interceptor (what `grpc.intercept_channel` itself costs)", "noop"),
    ("ours, client only (`Timeout(5)` + `grpc_retry()`)", "client"),
    ("ours, server only (`Timeout(5)`)", "server"),
    ("ours, client and server interceptors", "both"),
]


def _grpc(src: Sources) -> list[str]:
    grpc = src.need("grpc")
    out = ["| configuration | × bare calls/s | quartiles of the rounds |", "|---|---:|---:|"]
    for label, config in _GRPC:
        ratio = grpc.get("", config, "ratio")
        q1, q3 = grpc.get("", config, "ratio_q1"), grpc.get("", config, "ratio_q3")
        out.append(f"| {label} | {ratio:.2f} | {q1:.2f}–{q3:.2f} |")
    return out


_RUN_KEYS = {"format", "python", "machine", "cpus", "date"}


def _setting(key: str, value: object) -> str:
    return f"`--{key}`" if value is True else f"`--{key} {value}`"


def _idempotency(src: Sources) -> list[str]:
    idem = src.need("idempotency")
    out = ["| case | memory | Redis |", "|---|---:|---:|"]
    for label, case in (("first run", "first run"), ("replay", "replay")):
        cells = [
            _us(idem.get("", f"{store}: {case}", "seconds_per_call"))
            for store in ("memory", "redis")
        ]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def _provenance(src: Sources) -> list[str]:
    out = [
        "The generated tables come from these runs (this machine, shared with other jobs):",
        "",
        "| results | run |",
        "|---|---|",
    ]
    for name, (file, _) in SOURCES.items():
        res = src.optional(name)
        if res is None:
            continue
        m = res.meta
        settings = ", ".join(_setting(k, v) for k, v in m.items() if k not in _RUN_KEYS and v)
        cpus = f", {m['cpus']} CPUs" if m.get("cpus") else ""
        when = f"{m['date']}, " if m.get("date") else ""
        out.append(
            f"| `benchmarks/results/{file}` | {when}Python {m.get('python', '?')} on "
            f"{m.get('machine', '?')}{cpus}{'; ' + settings if settings else ''} |"
        )
    return out


TABLES: dict[str, Callable[[Sources], list[str]]] = {
    "provenance": _provenance,
    "retry": _retry,
    "breaker": _breaker,
    "ratelimit": _ratelimit,
    "timeout": _timeout,
    "grpc": _grpc,
    "idempotency": _idempotency,
}


def render(name: str, src: Sources) -> str:
    """The body of block ``name`` (what goes between its two markers)."""
    fn = TABLES.get(name)
    if fn is None:
        raise ReportError(f"unknown block <!-- bench:{name} -->; known: {', '.join(TABLES)}")
    return "\n".join(fn(src)) + "\n"


def generate(text: str, src: Sources) -> str:
    """``text`` with every ``<!-- bench:NAME -->`` block regenerated from ``src``."""

    def sub(m: re.Match[str]) -> str:
        return m.group(1) + render(m.group(2), src) + m.group(4)

    return _BLOCK.sub(sub, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="DOC", help="regenerate the tables of DOC in place")
    mode.add_argument("--check", metavar="DOC", help="exit 1 if DOC's tables differ from JSON")
    parser.add_argument(
        "--results", default=str(RESULTS), help="directory of the JSON files (benchmarks/results)"
    )
    args = parser.parse_args(argv)
    src = Sources.load(Path(args.results))
    doc = Path(args.write or args.check)
    text = doc.read_text(encoding="utf-8")
    try:
        new = generate(text, src)
    except ReportError as exc:
        print(f"benchmarks.report: {exc}", file=sys.stderr)
        return 2
    if args.write:
        doc.write_text(new, encoding="utf-8")
        return 0
    if new != text:
        diff = difflib.unified_diff(
            text.splitlines(True), new.splitlines(True), str(doc), "generated"
        )
        sys.stdout.writelines(diff)
        print(
            f"{doc}: the benchmark tables differ from the JSON results; "
            f"run `python -m benchmarks.report --write {doc}`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
