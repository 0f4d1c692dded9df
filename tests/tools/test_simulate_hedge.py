"""Hedging in the policy simulator: concurrent attempts on virtual time, counted apart."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import resilience as rs
from resilience.simulate import (
    Scenario,
    SimClock,
    build_policies,
    format_summary,
    format_table,
    load_scenario,
    simulate,
)

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLE = ROOT / "examples" / "scenarios" / "hedging.toml"


def scenario(pipelines: dict[str, object], **dependency: float) -> Scenario:
    return Scenario.from_dict(
        {
            "duration": 20,
            "seed": 3,
            "load": {"rate": 30},
            "dependency": {"p50": 0.02, "p99": 0.5, **dependency},
            "pipelines": pipelines,
        }
    )


def test_the_checked_in_hedging_scenario_cuts_the_p99() -> None:
    result = simulate(load_scenario(EXAMPLE))
    runs = {run.name: run.summary() for run in result.runs}
    none, hedged = runs["none"], runs["hedged"]
    assert none["hedges"] == 0
    assert isinstance(none["p99"], float)
    assert isinstance(hedged["p99"], float)
    assert hedged["p99"] < none["p99"] / 2
    assert hedged["success_rate"] == none["success_rate"] == 1.0
    # every hedge is one extra dependency call, and the budget keeps them to about its ratio
    hedges = {run.name: run.total("hedges") for run in result.runs}
    calls = {run.name: run.total("attempts") - run.total("offered") for run in result.runs}
    assert hedges == calls
    assert 0 < hedges["hedged"] < 0.25 * result.runs[1].total("offered")
    assert 0 < hedges["percentile"] < hedges["hedged"]
    assert runs["percentile"]["p99"] < none["p99"]  # type: ignore[operator]
    # deterministic: the same seed gives the same run
    again = {run.name: run.summary() for run in simulate(load_scenario(EXAMPLE)).runs}
    assert again == runs


def test_hedged_attempts_overlap_on_virtual_time() -> None:
    # every call takes exactly 1 s: with the hedge sent after 0.1 s and running concurrently,
    # the first attempt still answers at 1.0 s (sequential attempts would take 1.1 s or more)
    s = scenario({"hedged": [{"type": "hedge", "delay": 0.1}]}, p50=1.0, p99=1.0)
    (run,) = simulate(s).runs
    summary = run.summary()
    assert summary["hedges"] == summary["requests"]
    assert summary["dependency_calls"] == 2 * summary["requests"]  # type: ignore[operator]
    assert summary["p50"] == pytest.approx(1.0)
    assert summary["p99"] == pytest.approx(1.0)


def test_hedges_are_in_the_summary_and_the_table() -> None:
    s = scenario({"none": [], "hedged": [{"type": "hedge", "delay": 0.03, "attempts": 3}]})
    result = simulate(s)
    line = next(x for x in format_summary(result).splitlines() if x.startswith("hedges"))
    _, hedged = result.runs
    assert line.split()[-2:] == ["0", str(hedged.total("hedges"))]
    assert hedged.total("hedges") > 0
    table = format_table(hedged).splitlines()
    column = table[0].split().index("hedges")
    assert sum(int(row.split()[column]) for row in table[1:]) == hedged.total("hedges")


def test_a_percentile_delay_table_builds_hedge_percentile() -> None:
    spec = {"type": "hedge", "delay": {"percentile": 90, "min_samples": 5, "fallback": 0.2}}
    [hedge] = build_policies([spec], SimClock(), random.Random(1), lambda e: None)
    assert isinstance(hedge, rs.Hedge)
    assert isinstance(hedge.delay, rs.LatencyPercentile)
    assert (hedge.delay.q, hedge.delay.min_samples, hedge.delay.fallback) == (90, 5, 0.2)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {},
            "pipelines.h[0].delay: required key missing: expected a number of seconds or a "
            "percentile table",
        ),
        ({"delay": -1}, "pipelines.h[0].delay: delay must be"),
        ({"delay": 0.1, "attempts": 0}, "pipelines.h[0].attempts: attempts must be"),
        ({"delay": 0.1, "atempts": 2}, "pipelines.h[0].atempts: unknown key for hedge"),
        (
            {"delay": {"percentil": 95}},
            "pipelines.h[0].delay.percentil: unknown key for percentile delay of hedge",
        ),
        (
            {"delay": {"window": 10}},
            "pipelines.h[0].delay.percentile: required key missing",
        ),
        (
            {"delay": {"percentile": 100}},
            "pipelines.h[0].delay.percentile: percentile must be in (0, 100)",
        ),
        ({"delay": 0.1, "on_result": "x"}, "pipelines.h[0].on_result: takes a Python object"),
        ({"delay": 0.1, "clock": 1}, "pipelines.h[0].clock: is set by the simulator"),
    ],
)
def test_a_bad_hedge_names_the_field(spec: dict[str, object], message: str) -> None:
    with pytest.raises(rs.ConfigurationError) as info:
        scenario({"ok": [], "h": [{"type": "hedge", **spec}]})
    assert str(info.value).startswith(message), str(info.value)
