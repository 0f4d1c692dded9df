"""Text tables and matplotlib plots of a :class:`SimulationResult`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._engine import Run, SimulationResult, _percentile

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["figure", "format_summary", "format_table", "plot"]

_BREAKER = {"": "-", "closed": "closed", "open": "OPEN", "half_open": "half"}
_STATE_CODE = {"closed": 0, "half_open": 1, "open": 2}


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
        >>> format_table(simulate(s).runs[0]).splitlines()[0].split()[:7]
        ['t', 'offered', 'ok', 'fallb', 'failed', 'br.rej', 'shed']

    Columns: requests offered, then how they ended: ``ok``, ``fallb`` (a fallback answered a
    failure), ``failed``, ``br.rej`` (refused by an open breaker, whether or not a fallback
    answered), ``shed`` (refused by a limiter or bulkhead); then dependency calls, retries,
    hedges (extra concurrent calls of a hedge), latency percentiles and the (first) breaker's state.
    """
    head = (
        f"{'t':>4} {'offered':>8} {'ok':>6} {'fallb':>7} {'failed':>7} {'br.rej':>7} {'shed':>7} "
        f"{'d.calls':>8} {'retries':>8} {'hedges':>7} {'p50 ms':>7} {'p99 ms':>7}  breaker"
    )
    lines = [head]
    secs = run.seconds
    for i in range(0, len(secs), every):
        chunk = secs[i : i + every]
        lat = sorted(x for s in chunk for x in s.latencies)

        def tot(a: str, chunk: list[Any] = chunk) -> int:
            return sum(getattr(s, a) for s in chunk)

        states = [s.breaker for s in chunk]
        state = "OPEN" if "open" in states else _BREAKER.get(states[-1], states[-1])
        lines.append(
            f"{chunk[0].t:>4} {tot('offered'):>8} {tot('ok'):>6} {tot('fallback'):>7} "
            f"{tot('failed'):>7} {tot('rejected'):>7} {tot('shed'):>7} {tot('attempts'):>8} "
            f"{tot('retries'):>8} {tot('hedges'):>7} {_ms(_percentile(lat, 50)):>7} "
            f"{_ms(_percentile(lat, 99)):>7}  {state}"
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
        ("fallback (after a failure)", "fallbacks", str),
        ("failed", "failed", str),
        ("rejected by breaker", "rejected_by_breaker", str),
        ("shed (limiter/bulkhead)", "shed", str),
        ("fallback answers (all)", "fallback_answers", str),
        ("dependency calls", "dependency_calls", str),
        ("retries", "retries", str),
        ("hedges (extra calls)", "hedges", str),
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


def figure(result: SimulationResult) -> Figure:
    """The runs drawn on a new matplotlib ``Figure`` (five panels over simulated time).

    Panels: answers per second (real, and fallback answers) with the offered load and the
    dependency calls; failures and refusals per second (failed, rejected by breaker, shed);
    breaker state; retries per second; latency. Fault phases are shaded. The figure is not
    registered with pyplot and no backend is selected, so nothing global changes: save it
    with ``figure(result).savefig("out.png")`` or use :func:`plot`.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 12))
    FigureCanvasAgg(fig)
    axes = fig.subplots(5, 1, sharex=True)
    ax_ans, ax_bad, ax_state, ax_retry, ax_lat = axes
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(result.runs):
        c = colors[i % len(colors)]
        secs = run.seconds
        t = [s.t + 0.5 for s in secs]
        ax_ans.plot(t, [s.ok for s in secs], color=c, label=f"{run.name}: ok/s")
        if any(s.fallback_answers for s in secs):
            ax_ans.plot(
                t,
                [s.fallback_answers for s in secs],
                color=c,
                linestyle="--",
                marker=".",
                markersize=3,
                label=f"{run.name}: fallback answers/s",
            )
        ax_ans.plot(
            t,
            [s.attempts for s in secs],
            color=c,
            linestyle=":",
            linewidth=0.8,
            label=f"{run.name}: dependency calls/s",
        )
        ax_bad.plot(t, [s.failed for s in secs], color=c, label=f"{run.name}: failed/s")
        for attr, style, what in (
            ("rejected", "--", "rejected by breaker"),
            ("shed", "-.", "shed"),
        ):
            if any(getattr(s, attr) for s in secs):
                ax_bad.plot(
                    t,
                    [getattr(s, attr) for s in secs],
                    color=c,
                    linestyle=style,
                    label=f"{run.name}: {what}/s",
                )
        if any(s.breaker for s in secs):
            ax_state.step(
                t,
                [_STATE_CODE.get(s.breaker, 0) for s in secs],
                where="mid",
                color=c,
                label=run.name,
            )
        ax_retry.plot(t, [s.retries for s in secs], color=c, label=run.name)
        p99 = [float("nan") if s.p99 is None else max(s.p99, 1e-3) for s in secs]
        p50 = [float("nan") if s.p50 is None else max(s.p50, 1e-3) for s in secs]
        ax_lat.plot(t, p99, color=c, label=f"{run.name}: p99")
        ax_lat.plot(t, p50, color=c, linestyle=":", label=f"{run.name}: p50")
    first = result.runs[0].seconds
    ax_ans.plot(
        [s.t + 0.5 for s in first],
        [s.offered for s in first],
        color="grey",
        linewidth=0.8,
        label="offered/s",
    )
    for ax in axes:
        for start, end, _label in result.scenario.fault_windows():
            ax.axvspan(start, end, color="red", alpha=0.08)
    ax_ans.set_ylabel("answers / s")
    ax_bad.set_ylabel("not answered / s")
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
    return fig


def plot(result: SimulationResult, path: str | Path) -> Path:
    """Draw :func:`figure` into a PNG at ``path`` and return the path.

    Needs matplotlib (``pip install "resilience-policies[plot]"``). Renders with the Agg canvas
    directly: matplotlib's global backend is left as it was, and pyplot is not used.

    Example:
        >>> import pathlib, tempfile
        >>> from resilience.simulate import Scenario, simulate
        >>> s = Scenario.from_dict({"duration": 3, "load": {"rate": 10},
        ...                         "pipelines": {"none": []}})
        >>> out = plot(simulate(s), pathlib.Path(tempfile.mkdtemp()) / "run.png")
        >>> out.stat().st_size > 10_000
        True
    """
    out = Path(path)
    figure(result).savefig(out, dpi=90)
    return out
