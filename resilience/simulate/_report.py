"""Text tables and matplotlib plots of a :class:`SimulationResult`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._engine import Run, SimulationResult

__all__ = ["format_summary", "format_table", "plot"]

_BREAKER = {"": "-", "closed": "closed", "open": "OPEN", "half_open": "half"}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def format_table(run: Run, *, every: int = 1) -> str:
    """A per-second (or per-``every``-seconds) text table of one run.

    Example:
        >>> from resilience.simulate import Scenario, simulate
        >>> s = Scenario.from_dict({"duration": 2, "load": {"rate": 10},
        ...                         "pipelines": {"none": []}})
        >>> format_table(simulate(s).runs[0]).splitlines()[0].split()[:6]
        ['t', 'offered', 'ok', 'fallb', 'failed', 'reject']
    """
    head = (
        f"{'t':>4} {'offered':>8} {'ok':>6} {'fallb':>7} {'failed':>7} {'reject':>7} {'shed':>7} "
        f"{'d.calls':>8} {'retries':>8} {'p50 ms':>7} {'p99 ms':>7}  breaker"
    )
    lines = [head]
    secs = run.seconds
    for i in range(0, len(secs), every):
        chunk = secs[i : i + every]
        lat = sorted(x for s in chunk for x in s.latencies)
        from ._engine import _percentile

        def tot(a: str, chunk: list[Any] = chunk) -> int:
            return sum(getattr(s, a) for s in chunk)

        states = [s.breaker for s in chunk]
        state = "OPEN" if "open" in states else _BREAKER.get(states[-1], states[-1])
        lines.append(
            f"{chunk[0].t:>4} {tot('offered'):>8} {tot('ok'):>6} {tot('fallback'):>7} "
            f"{tot('failed'):>7} {tot('rejected'):>7} {tot('shed'):>7} {tot('attempts'):>8} "
            f"{tot('retries'):>8} {_ms(_percentile(lat, 50)):>7} {_ms(_percentile(lat, 99)):>7}"
            f"  {state}"
        )
    return "\n".join(lines)


def format_summary(result: SimulationResult) -> str:
    """The runs side by side: success rate, latency, load on the dependency, retries...

    Example:
        >>> from resilience.simulate import Scenario, simulate
        >>> s = Scenario.from_dict({"duration": 2, "load": {"rate": 10},
        ...                         "pipelines": {"none": []}})
        >>> print(format_summary(simulate(s)).splitlines()[0].split())
        ['none']
    """
    rows = [
        ("requests", "requests", str),
        ("success rate", "success_rate", _pct),
        ("answered (ok or fallback)", "answered_rate", _pct),
        ("fallbacks", "fallbacks", str),
        ("failed", "failed", str),
        ("fast-rejected (breaker)", "fast_rejected", str),
        ("shed (limiter/bulkhead)", "shed", str),
        ("dependency calls", "dependency_calls", str),
        ("retries", "retries", str),
        ("breaker transitions", "breaker_transitions", str),
        ("p50 latency ms", "p50", _ms),
        ("p99 latency ms", "p99", _ms),
    ]
    sums = [r.summary() for r in result.runs]
    width = max(12, *(len(r.name) + 2 for r in result.runs))
    label_w = 28
    out = [" " * label_w + "".join(f"{r.name:>{width}}" for r in result.runs)]
    for label, key, fmt in rows:
        cells = "".join(f"{fmt(s[key]):>{width}}" for s in sums)  # type: ignore[operator]
        out.append(f"{label:<{label_w}}{cells}")
    return "\n".join(out)


def plot(result: SimulationResult, path: str | Path) -> Path:
    """Draw goodput and load, breaker state, retries and latency over time into a PNG.

    Needs matplotlib (``pip install "resilience[plot]"``); uses the non-interactive Agg
    backend. Fault phases are shaded.

    Example:
        >>> import pathlib, tempfile
        >>> from resilience.simulate import Scenario, simulate
        >>> s = Scenario.from_dict({"duration": 3, "load": {"rate": 10},
        ...                         "pipelines": {"none": []}})
        >>> out = plot(simulate(s), pathlib.Path(tempfile.mkdtemp()) / "run.png")
        >>> out.stat().st_size > 10_000
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True)
    ax_rate, ax_state, ax_retry, ax_lat = axes
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(result.runs):
        c = colors[i % len(colors)]
        t = [s.t + 0.5 for s in run.seconds]
        ax_rate.plot(t, [s.ok for s in run.seconds], color=c, label=f"{run.name}: ok/s")
        ax_rate.plot(
            t,
            [s.attempts for s in run.seconds],
            color=c,
            linestyle=":",
            label=f"{run.name}: dependency calls/s",
        )
        if any(s.shed for s in run.seconds):
            ax_rate.plot(
                t,
                [s.shed for s in run.seconds],
                color=c,
                linestyle="-.",
                label=f"{run.name}: shed/s",
            )
        if any(s.breaker for s in run.seconds):
            codes = {"closed": 0, "half_open": 1, "open": 2}
            ax_state.step(
                t,
                [codes.get(s.breaker, 0) for s in run.seconds],
                where="mid",
                color=c,
                label=run.name,
            )
        ax_retry.plot(t, [s.retries for s in run.seconds], color=c, label=run.name)
        p99 = [None if s.p99 is None else max(s.p99, 1e-3) for s in run.seconds]
        p50 = [None if s.p50 is None else max(s.p50, 1e-3) for s in run.seconds]
        ax_lat.plot(t, p99, color=c, label=f"{run.name}: p99")
        ax_lat.plot(t, p50, color=c, linestyle=":", label=f"{run.name}: p50")
    offered = [s.offered for s in result.runs[0].seconds]
    ax_rate.plot(
        [s.t + 0.5 for s in result.runs[0].seconds],
        offered,
        color="grey",
        linewidth=0.8,
        label="offered/s",
    )
    for ax in axes:
        for start, end, _label in result.scenario.fault_windows():
            ax.axvspan(start, end, color="red", alpha=0.08)
    ax_rate.set_ylabel("requests / s")
    ax_state.set_ylabel("breaker")
    ax_state.set_yticks([0, 1, 2], ["closed", "half-open", "open"])
    ax_retry.set_ylabel("retries / s")
    ax_lat.set_ylabel("latency (s, floor 1 ms)")
    ax_lat.set_yscale("log")
    ax_lat.set_xlabel("simulated time (s)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{result.scenario.name}  (shaded: injected faults)")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
