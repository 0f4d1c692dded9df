"""The policy simulator: virtual-time loop, scenarios, real policies, table and plot."""

from __future__ import annotations

import asyncio
import inspect
import os
import random
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import resilience as rs
import resilience.simulate._engine as engine
from resilience.__main__ import main
from resilience.events import CallRejected, Event, FallbackUsed, RetryScheduled
from resilience.simulate import (
    BACKOFFS,
    DESCRIPTION,
    HELP,
    Scenario,
    SimClock,
    arrival_times,
    figure,
    format_summary,
    format_table,
    load_scenario,
    plot,
    run_virtual,
    simulate,
)

ROOT = Path(__file__).resolve().parent.parent.parent
SCENARIOS = sorted((ROOT / "examples" / "scenarios").glob("*.toml"))
DOC = ROOT / "docs" / "simulator.md"


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
    assert b["fallback_answers"] > 100
    assert b["rejected_by_breaker"] > 0
    assert b["answered_rate"] == 1.0
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
    with pytest.raises(rs.ConfigurationError, match=r"^phases\[0\]\.latency: unknown key"):
        small(phases=[{"start": 0, "end": 1, "latency": 3}])
    with pytest.raises(rs.ConfigurationError, match=r"^pipelines\.x\[0\]\.type: unknown policy"):
        small(pipelines={"x": [{"type": "nope"}]})
    with pytest.raises(rs.ConfigurationError, match=r"no pipeline 'missing'.*it has: none"):
        simulate(small(), only=["missing"])


