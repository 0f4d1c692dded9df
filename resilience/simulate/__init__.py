"""The policy simulator: tune thresholds against synthetic faults before production.

A scenario (TOML or JSON) describes the arrival rate and the dependency's behaviour over time
(latency distribution, error rate, outages, slow warm-up after a restart) and names the
policy pipelines to compare. :func:`simulate` runs each pipeline's *real* policy objects
(Timeout, Retry, CircuitBreaker, Fallback, RateLimiter, Bulkhead...) on a virtual-time event
loop driven by a :class:`~resilience.testing.FakeClock`: minutes of traffic run in seconds.

Command line: ``python -m resilience simulate SCENARIO [--plot out.png]``. Not imported by
``import resilience``.

Example:
    >>> from resilience.simulate import Scenario, simulate
    >>> s = Scenario.from_dict({"duration": 10, "load": {"rate": 20},
    ...     "dependency": {"p50": 0.02, "p99": 0.1, "error_rate": 0.2},
    ...     "pipelines": {"none": [], "retry": [{"type": "retry", "attempts": 3,
    ...         "backoff": {"kind": "constant", "delay": 0.01}}]}})
    >>> none, retry = simulate(s).runs
    >>> none.summary()["success_rate"] < 0.9 < retry.summary()["success_rate"]
    True
"""

from __future__ import annotations

from ._engine import Run, Second, SimulationResult, arrival_times, simulate
from ._loop import SimClock, run_virtual
from ._policies import BACKOFFS, POLICIES, DependencyError, build_policies
from ._report import figure, format_summary, format_table, plot
from ._scenario import DependencyState, Phase, Scenario, load_scenario

#: The ``simulate`` command's one-line help (plain text: argparse prints it as it is).
HELP = "run policy pipelines against a fault scenario on a virtual clock"
#: The ``simulate`` command's description for ``--help`` (plain text).
DESCRIPTION = (
    "Run every pipeline of a scenario file (TOML, or JSON named *.json) on a virtual clock "
    "against the scenario's synthetic dependency; print a per-second table per pipeline and "
    "the runs side by side, and with --plot draw them into a PNG (needs matplotlib: pip "
    "install 'resilience-policies[plot]'). The whole scenario is checked before any pipeline "
    "runs: a bad field stops the command with exit status 2 and a message naming it. The scenario "
    "format is described in docs/simulator.md."
)

__all__ = [
    "BACKOFFS",
    "DESCRIPTION",
    "HELP",
    "POLICIES",
    "DependencyError",
    "DependencyState",
    "Phase",
    "Run",
    "Scenario",
    "Second",
    "SimClock",
    "SimulationResult",
    "arrival_times",
    "build_policies",
    "figure",
    "format_summary",
    "format_table",
    "load_scenario",
    "plot",
    "run_virtual",
    "simulate",
]
