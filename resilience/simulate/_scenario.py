"""Scenario files: load, dependency behaviour over time, and the pipelines to compare."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError

__all__ = ["DependencyState", "Phase", "Scenario", "load_scenario"]

_Z99 = 2.3263478740408408  # the standard normal's 99th percentile

_DEP_KEYS = ("p50", "p99", "error_rate", "outage", "capacity", "hang")
_PHASE_KEYS = {"start", "end", "rate", "ramp", "label", *_DEP_KEYS}


@dataclass(frozen=True)
class DependencyState:
    """How the dependency behaves at one instant.

    Attributes:
        p50: median latency of a call, seconds (latencies are log-normal).
        p99: 99th percentile latency, seconds (``>= p50``).
        error_rate: probability that a call fails (after its latency).
        outage: ``""`` (up), ``"error"`` (every call fails fast: connection refused) or
            ``"hang"`` (every call hangs for ``hang`` seconds, then fails).
        capacity: calls served concurrently (``0``: unlimited); excess calls queue.

    Example:
        >>> s = DependencyState(p50=0.05, p99=0.2)
        >>> round(s.sigma, 3)
        0.596
    """

    p50: float = 0.05
    p99: float = 0.2
    error_rate: float = 0.0
    outage: str = ""
    capacity: int = 0
    hang: float = 30.0

    @property
    def mu(self) -> float:
        """``ln(p50)``: the log-normal's location."""
        return math.log(self.p50)

    @property
    def sigma(self) -> float:
        """The log-normal's shape, from ``p50`` and ``p99``."""
        return max(0.0, (math.log(self.p99) - math.log(self.p50)) / _Z99)


@dataclass(frozen=True)
class Phase:
    """A window ``[start, end)`` overriding the load rate and/or the dependency's behaviour.

    With ``ramp = true`` (a warm-up after a restart) the numeric overrides hold at ``start``
    and move linearly back to the base values by ``end``.

    Example:
        >>> Phase(start=10, end=20, values={"error_rate": 1.0}).active(15)
        True
    """

    start: float
    end: float
    values: Mapping[str, Any] = field(default_factory=dict)
    ramp: bool = False
    label: str = ""

    def active(self, t: float) -> bool:
        """Whether ``t`` is inside the phase."""
        return self.start <= t < self.end

    def weight(self, t: float) -> float:
        """How much of the override applies at ``t`` (1, or falling to 0 when ramping)."""
        if not self.ramp or self.end <= self.start:
            return 1.0
        return max(0.0, 1.0 - (t - self.start) / (self.end - self.start))


@dataclass(frozen=True)
class Scenario:
    """A synthetic fault scenario and the policy pipelines to run against it.

    Attributes:
        name: title (plots, tables).
        duration: simulated seconds of traffic.
        rate: base arrival rate (requests per second, Poisson).
        base: the dependency's normal behaviour.
        phases: windows overriding ``rate`` and the dependency's behaviour.
        pipelines: name → list of policy specifications, outermost first (``[]``: no policy).
        seed: random seed (arrivals, latencies, errors, jitter); runs are reproducible.
        client_timeout: seconds after which the *caller* gives up on a request (``0``: never).

    Example:
        >>> s = Scenario.from_dict({"duration": 10, "load": {"rate": 5},
        ...     "dependency": {"p50": 0.01, "p99": 0.05},
        ...     "phases": [{"start": 2, "end": 4, "outage": "error"}],
        ...     "pipelines": {"none": []}})
        >>> s.rate_at(3.0), s.dependency_at(3.0).outage, s.dependency_at(5.0).outage
        (5.0, 'error', '')
    """

    name: str
    duration: float
    rate: float
    base: DependencyState
    phases: tuple[Phase, ...]
    pipelines: Mapping[str, list[dict[str, Any]]]
    seed: int = 1
    client_timeout: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, name: str = "scenario") -> Scenario:
        """Build a scenario from parsed TOML / JSON (see ``examples/scenarios``)."""
        try:
            load = dict(data.get("load", {}))
            dep = dict(data.get("dependency", {}))
            unknown = set(dep) - set(_DEP_KEYS)
            if unknown:
                raise ConfigurationError(f"unknown dependency keys {sorted(unknown)}")
            base = DependencyState(
                p50=float(dep.get("p50", 0.05)),
                p99=float(dep.get("p99", dep.get("p50", 0.05) * 4)),
                error_rate=float(dep.get("error_rate", 0.0)),
                outage=str(dep.get("outage", "")),
                capacity=int(dep.get("capacity", 0)),
                hang=float(dep.get("hang", 30.0)),
            )
            phases = []
            for raw in data.get("phases", []):
                unknown = set(raw) - _PHASE_KEYS
                if unknown:
                    raise ConfigurationError(f"unknown phase keys {sorted(unknown)}")
                values = {k: raw[k] for k in ("rate", *_DEP_KEYS) if k in raw}
                if values.get("outage", "") not in ("", "error", "hang"):
                    raise ConfigurationError("outage must be 'error' or 'hang'")
                phases.append(
                    Phase(
                        start=float(raw["start"]),
                        end=float(raw["end"]),
                        values=values,
                        ramp=bool(raw.get("ramp", False)),
                        label=str(raw.get("label", "")),
                    )
                )
            pipelines = {str(k): [dict(p) for p in v] for k, v in data["pipelines"].items()}
            if not pipelines:
                raise ConfigurationError("a scenario needs at least one pipeline")
            if base.outage not in ("", "error", "hang") or base.p99 < base.p50 <= 0:
                raise ConfigurationError("dependency needs 0 < p50 <= p99 and a valid outage")
            return cls(
                name=str(data.get("name", name)),
                duration=float(data.get("duration", 60)),
                rate=float(load.get("rate", 50)),
                base=base,
                phases=tuple(phases),
                pipelines=pipelines,
                seed=int(data.get("seed", 1)),
                client_timeout=float(load.get("client_timeout", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(f"invalid scenario: {exc!r}") from None

    def rate_at(self, t: float) -> float:
        """The arrival rate at ``t`` (the last active phase that sets ``rate`` wins)."""
        rate = self.rate
        for ph in self.phases:
            if ph.active(t) and "rate" in ph.values:
                w = ph.weight(t)
                rate = rate + (float(ph.values["rate"]) - rate) * w
        return rate

    def dependency_at(self, t: float) -> DependencyState:
        """The dependency's behaviour at ``t`` (active phases applied in order)."""
        st = self.base
        for ph in self.phases:
            if not ph.active(t):
                continue
            w = ph.weight(t)
            kw: dict[str, Any] = {}
            for k, v in ph.values.items():
                if k == "rate":
                    continue
                if k in ("outage", "capacity"):
                    kw[k] = v
                else:
                    cur = float(getattr(st, k))
                    kw[k] = cur + (float(v) - cur) * w
            st = DependencyState(**{**st.__dict__, **kw})
        return st

    def fault_windows(self) -> list[tuple[float, float, str]]:
        """``(start, end, label)`` of every phase (for shading plots)."""
        out = []
        for ph in self.phases:
            label = ph.label or ", ".join(f"{k}={v}" for k, v in ph.values.items())
            out.append((ph.start, ph.end, label))
        return out


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario from a ``.toml`` or ``.json`` file.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.json"
        >>> _ = p.write_text('{"duration": 5, "pipelines": {"none": []}}')
        >>> load_scenario(p).duration
        5.0
    """
    p = Path(path)
    if p.suffix == ".json":
        data = json.loads(p.read_text())
    else:
        import tomllib

        data = tomllib.loads(p.read_text())
    return Scenario.from_dict(data, name=p.stem)
