"""Chaos kinds in the policy simulator: built from scenario tables, injected with the
simulation's seeded random source and virtual clock."""

from __future__ import annotations

import random

import pytest

import resilience as rs
from resilience.simulate import DependencyError, Scenario, SimClock, build_policies, simulate


def build(spec: dict[str, object]) -> rs.Policy:
    [policy] = build_policies([spec], SimClock(), random.Random(1), lambda e: None)
    return policy


def test_chaos_fault_defaults_to_a_dependency_error() -> None:
    fault = build({"type": "chaos_fault", "rate": 1.0})
    assert isinstance(fault, rs.chaos.Fault)
    assert fault.describe()["name"] == "chaos_fault"
    with pytest.raises(DependencyError):
        fault.call(lambda: "ok")


def test_chaos_fault_error_names_an_outcome() -> None:
    fault = build({"type": "chaos_fault", "rate": 1.0, "error": "timeout"})
    with pytest.raises(rs.TimeoutExceededError):
        fault.call(lambda: "ok")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"error": "eror"}, "policies[0].error: unknown outcome 'eror'"),
        ({"error": ["error"]}, "policies[0].error: expected an outcome name"),
        ({"rate": 2}, "policies[0].rate: rate must be in [0, 1], got 2"),
    ],
)
def test_chaos_fault_spec_errors_name_the_field(spec: dict[str, object], message: str) -> None:
    with pytest.raises(rs.ConfigurationError) as info:
        build({"type": "chaos_fault", "rate": 1.0, **spec})
    assert str(info.value).startswith(message)


def test_chaos_latency_and_outcome() -> None:
    latency = build({"type": "chaos_latency", "rate": 1.0, "seconds": 0.25, "name": "slow"})
    assert latency.describe()["seconds"] == 0.25
    outcome = build({"type": "chaos_outcome", "rate": 1.0, "value": "stale"})
    assert outcome.call(lambda: "fresh") == "stale"
    with pytest.raises(rs.ConfigurationError, match="factory: takes a Python object"):
        build({"type": "chaos_outcome", "rate": 1.0, "factory": "x"})


def test_a_simulated_retry_absorbs_injected_faults() -> None:
    scenario = Scenario.from_dict(
        {
            "duration": 10,
            "load": {"rate": 20},
            "pipelines": {
                "chaos only": [{"type": "chaos_fault", "rate": 0.3}],
                "retry over chaos": [
                    {"type": "retry", "attempts": 4},
                    {"type": "chaos_fault", "rate": 0.3},
                ],
            },
        }
    )
    plain, retried = simulate(scenario).runs
    plain_rate = plain.summary()["success_rate"]
    retried_rate = retried.summary()["success_rate"]
    assert plain_rate is not None
    assert retried_rate is not None
    assert plain_rate < 0.8 < retried_rate
    again, _ = simulate(scenario).runs
    assert again.summary() == plain.summary()  # seeded: the same calls are injected
