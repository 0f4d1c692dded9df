"""Generate the benchmark tables of the docs from the JSON results of the benchmark runs.

``python -m benchmarks.report --write docs/benchmarks.md docs/redis.md`` rewrites every
generated block of those pages; ``--check`` exits 1 (and prints a diff) when a block differs
from what the JSON gives, so the tables can never be edited by hand. A block is delimited by
marker comments::

    <!-- bench:retry -->
    | case | resilience | tenacity | ...
    <!-- /bench -->

The results are the JSON files in ``benchmarks/results/``, one per script: :data:`SOURCES`
names each file, the command that writes it and the tables it fills (``instr.json`` is
optional: its rows are left out when the file is absent). A table whose cases or fields are
missing from the JSON is an error (a run with ``--only`` that skipped a group cannot silently
blank a table), and so is a case that failed.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Results", "Source", "Sources", "SOURCES", "DOCS", "render", "generate", "main"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
#: every page with generated blocks
DOCS = (DOC, ROOT / "docs" / "redis.md")


@dataclass(frozen=True)
class Source:
    """One results file: its name in ``benchmarks/results/``, the command that writes it and
    the blocks it fills."""

    file: str
    command: str
    tables: tuple[str, ...]


def _cmd(module: str, file: str, flags: str = "") -> str:
    flags = f"{flags} " if flags else ""
    return f"python -m benchmarks{module} {flags}--json benchmarks/results/{file}"


#: source name -> where its numbers come from
SOURCES = {
    "micro": Source(
        "micro.json", _cmd("", "micro.json"), ("retry", "breaker", "ratelimit", "timeout")
    ),
    "instr": Source("instr.json", _cmd(".instr", "instr.json"), ("retry", "breaker")),
    "http_load": Source("http_load.json", _cmd(".http_load", "http_load.json"), ("asgi",)),
    "grpc": Source("grpc.json", _cmd(".bench_grpc", "grpc.json"), ("grpc",)),
    "redis": Source(
        "redis.json",
        _cmd(".bench_redis", "redis.json", "--seconds 1 --rounds 4"),
        ("redis", "redis-breaker", "redis-shared", "redis-hot"),
    ),
    "idempotency": Source(
        "idempotency.json", _cmd(".bench_idempotency", "idempotency.json"), ("idempotency",)
    ),
    "idempotency_evict": Source(
        "idempotency_evict.json",
        _cmd(".bench_idempotency", "idempotency_evict.json", "--mode evict"),
        ("idempotency-evict",),
    ),
    "lock": Source("lock.json", _cmd(".bench_lock", "lock.json"), ("lock",)),
    "outbox": Source("outbox.json", _cmd(".bench_outbox", "outbox.json"), ("outbox",)),
    "redis_stall": Source(
        "redis_stall.json", _cmd(".redis_stall", "redis_stall.json", "--runs 3"), ("redis-stall",)
    ),
    "hedge": Source("hedge.json", _cmd(".bench_hedge", "hedge.json"), ("hedge",)),
    "throttle": Source(
        "throttle.json",
        _cmd(".bench_throttle", "throttle.json", "--instr"),
        ("throttle", "throttle-cost"),
    ),
    "chaos": Source("chaos.json", _cmd(".bench_chaos", "chaos.json"), ("chaos",)),
    "hotkeys": Source("hotkeys.json", _cmd(".bench_hotkeys", "hotkeys.json"), ("hotkeys",)),
}

_BLOCK = re.compile(r"(<!-- bench:([a-z0-9_-]+) -->\n)(.*?)(<!-- /bench -->)", re.S)


class ReportError(Exception):
    """The JSON cannot fill a table (a case or a field is missing, a case failed), or a marker
    is unknown."""


@dataclass
class Results:
    """The parsed JSON of one run: metadata, its rows in order, and ``(group, name) -> row``."""

    meta: dict[str, Any]
    by_case: dict[tuple[str, str], dict[str, Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    file: str = "results"
    command: str = ""

    @classmethod
    def load(cls, path: Path, command: str = "") -> Results:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if isinstance(doc, list):  # the bare list an older `--json` wrote
            doc = {"results": doc}
        meta = {k: v for k, v in doc.items() if k != "results"}
        rows = list(doc.get("results", []))
        by_case = {(r.get("group", ""), r.get("name", r.get("config", ""))): r for r in rows}
        return cls(meta, by_case, rows, path.name, command)

    def _value(self, entry: dict[str, Any], label: str, name: str) -> float:
        if name not in entry:
            how = f"; re-run `{self.command}`" if self.command else ""
            raise ReportError(f"{self.file}: {label} has no field {name!r}{how}")
        value = entry[name]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise ReportError(f"{self.file}: {label} failed: {entry.get('error')}")
        return float(value)

    def get(self, group: str, name: str, field: str = "overhead_median") -> float:
        """The number ``field`` of case ``group / name``."""
        entry = self.by_case.get((group, name))
        label = f"{group} / {name}" if group else name
        if entry is None:
            raise ReportError(f"{self.file}: no result for {group or '-'} / {name}: run that case")
        return self._value(entry, label, field)

    def runs(self, name: str) -> list[dict[str, Any]]:
        """Every row of case ``name`` (one per run of the script's ``--runs``)."""
        found = [r for r in self.rows if r.get("name") == name]
        if not found:
            raise ReportError(f"{self.file}: no result for {name}: run that scenario")
        return found

    def each(self, name: str, field: str, *, optional: bool = False) -> list[float | None]:
        """``field`` of every run of ``name``; ``None`` where it is null and ``optional``."""
        out: list[float | None] = []
        for entry in self.runs(name):
            if optional and field in entry and entry[field] is None:
                out.append(None)
            else:
                out.append(self._value(entry, f"{name} (run {entry.get('run', '?')})", field))
        return out


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
        for name, source in SOURCES.items():
            if (directory / source.file).exists():
                found[name] = Results.load(directory / source.file, source.command)
        return cls(found)

    def need(self, name: str) -> Results:
        if name not in self.loaded:
            source = SOURCES[name]
            raise ReportError(f"no benchmarks/results/{source.file}: run `{source.command}`")
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


def _span(values: Sequence[float | None], fmt: Callable[[float], str], unit: str = "") -> str:
    """The range of ``values`` over runs, ``8–43 ms`` (one value when they print alike);
    ``never`` when every one is null, and how many runs had one when only some do."""
    present = [v for v in values if v is not None]
    if not present:
        return "never"
    lo, hi = fmt(min(present)), fmt(max(present))
    text = (lo if lo == hi else f"{lo}–{hi}") + unit
    if len(present) < len(values):
        text += f" ({len(present)} of {len(values)} runs)"
    return text


def _run_line(res: Results, what: str) -> str:
    """One sentence saying which file and run a table comes from."""
    m = res.meta
    if m.get("source"):
        return f"From `benchmarks/results/{res.file}` ({m['source']}, {m.get('date', '?')}){what}:"
    return f"From `benchmarks/results/{res.file}` ({m.get('date', '?')}){what}:"


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


_ASGI = [
    ("ours: `ResilienceMiddleware` alone (`Timeout` + `Bulkhead`)", "resilience"),
    ("ours: `RateLimitMiddleware` alone (per-IP `rs.RateLimiter`)", "ratelimit"),
    (
        "ours: `RateLimitMiddleware` (per-IP `rs.RateLimiter`) + `ResilienceMiddleware`"
        " (`Timeout` + `Bulkhead`)",
        "ours",
    ),
    ("slowapi, pure-ASGI middleware (per-IP default limit)", "slowapi-asgi"),
    ("slowapi, `BaseHTTPMiddleware`", "slowapi"),
]


def _asgi(src: Sources) -> list[str]:
    http = src.need("http_load")
    out = [
        "| variant | × bare requests/s | × bare by server CPU per request |",
        "|---|---:|---:|",
    ]
    for label, variant in _ASGI:
        ratio, cpu = http.get("", variant, "ratio"), http.get("", variant, "cpu_ratio")
        out.append(f"| {label} | {ratio:.2f} | {cpu:.2f} |")
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


_FLOOR = "floor: raw EVALSHA"
_OURS_LIMITER = "resilience"
_REDIS_LIMITERS = [
    ("floor: a raw `EVALSHA` of `return 1` from the same redis-py client", _FLOOR),
    (
        "transport floor: that `EVALSHA` pre-packed on a kept connection (how `RedisStore`"
        " sends its scripts)",
        "floor: pre-packed EVALSHA, kept conn",
    ),
    ("limits, fixed window", "limits (redis, fixed window)"),
    ("limits, sliding window counter", "limits (redis, sliding window counter)"),
    ("throttled-py, GCRA", "throttled-py (redis, gcra)"),
    ("**resilience** `RateLimiter` + `RedisStore` (one `EVALSHA` per decision)", _OURS_LIMITER),
    ("pyrate-limiter", "pyrate-limiter (redis bucket)"),
]


_REDIS_PEERS = [
    ("limits' fixed window", "limits (redis, fixed window)"),
    ("limits' sliding window counter", "limits (redis, sliding window counter)"),
    ("throttled-py", "throttled-py (redis, gcra)"),
    ("pyrate-limiter", "pyrate-limiter (redis bucket)"),
]


def _per_s(v: float) -> str:
    return f"{_num(v / 1000)} k"


def _redis(src: Sources) -> list[str]:
    redis = src.need("redis")
    out = [
        "| limiter | decisions/s, 1 process | × floor | 4 processes | × floor | round trips |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, name in _REDIS_LIMITERS:
        cells = []
        for procs in ("procs/1", "procs/4"):
            rate = _per_s(redis.get(procs, name, "decisions_per_s"))
            ratio = f"{redis.get(procs, name, 'ratio_to_floor'):.2f}"
            cells += [f"**{rate}**", f"**{ratio}**"] if name == _OURS_LIMITER else [rate, ratio]
        trips = f"{redis.get('procs/1', name, 'round_trips'):.2f}"
        out.append(f"| {label} | " + " | ".join(cells) + f" | {trips} |")
    ours = redis.get("procs/1", _OURS_LIMITER, "ratio_to_floor")
    peer, best = max(
        ((short, redis.get("procs/1", name, "ratio_to_floor")) for short, name in _REDIS_PEERS),
        key=lambda p: p[1],
    )
    out += [
        "",
        f"With 1 process ours runs at {ours:.2f}× the floor, "
        f"the fastest peer ({peer}) at {best:.2f}×.",
    ]
    return out


_REDIS_BREAKER = "resilience breaker (shared, closed)"


def _redis_breaker(src: Sources) -> list[str]:
    redis = src.need("redis")
    m = redis.meta
    what = f", {m.get('seconds', '?')} s runs, median of {m.get('rounds', '?')} rounds"
    out = [
        _run_line(redis, what),
        "",
        "| shared breaker, successful calls | 1 process | 4 processes | round trips per call |",
        "|---|---|---|---|",
    ]
    cells = []
    for procs in ("procs/1", "procs/4"):
        rate = redis.get(procs, _REDIS_BREAKER, "decisions_per_s")
        ratio = redis.get(procs, _REDIS_BREAKER, "ratio_to_floor")
        cells.append(f"{rate:,.0f}/s ({ratio:.0%})".replace("%", " %"))
    trips = redis.get("procs/1", _REDIS_BREAKER, "round_trips")
    out.append("| one round trip | " + " | ".join(cells) + f" | {trips:.2f} |")
    return out


_PACKED = "floor: pre-packed EVALSHA, kept conn"
_APACKED = "floor async: pre-packed EVALSHA, kept conn"
_REDIS_HOT = [
    ("sync floor: `EVALSHA` of `return 1` pre-packed on a kept connection", _PACKED),
    ("sync: a raw redis-py `evalsha` of it", _FLOOR),
    ("**`RateLimiter.try_acquire`**, one window", _OURS_LIMITER),
    ("**`RateLimiter.try_acquire`**, two windows (per second, per day)", "resilience (2 windows)"),
    ("async floor: the same, pre-packed on a kept `redis.asyncio` connection", _APACKED),
    ("async: a raw `redis.asyncio` `evalsha` of it", "floor async: raw EVALSHA"),
    ("**`RateLimiter.atry_acquire`**, one window", "resilience async"),
    ("**`RateLimiter.atry_acquire`**, two windows", "resilience async (2 windows)"),
]


def _redis_hot(src: Sources) -> list[str]:
    redis = src.need("redis")
    m = redis.meta
    what = f", {m.get('seconds', '?')} s runs, median of {m.get('rounds', '?')} rounds"
    out = [
        _run_line(redis, what),
        "",
        "| path | decisions/s, 1 process | × pre-packed floor | 4 processes | × pre-packed floor |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, name in _REDIS_HOT:
        cells = []
        for procs in ("procs/1", "procs/4"):
            cells.append(_per_s(redis.get(procs, name, "decisions_per_s")))
            if name in (_PACKED, _APACKED):
                cells.append("1.00")
            elif name.startswith("floor"):
                cells.append("")
            else:
                cells.append(f"{redis.get(procs, name, 'ratio_to_packed'):.2f}")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    two = []
    for one, many in (
        (_OURS_LIMITER, "resilience (2 windows)"),
        ("resilience async", "resilience async (2 windows)"),
    ):
        ratios = [
            redis.get(p, many, "decisions_per_s") / redis.get(p, one, "decisions_per_s")
            for p in ("procs/1", "procs/4")
        ]
        two.append("/".join(f"{r:.2f}" for r in ratios))
    out += [
        "",
        f"Two windows run at {two[0]}× one window (sync, 1/4 processes) and {two[1]}× (async).",
    ]
    return out


_STALLS = [
    (
        "**outage and restart**: `kill -9`, a new server (no persistence) after the outage",
        "restart",
    ),
    ("**stall**: `SIGSTOP` for the outage, then `SIGCONT`", "stall"),
    ("**slow moments**: 150 ms pauses, twice a second, for the outage", "hiccups"),
]


_REDIS_BUDGET = "resilience retry budget (shared)"
_REDIS_SHARED = [
    ("floor: a raw `EVALSHA` of `return 1` from the same redis-py client", _FLOOR),
    (
        "transport floor: that `EVALSHA` pre-packed on a kept connection",
        "floor: pre-packed EVALSHA, kept conn",
    ),
    ("**shared budget**: a call's deposit and its retry decision", _REDIS_BUDGET),
    ("**shared breaker**: a successful call in the closed state", _REDIS_BREAKER),
]


def _redis_shared(src: Sources) -> list[str]:
    """Decisions/s of the shared retry budget and breaker beside the two floors."""
    redis = src.need("redis")
    m = redis.meta
    what = f", {m.get('seconds', '?')} s runs, median of {m.get('rounds', '?')} rounds"
    out = [
        _run_line(redis, what),
        "",
        "| decision | decisions/s, 1 process | × floor | 4 processes | × floor | round trips |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, name in _REDIS_SHARED:
        cells = []
        for procs in ("procs/1", "procs/4"):
            rate = _per_s(redis.get(procs, name, "decisions_per_s"))
            cells += [rate, f"{redis.get(procs, name, 'ratio_to_floor'):.2f}"]
        trips = f"{redis.get('procs/1', name, 'round_trips'):.2f}"
        out.append(f"| {label} | " + " | ".join(cells) + f" | {trips} |")
    return out


_STALLS = [
    (
        "**outage and restart**: `kill -9`, a new server (no persistence) after the outage",
        "restart",
    ),
    ("**stall**: `SIGSTOP` for the outage, then `SIGCONT`", "stall"),
    ("**slow moments**: 150 ms pauses, twice a second, for the outage", "hiccups"),
]


def _redis_stall(src: Sources) -> list[str]:
    stall = src.need("redis_stall")
    m = stall.meta
    runs = m.get("runs") or max((r.get("run", 1) for r in stall.rows), default=0)
    server = f", Redis {m['redis_server']}" if m.get("redis_server") else ""
    what = (
        f"{server}, {m.get('outage', '?')} s outage, {m.get('tasks', '?')} asyncio tasks + "
        f"{m.get('threads', '?')} threads; ranges over {runs} runs"
    )
    out = [
        _run_line(stall, what),
        "",
        "| scenario | fail-fast after | decisions during the outage: p50 / p99 / max"
        " | waited > 50 ms | degraded during it | recovery | degraded after it |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, name in _STALLS:
        decisions = stall.each(name, "decisions_during_outage")
        degraded = stall.each(name, "degraded_during_outage")
        share = [
            d / n if n else 0.0
            for d, n in zip(degraded, decisions, strict=True)
            if n is not None and d is not None
        ]
        latency = " / ".join(
            _span(stall.each(name, f), _num, " ms") for f in ("p50_ms", "p99_ms", "max_ms")
        )
        cells = [
            _span(stall.each(name, "fail_fast_after_ms", optional=True), _num, " ms"),
            latency,
            _span(stall.each(name, "waited_over_50_ms"), lambda v: f"{v:,.0f}"),
            _span(share, lambda v: f"{v:.0%}".replace("%", " %")),
            _span(stall.each(name, "recovery_ms", optional=True), _num, " ms"),
            _span(stall.each(name, "degraded_after_back"), lambda v: f"{v:,.0f}"),
        ]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


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


def _idempotency_evict(src: Sources) -> list[str]:
    ev = src.need("idempotency_evict")
    keys, ok = ev.get("", "evict", "keys"), ev.get("", "evict", "succeeded")
    window = ev.get("", "evict", "window")
    first = ev.get("", "evict", "first_seconds_per_call")
    last = ev.get("", "evict", "last_seconds_per_call")
    rss_first, rss_end = ev.get("", "evict", "rss_first_mib"), ev.get("", "evict", "rss_end_mib")
    return [
        f"| {keys:,.0f} distinct keys, default store | |",
        "|---|---:|",
        f"| calls that succeeded | {ok:,.0f} |",
        f"| per call, first {window:,.0f} calls | {_us(first)} |",
        f"| per call, last {window:,.0f} calls | {_vs(last, first)} |",
        f"| peak RSS after the first {window:,.0f} calls | {rss_first:.0f} MiB |",
        f"| peak RSS at the end | {rss_end:.0f} MiB |",
    ]


def _hedge(src: Sources) -> list[str]:
    hedge = src.need("hedge")
    out = ["| case | p50 | p99 | p99.9 | extra calls |", "|---|---:|---:|---:|---:|"]
    base = hedge.get("", "no hedge", "p99_ms")
    for name in ("no hedge", "fixed delay", "observed p95"):
        p99 = hedge.get("", name, "p99_ms")
        cells = [
            f"{hedge.get('', name, 'p50_ms'):.1f} ms",
            f"{p99:.1f} ms" + ("" if name == "no hedge" else f" ({base / p99:.0f}× lower)"),
            f"{hedge.get('', name, 'p999_ms'):.1f} ms",
            f"{hedge.get('', name, 'extra_calls'):.1%}".replace("%", " %"),
        ]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def _lock(src: Sources) -> list[str]:
    res = src.need("lock")
    out = [
        "| case | acquire p50 | acquire p99 | release p50 | release p99 | holds/s | round trips |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case in ("rs.Lock (sync)", "rs.Lock (async)", "redis-py Lock"):
        cells = [_us(res.get("", case, f)) for f in ("acquire_p50", "acquire_p99")]
        cells += [_us(res.get("", case, f)) for f in ("release_p50", "release_p99")]
        cells.append(f"{res.get('', case, 'holds_per_second'):,.0f}")
        cells.append(f"{res.get('', case, 'round_trips_per_hold'):g}")
        out.append(f"| {case} | " + " | ".join(cells) + " |")
    return out


def _outbox(src: Sources) -> list[str]:
    res = src.need("outbox")
    out = ["| workers | deliveries/s | round trips per delivery |", "|---|---:|---:|"]
    for case in ("1 worker, sync", "1 worker, async, concurrency 8", "4 worker processes, sync"):
        rate = res.get("", case, "deliveries_per_second")
        trips = res.get("", case, "round_trips_per_delivery")
        out.append(f"| {case} | {rate:,.0f} | {trips:.2f} |")
    kill = "redelivery after kill -9"
    lease, poll = res.get("", kill, "lease"), res.get("", kill, "poll")
    out += [
        "",
        f"Redelivery after `kill -9` of the worker mid-delivery (lease {lease:g} s, poll "
        f"{poll:g} s), from its claim: median {res.get('', kill, 'delay_median'):.3f} s, "
        f"max {res.get('', kill, 'delay_max'):.3f} s (bound: lease + one poll = "
        f"{lease + poll:g} s).",
    ]
    return out


def _hotkeys(src: Sources) -> list[str]:
    res = src.need("hotkeys")
    out = [
        "| `on_full` | decisions/s | flood keys done | steady admitted / entitled | worst steady "
        "key | flood admitted | table size | evicted owing | memory (per bucket) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("evict", "deny", "evict + family cap"):
        g = res.get

        def n(field: str) -> str:
            return f"{g('', name, field):,.0f}"  # noqa: B023 - used at once

        worst = g("", name, "steady_worst")
        cells = [
            n("decisions_per_second"),
            n("flood_done"),
            f"{n('steady_admitted')} / {n('steady_entitled')}",
            "exact" if worst == 0 else f"{worst:+.0f}",
            n("flood_admitted"),
            n("table_size"),
            n("evicted_owing"),
            f"{g('', name, 'table_bytes') / 2**20:.1f} MiB "
            f"({g('', name, 'bytes_per_bucket'):.0f} B)",
        ]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


_THROTTLE_LOAD = (
    ("no throttle", "none"),
    ("k = 2 (the book's default)", "k=2.0"),
    ("k = 1.5", "k=1.5"),
    ("k = 1.1", "k=1.1"),
    ("k = 2, 3 clients sharing a store", "k=2.0, 3 clients"),
    ("k = 1.1, 3 clients sharing a store", "k=1.1, 3 clients"),
)
_THROTTLE_COST = (
    ("admitted, sync", "throttle/admit/sync"),
    ("admitted, async", "throttle/admit/async"),
    ("rejected locally, sync", "throttle/reject/sync"),
)


def _throttle(src: Sources) -> list[str]:
    thr = src.need("throttle")
    cap = thr.get("load", "none", "capacity")
    offered = thr.get("load", "none", "offered")
    out = [
        f"| {offered / cap:.0f}× overload (C = {cap:.0f} calls/s) | backend load | served "
        "| rejected locally |",
        "|---|---:|---:|---:|",
    ]
    for label, name in _THROTTLE_LOAD:
        load = thr.get("load", name, "load_over_capacity")
        served = thr.get("load", name, "served") / cap
        rejected = thr.get("load", name, "throttled") / cap
        out.append(f"| {label} | {load:.2f} C | {served:.2f} C | {rejected:.2f} C |")
    return out


def _throttle_cost(src: Sources) -> list[str]:
    thr = src.need("throttle")
    instr = all("instructions" in thr.by_case.get((g, "resilience"), {}) for _, g in _THROTTLE_COST)
    head = "| case | per call |" + (" instructions |" if instr else "")
    out = [head, "|---|---:|" + ("---:|" if instr else "")]
    for label, group in _THROTTLE_COST:
        cells = [_us(thr.get(group, "resilience", "seconds_per_call"))]
        if instr:
            cells.append(_k(thr.get(group, "resilience", "instructions")))
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


_CHAOS = [
    ("`enabled=False` (no wrapper built)", "disabled"),
    ("enabled, `rate=0` (one random draw)", "enabled, rate 0"),
    ("`enabled=` a callable, `rate=0`", "switch callable, rate 0"),
    ("`rate=1`, an `Outcome` answering every call", "rate 1 (Outcome)"),
]


def _chaos(src: Sources) -> list[str]:
    chaos = src.need("chaos")
    counts = {(r.get("group"), r.get("name")): r.get("instructions") for r in chaos.rows}
    counted = any(v is not None for v in counts.values())
    head = "| chaos policy | sync | async |"
    rule = "|---|---:|---:|"
    if counted:
        head += " sync instructions | async instructions |"
        rule += "---:|---:|"
    out = [head, rule]
    for label, name in _CHAOS:
        cells = [_us(chaos.get(f"chaos/{side}", name)) for side in ("sync", "async")]
        if counted:
            for side in ("sync", "async"):
                n = counts.get((f"chaos/{side}", name))
                cells.append("not counted" if n is None else _k(float(n)))
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    bare = [chaos.get(f"chaos/{side}", "disabled", "baseline_median") for side in ("sync", "async")]
    out.append("")
    out.append(f"Overhead over the bare call ({_us(bare[0])} sync, {_us(bare[1])} async).")
    return out


_RUN_KEYS = {"format", "python", "machine", "cpus", "date", "command", "versions", "source"}
_RUN_KEYS |= {"redis_server", "wrk"}


def _setting(key: str, value: object) -> str:
    return f"`--{key}`" if value is True else f"`--{key} {value}`"


def _provenance(src: Sources) -> list[str]:
    out = [
        "| tables | results | written by | run |",
        "|---|---|---|---|",
    ]
    for name, source in SOURCES.items():
        res = src.optional(name)
        tables = ", ".join(source.tables)
        if res is None:
            run = "not run yet (its rows are left out)"
        elif res.meta.get("source"):
            run = f"{res.meta.get('date', '?')}: {res.meta['source']}"
        else:
            m = res.meta
            settings = ", ".join(_setting(k, v) for k, v in m.items() if k not in _RUN_KEYS and v)
            cpus = f", {m['cpus']} CPUs" if m.get("cpus") else ""
            when = f"{m['date']}, " if m.get("date") else ""
            run = (
                f"{when}Python {m.get('python', '?')} on "
                f"{m.get('machine', '?')}{cpus}{'; ' + settings if settings else ''}"
            )
        out.append(f"| {tables} | `{source.file}` | `{source.command}` | {run} |")
    return out


TABLES: dict[str, Callable[[Sources], list[str]]] = {
    "provenance": _provenance,
    "retry": _retry,
    "breaker": _breaker,
    "ratelimit": _ratelimit,
    "timeout": _timeout,
    "asgi": _asgi,
    "grpc": _grpc,
    "redis": _redis,
    "redis-breaker": _redis_breaker,
    "redis-shared": _redis_shared,
    "redis-hot": _redis_hot,
    "redis-stall": _redis_stall,
    "idempotency": _idempotency,
    "idempotency-evict": _idempotency_evict,
    "hedge": _hedge,
    "lock": _lock,
    "outbox": _outbox,
    "throttle": _throttle,
    "throttle-cost": _throttle_cost,
    "chaos": _chaos,
    "hotkeys": _hotkeys,
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
    mode.add_argument("--write", metavar="DOC", nargs="+", help="regenerate the tables of DOC")
    mode.add_argument(
        "--check", metavar="DOC", nargs="+", help="exit 1 if DOC's tables differ from the JSON"
    )
    parser.add_argument(
        "--results", default=str(RESULTS), help="directory of the JSON files (benchmarks/results)"
    )
    args = parser.parse_args(argv)
    src = Sources.load(Path(args.results))
    rc = 0
    for doc in map(Path, args.write or args.check):
        text = doc.read_text(encoding="utf-8")
        try:
            new = generate(text, src)
        except ReportError as exc:
            print(f"benchmarks.report: {doc}: {exc}", file=sys.stderr)
            return 2
        if args.write:
            if new != text:
                doc.write_text(new, encoding="utf-8")
            continue
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
            rc = 1
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