# (scenario file text, what the message must hold): every file holds valid pipelines before
# the bad one, which the simulator used to run before failing with a traceback
GOOD = """
duration = 5
[load]
rate = 5
[pipelines]
first = []
second = [{ type = "retry", attempts = 2 }]
"""
BAD_FILES = {
    "wrong type": (
        GOOD + 'third = [{ type = "retry", attempts = "three" }]',
        "pipelines.third[0].attempts: attempts must be an integer >= 1 and <= 2**53, "
        "got 'three' (retry)",
    ),
    "out of range": (
        GOOD.replace("[pipelines]", "[dependency]\nerror_rate = 1.5\n[pipelines]"),
        "dependency.error_rate: expected a number in [0, 1], got 1.5",
    ),
    "out of range in a policy": (
        GOOD + 'third = [{ type = "circuit_breaker", failure_ratio = 2 }]',
        "pipelines.third[0].failure_ratio: failure_ratio must be in (0, 1], got 2 "
        "(circuit_breaker)",
    ),
    "unknown policy key": (
        GOOD + 'third = [{ type = "fallback", value = 1 }, { type = "retry", attemps = 3 }]',
        "pipelines.third[1].attemps: unknown key for retry, did you mean 'attempts'? "
        "(expected one of: attempts, backoff, budget, max_elapsed, name, on)",
    ),
    "unknown scenario key": (
        GOOD.replace("duration = 5", "duraton = 5"),
        "duraton: unknown key for a scenario, did you mean 'duration'?",
    ),
    "unknown policy kind": (
        GOOD + 'third = [{ type = "circuit_braker", failure_ratio = 0.5 }]',
        "pipelines.third[0].type: unknown policy type 'circuit_braker', did you mean "
        "'circuit_breaker'? (expected one of: adaptive_concurrency, adaptive_throttle, bulkhead, "
        "chaos_fault, chaos_latency, chaos_outcome, circuit_breaker, fallback, hedge, "
        "rate_limiter, retry, timeout)",
    ),
    "unknown backoff kind": (
        GOOD + 'third = [{ type = "retry", backoff = { kind = "exponental" } }]',
        "pipelines.third[0].backoff.kind: unknown backoff kind 'exponental' for retry, did you "
        "mean 'exponential'? (expected one of: constant, decorrelated, exponential, schedule)",
    ),
    "unknown backoff key": (
        GOOD + 'third = [{ type = "retry", backoff = { kind = "constant", delay = 1, max = 2 } }]',
        "pipelines.third[0].backoff.max: unknown key for constant backoff of retry "
        "(expected one of: delay, jitter)",
    ),
    "missing required field": (
        GOOD + 'third = [{ type = "timeout", name = "attempt" }]',
        "pipelines.third[0].seconds: required key missing: expected a number of seconds (timeout)",
    ),
    "missing backoff field": (
        GOOD + 'third = [{ type = "retry", backoff = { kind = "constant" } }]',
        "pipelines.third[0].backoff.delay: required key missing",
    ),
    "missing phase end": (
        GOOD + '[[phases]]\nstart = 1\noutage = "error"',
        "phases[0].end: required key missing",
    ),
    "not TOML": (
        "this is not a scenario\n\x00\x01",
        "not valid TOML: ",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_scenario_fails_up_front_naming_the_field(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text, expected = BAD_FILES[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    ran: list[str] = []
    real = engine._run_one

    def spy(scenario: Scenario, name: str, *args: Any) -> engine.Run:
        ran.append(name)
        return real(scenario, name, *args)

    monkeypatch.setattr(engine, "_run_one", spy)
    assert main(["simulate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"resilience simulate: {path}: ")
    assert expected in err
    assert "Traceback" not in err
    assert out == ""
    assert ran == []  # nothing ran: not even the valid pipelines before the bad one


def test_a_bad_json_scenario_names_the_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"pipelines": {"none": []},}')
    assert main(["simulate", str(path)]) == 2
    assert "not valid JSON: " in capsys.readouterr().err


def test_simulate_checks_every_pipeline_before_running_any(monkeypatch: pytest.MonkeyPatch) -> None:
    good = small()
    # built without from_dict: simulate() itself checks before the first run
    scenario = Scenario(
        name="s",
        duration=5,
        rate=5,
        base=good.base,
        phases=(),
        pipelines={"none": [], "bad": [{"type": "retry", "backoff": {"kind": "linear"}}]},
    )
    ran: list[str] = []
    monkeypatch.setattr(engine, "_run_one", lambda *a: ran.append(a[1]))
    with pytest.raises(rs.ConfigurationError, match=r"^pipelines\.bad\[0\]\.backoff\.kind: "):
        simulate(scenario)
    assert ran == []


def test_a_breaker_refusal_is_its_own_outcome() -> None:
    breaker = {
        "type": "circuit_breaker",
        "name": "dep",
        "failure_ratio": 0.5,
        "min_calls": 10,
        "window": 5,
        "open_for": 2,
    }
    s = small(
        phases=[{"start": 5, "end": 15, "outage": "error"}],
        pipelines={
            "breaker": [breaker],
            "fallback-breaker": [{"type": "fallback", "value": "cached"}, breaker],
        },
    )
    plain, covered = simulate(s).runs
    a, b = plain.summary(), covered.summary()
    assert plain.transitions[0][3] == "open"
    # without a fallback the refusals reach the caller: neither failures nor successes
    assert isinstance(a["rejected_by_breaker"], int)
    assert a["rejected_by_breaker"] > 100
    assert a["fallbacks"] == a["fallback_answers"] == 0
    # a fallback outside the breaker changes what callers get, not what the breaker did: the
    # same calls are refused, and still counted as refused, not as fallbacks after failures
    assert b["rejected_by_breaker"] == a["rejected_by_breaker"]
    assert covered.total("ok") == plain.total("ok")
    assert b["fallbacks"] == a["failed"]
    assert b["failed"] == 0
    assert covered.total("fallback_answers") == plain.total("failed") + plain.total("rejected")
    assert covered.total("refused_answered") == b["rejected_by_breaker"]
    assert b["answered_rate"] == 1.0
    for run in (plain, covered):  # the outcomes partition the requests
        assert run.total("offered") == sum(
            run.total(k) for k in ("ok", "fallback", "failed", "rejected", "shed")
        )
    # the tables say so too
    table = format_table(plain, every=5).splitlines()
    assert table[0].split()[5] == "br.rej"
    assert sum(int(line.split()[5]) for line in table[1:]) == a["rejected_by_breaker"]
    summary = {
        line[:28].strip(): line[28:].split() for line in format_summary(simulate(s)).splitlines()
    }
    assert summary["rejected by breaker"] == [str(a["rejected_by_breaker"])] * 2


def test_a_refusal_a_retry_moved_past_is_not_the_requests_outcome() -> None:
    rec = engine._Recorder(SimClock(), 1)

    def covered(*events: Event) -> str:
        req = engine._Request(random.Random(0))
        token = engine._REQUEST.set(req)
        try:
            for event in events:
                rec(event)
        finally:
            engine._REQUEST.reset(token)
        return req.covered

    refused = CallRejected(policy="dep", reason="circuit_open")
    retry = RetryScheduled(policy="retry", attempt=1, delay=0.1, reason="exception")
    used = FallbackUsed(policy="fallback")
    assert covered(refused, used) == "circuit_open"  # the fallback answered a refusal
    assert covered(refused, retry, used) == ""  # a retry ran after it: a failure was answered
    assert covered(retry, refused, used) == "circuit_open"
    assert covered(used) == ""


def test_refusals_under_a_retry_are_counted_once_per_request() -> None:
    s = small(
        dependency={"p50": 0.02, "p99": 0.1, "error_rate": 0.3},
        phases=[],
        pipelines={
            "retry-breaker": [
                {"type": "fallback", "value": "cached"},
                {
                    "type": "retry",
                    "attempts": 3,
                    "on": "any",
                    "backoff": {"kind": "constant", "delay": 0.1},
                },
                {
                    "type": "circuit_breaker",
                    "failure_ratio": 0.25,
                    "min_calls": 10,
                    "window": 2,
                    "open_for": 0.5,
                },
            ]
        },
    )
    [run] = simulate(s).runs
    assert run.total("retries") > 0
    assert run.total("rejected") > 0
    assert run.total("fallback") > 0
    assert run.total("refused_answered") == run.total("rejected")
    assert run.total("offered") == run.total("ok") + run.total("fallback") + run.total("rejected")


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_checked_in_scenarios_load(path: Path) -> None:
    s = load_scenario(path)  # every pipeline's policies are built: a bad parameter fails here
    assert s.pipelines
    assert s.duration > 0
    assert s.phases


def _doc_blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOC.read_text(), re.S | re.M)


def test_the_docs_scenarios_are_valid() -> None:
    blocks = _doc_blocks("toml")
    assert len(blocks) >= 2
    for block in blocks:
        assert Scenario.from_dict(tomllib.loads(block)).pipelines
    # the backoff example on the page is the checked-in scenario file, minus its comments
    example = (ROOT / "examples" / "scenarios" / "backoff-kinds.toml").read_text()
    body = "".join(line for line in example.splitlines(True) if not line.startswith("#"))
    assert body in blocks


def test_every_backoff_kind_and_key_is_documented() -> None:
    page = DOC.read_text()
    section = page[page.index("### Backoff schedules") :].split("\n## ")[0]
    rows = {
        m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)`[^|]*\| ([^|]*) \|", section, re.M)
    }
    rows.pop("kind")  # the header
    assert set(rows) == set(BACKOFFS)
    for kind, factory in BACKOFFS.items():
        keys = set(inspect.signature(factory).parameters) - {"random"}
        assert set(re.findall(r"`(\w+)`", rows[kind])) == keys, kind
    # and the example scenario uses every kind
    example = load_scenario(ROOT / "examples" / "scenarios" / "backoff-kinds.toml")
    used = {
        spec[key]["kind"]
        for specs in example.pipelines.values()
        for spec in specs
        for key in ("backoff", "open_for")
        if isinstance(spec.get(key), dict)
    }
    assert used == set(BACKOFFS)


def test_the_backoff_example_runs() -> None:
    result = simulate(load_scenario(ROOT / "examples" / "scenarios" / "backoff-kinds.toml"))
    runs = {r.name: r for r in result.runs}
    assert all(r.total("retries") > 0 for r in runs.values())
    opens = [t[0] for t in runs["growing-open"].transitions if t[3] == "half_open"]
    closes = [t[0] for t in runs["growing-open"].transitions if t[2] == "half_open"]
    reopened = [t for t in runs["growing-open"].transitions if t[4] == "probe_failed"]
    assert len(reopened) >= 2
    # open for 1 s, then 2 s, then 4 s...: each stay in open is longer than the last
    stays = [o - c for c, o in zip(closes, opens[1:], strict=False)]
    assert stays == sorted(stays)
    assert stays[-1] > stays[0]


def test_renders_a_plot(tmp_path: Path) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    result = simulate(small())
    backend = matplotlib.get_backend()
    out = plot(result, tmp_path / "sim.png")
    assert matplotlib.get_backend() == backend
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 40_000  # five panels with curves, not an empty canvas
    assert "success rate" in format_summary(result)


def test_the_plot_shows_fallback_answers_apart() -> None:
    pytest.importorskip("matplotlib")
    result = simulate(small())
    resilient = result.runs[1]
    lines: dict[str, Any] = {
        str(line.get_label()): line for ax in figure(result).axes for line in ax.get_lines()
    }

    def ydata(label: str) -> list[float]:
        return [float(v) for v in lines[label].get_ydata()]

    answers = ydata("resilient: fallback answers/s")
    assert answers == [s.fallback_answers for s in resilient.seconds]
    assert sum(answers) > 100
    assert (
        lines["resilient: fallback answers/s"].get_linestyle()
        != lines["resilient: ok/s"].get_linestyle()
    )
    assert "none: fallback answers/s" not in lines  # no fallback in that pipeline
    assert ydata("resilient: rejected by breaker/s") == [s.rejected for s in resilient.seconds]


def test_plotting_changes_nothing_global_in_matplotlib(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "p.png"
    code = f"""
import sys, matplotlib
matplotlib.use("svg")
from resilience.simulate import Scenario, plot, simulate
s = Scenario.from_dict({{"duration": 3, "load": {{"rate": 10}}, "pipelines": {{"none": []}}}})
plot(simulate(s), {str(png)!r})
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": ""}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split() == ["svg", "False"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
    assert "pipelines.x[0].type: unknown policy type 'nope'" in capsys.readouterr().err
    assert main(["simulate", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err


_REST = re.compile(r"``|:(class|func|mod|meth|attr|data|exc):`|`~")


def test_the_command_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert not _REST.search(HELP)
    assert not _REST.search(DESCRIPTION)
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    assert not _REST.search(capsys.readouterr().out)


def test_simulator_is_not_imported_by_resilience() -> None:
    code = "import sys, resilience; print('resilience.simulate' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_adaptive_throttle_sheds_during_an_error_outage() -> None:
    throttle = {"type": "adaptive_throttle", "window": 5, "buckets": 5, "on": "error", "k": 1.1}
    s = small(
        phases=[{"start": 5, "end": 15, "outage": "error"}],
        pipelines={"none": [], "throttle": [throttle]},
    )
    none, throttled = simulate(s).runs
    assert none.total("shed") == 0
    assert throttled.total("shed") > 100  # refused locally instead of sent to a failing dependency
    assert throttled.total("attempts") < none.total("attempts") - 100
    assert throttled.total("offered") == sum(
        throttled.total(k) for k in ("ok", "fallback", "failed", "rejected", "shed")
    )
