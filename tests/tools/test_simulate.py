"""The policy simulator: virtual-time loop, scenarios, real policies, table and plot."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

import resilience as rs
from resilience.__main__ import main
from resilience.simulate import (
    Scenario,
    SimClock,
    arrival_times,
    format_summary,
    load_scenario,
    plot,
    run_virtual,
    simulate,
)

ROOT = Path(__file__).resolve().parent.parent.parent
SCENARIOS = sorted((ROOT / "examples" / "scenarios").glob("*.toml"))


def small(**over: object) -> Scenario:
    data: dict[str, object] = {
        "duration": 30,
        "seed": 5,
        "load": {"rate": 40, "client_timeout": 10},
        "dependency": {"p50": 0.02, "p99": 0.1},
        "phases": [{"start": 10, "end": 20, "outage": "hang", "hang": 30, "label": "outage"}],
        "pipelines": {
            "none": [],
            "resilient": [
                {"type": "fallback", "value": "cached"},
                {"type": "timeout", "seconds": 1.0},
                {
                    "type": "retry",
                    "attempts": 3,
                    "backoff": {"kind": "exponential", "initial": 0.05, "maximum": 0.5},
                    "budget": {"ratio": 0.1, "min_per_second": 1},
                },
                {
                    "type": "circuit_breaker",
                    "name": "dep",
                    "failure_ratio": 0.5,
                    "min_calls": 10,
                    "window": 5,
                    "open_for": 2,
                },
                {"type": "timeout", "seconds": 0.3, "name": "attempt"},
            ],
        },
        **over,
    }
    return Scenario.from_dict(data)


def test_virtual_loop_orders_concurrent_sleeps_and_deadlines() -> None:
    clock = SimClock()
    order: list[tuple[str, float]] = []

    async def nap(name: str, s: float) -> None:
        await clock.asleep(s)
        order.append((name, clock.monotonic()))

    async def main_() -> None:
        timed_out = False
        try:
            async with clock.deadline_scope(5.0):
                await clock.asleep(100)
        except TimeoutError:
            timed_out = True
        order.append(("deadline", clock.monotonic()))
        assert timed_out
        await asyncio.gather(nap("b", 20), nap("a", 10))

    run_virtual(main_(), clock)
    assert order == [("deadline", 5.0), ("a", 15.0), ("b", 25.0)]


def test_policies_cut_the_outage_tail() -> None:
    none, resilient = simulate(small()).runs
    a = {k: float(v or 0) for k, v in none.summary().items()}
    b = {k: float(v or 0) for k, v in resilient.summary().items()}
    assert a["failed"] > 100  # callers hang until their own 10 s timeout
    assert b["failed"] == 0
    assert b["fallbacks"] > 100
    assert a["p99"] is not None
    assert b["p99"] is not None
    assert b["p99"] < 1.5 < a["p99"]
    # the breaker opened during the outage and closed after it
    tos = [t[3] for t in resilient.transitions]
    assert tos[0] == "open"
    assert tos[-1] == "closed"
    assert all(10 <= t[0] < 25 for t in resilient.transitions)
    # the retry budget bounds the extra load: far fewer dependency calls than requests x 3
    assert b["dependency_calls"] < 1.3 * b["requests"]
    assert {s.breaker for s in resilient.seconds} >= {"closed", "open"}


def test_runs_are_reproducible() -> None:
    s = small()
    assert simulate(s).runs[1].summary() == simulate(s).runs[1].summary()


def test_every_pipeline_sees_the_same_arrivals_and_request_draws() -> None:
    s = small(
        dependency={"p50": 0.02, "p99": 0.1, "error_rate": 0.3},
        phases=[],
        pipelines={
            "none": [],
            "retry": [
                {
                    "type": "retry",
                    "attempts": 4,
                    "backoff": {"kind": "exponential", "initial": 0.01, "jitter": "full"},
                }
            ],
            "none-again": [],
        },
    )
    none, retried, again = simulate(s).runs
    assert none.arrivals == retried.arrivals == again.arrivals == arrival_times(s)
    assert len(none.arrivals) > 1000
    assert [x.offered for x in none.seconds] == [x.offered for x in retried.seconds]
    assert none.total("offered") == retried.total("offered") == len(none.arrivals)
    # the same pipeline twice in one scenario (one with retries in between) sees the same run
    assert none.summary() == again.summary()
    assert retried.total("retries") > 0
    assert retried.total("ok") > none.total("ok")
    assert simulate(s, only=["retry"]).runs[0].arrivals == none.arrivals


def test_warmup_ramp_and_rate_phases() -> None:
    s = Scenario.from_dict(
        {
            "duration": 10,
            "load": {"rate": 10},
            "dependency": {"p50": 0.1, "p99": 0.2, "error_rate": 0.0},
            "phases": [
                {"start": 2, "end": 6, "ramp": True, "p50": 1.0, "p99": 2.0, "error_rate": 0.5},
                {"start": 4, "end": 5, "rate": 100},
            ],
            "pipelines": {"none": []},
        }
    )
    assert s.dependency_at(2.0).error_rate == 0.5
    assert s.dependency_at(4.0).error_rate == pytest.approx(0.25)
    assert s.dependency_at(4.0).p50 == pytest.approx(0.55)
    assert s.dependency_at(6.0).error_rate == 0.0
    assert s.rate_at(4.5) == 100.0
    assert s.rate_at(5.0) == 10.0


def test_bad_scenarios_are_configuration_errors() -> None:
    with pytest.raises(rs.ConfigurationError, match="unknown phase keys"):
        small(phases=[{"start": 0, "end": 1, "latency": 3}])
    with pytest.raises(rs.ConfigurationError, match="unknown policy type"):
        simulate(small(pipelines={"x": [{"type": "nope"}]}))
    with pytest.raises(rs.ConfigurationError, match="no pipeline"):
        simulate(small(), only=["missing"])


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_checked_in_scenarios_load(path: Path) -> None:
    s = load_scenario(path)
    assert s.pipelines
    assert s.duration > 0
    assert s.phases


def test_renders_a_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = simulate(small())
    out = plot(result, tmp_path / "sim.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 40_000  # four panels with curves, not an empty canvas
    assert "success rate" in format_summary(result)


def test_cli_runs_a_checked_in_scenario_with_a_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    scenario = ROOT / "examples" / "scenarios" / "retry-storm.toml"
    png = tmp_path / "s.png"
    assert main(["simulate", str(scenario), "--every", "10", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "retry-no-budget" in out
    assert "plot written" in out
    assert png.stat().st_size > 40_000


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"pipelines": {"x": [{"type": "nope"}]}}')
    assert main(["simulate", str(bad)]) == 2
    assert "unknown policy type" in capsys.readouterr().err


def test_simulator_is_not_imported_by_resilience() -> None:
    code = "import sys, resilience; print('resilience.simulate' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
