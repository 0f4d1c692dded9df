"""Scenario files: load, dependency behaviour over time, and the pipelines to compare."""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ._policies import fail, field_path, reject_unknown, validate_pipelines

__all__ = ["DependencyState", "Phase", "Scenario", "load_scenario"]

_Z99 = 2.3263478740408408  # the standard normal's 99th percentile

_DEP_KEYS = ("p50", "p99", "error_rate", "outage", "capacity", "hang")
_PHASE_KEYS = {"start", "end", "rate", "ramp", "label", *_DEP_KEYS}


_TOP_KEYS = ("name", "duration", "seed", "load", "dependency", "phases", "pipelines")
_LOAD_KEYS = ("rate", "client_timeout")
_OUTAGES = ("", "error", "hang")


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        fail(key, f"expected a table ([{key}]), got {value!r}")
    return value


def _number(
    table: Mapping[str, Any],
    key: str,
    path: str,
    default: float,
    *,
    positive: bool = False,
    ratio: bool = False,
) -> float:
    """``table[key]`` as a finite number (``> 0``, ``in [0, 1]`` or else ``>= 0``)."""
    if key not in table:
        return default
    v = table[key]
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    if positive:
        expected, ok = "a number > 0", ok and v > 0
    elif ratio:
        expected, ok = "a number in [0, 1]", ok and 0 <= v <= 1
    else:
        expected, ok = "a number >= 0", ok and v >= 0
    if not ok:
        fail(field_path(path, key), f"expected {expected}, got {v!r}")
    return float(v)


def _dependency(raw: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The dependency keys present in ``raw``, checked (base values or a phase's overrides)."""
    out: dict[str, Any] = {}
    for key in ("p50", "p99", "hang"):
        if key in raw:
            out[key] = _number(raw, key, path, 0.0, positive=key != "hang")
    if "error_rate" in raw:
        out["error_rate"] = _number(raw, "error_rate", path, 0.0, ratio=True)
    if "outage" in raw:
        if raw["outage"] not in _OUTAGES:
            fail(
                field_path(path, "outage"),
                f'expected "error", "hang" or "" (up), got {raw["outage"]!r}',
            )
        out["outage"] = raw["outage"]
    if "capacity" in raw:
        cap = raw["capacity"]
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
            fail(
                field_path(path, "capacity"),
                f"expected an integer >= 0 (0: unlimited), got {cap!r}",
            )
        out["capacity"] = cap
    if "p50" in out and "p99" in out and out["p99"] < out["p50"]:
        fail(
            field_path(path, "p99"),
            f"expected a number >= p50 ({out['p50']:g}), got {raw['p99']!r}",
        )
    return out


def _phase(raw: object, path: str) -> Phase:
    if not isinstance(raw, Mapping):
        fail(path, f"expected a table (a [[phases]] entry), got {raw!r}")
    reject_unknown(raw, _PHASE_KEYS, path, "a phase")
    for key in ("start", "end"):
        if key not in raw:
            fail(field_path(path, key), "required key missing (seconds from the start)")
    start = _number(raw, "start", path, 0.0)
    end = _number(raw, "end", path, 0.0)
    if end <= start:
        fail(field_path(path, "end"), f"expected a number > start ({start:g}), got {raw['end']!r}")
    values = _dependency(raw, path)
    if "rate" in raw:
        values["rate"] = _number(raw, "rate", path, 0.0)
    ramp, label = raw.get("ramp", False), raw.get("label", "")
    if not isinstance(ramp, bool):
        fail(field_path(path, "ramp"), f"expected true or false, got {ramp!r}")
    if not isinstance(label, str):
        fail(field_path(path, "label"), f"expected a string, got {label!r}")
    ordered = {k: values[k] for k in ("rate", *_DEP_KEYS) if k in values}
    return Phase(start=start, end=end, values=ordered, ramp=ramp, label=label)


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
        """Build a scenario from parsed TOML / JSON (see ``examples/scenarios``).

        The whole scenario is checked first, every pipeline's policies included: a bad field
        raises :class:`~resilience.ConfigurationError` naming its path, what was expected and
        what the scenario holds.

        Example:
            >>> Scenario.from_dict({"duration": -5, "pipelines": {"none": []}})
            Traceback (most recent call last):
            ...
            resilience.errors.ConfigurationError: duration: expected a number > 0, got -5
        """
        if not isinstance(data, Mapping):
            fail("(top level)", f"expected a table of scenario keys, got {data!r}")
        reject_unknown(data, _TOP_KEYS, "", "a scenario")
        load = _table(data, "load")
        reject_unknown(load, _LOAD_KEYS, "load", "load")
        dep = _table(data, "dependency")
        reject_unknown(dep, _DEP_KEYS, "dependency", "dependency")
        values = _dependency(dep, "dependency")
        p50 = values.get("p50", 0.05)
        p99 = values.get("p99", p50 * 4)
        if p99 < p50:
            fail("dependency.p99", f"expected a number >= p50 ({p50:g}), got {dep['p99']!r}")
        base = DependencyState(**{**values, "p50": p50, "p99": p99})
        raw_phases = data.get("phases", [])
        if not isinstance(raw_phases, list):
            fail("phases", f"expected an array of tables ([[phases]]), got {raw_phases!r}")
        phases = [_phase(raw, field_path("phases", i)) for i, raw in enumerate(raw_phases)]
        if "pipelines" not in data:
            fail("pipelines", "required key missing (a table: name = [policies, ...])")
        pipelines = data["pipelines"]
        if not isinstance(pipelines, Mapping) or not pipelines:
            fail("pipelines", f"expected a table of at least one pipeline, got {pipelines!r}")
        validate_pipelines(pipelines)
        title = data.get("name", name)
        if not isinstance(title, str):
            fail("name", f"expected a string, got {title!r}")
        seed = data.get("seed", 1)
        if not isinstance(seed, int) or isinstance(seed, bool):
            fail("seed", f"expected an integer, got {seed!r}")
        return cls(
            name=title,
            duration=_number(data, "duration", "", 60.0, positive=True),
            rate=_number(load, "rate", "load", 50.0),
            base=base,
            phases=tuple(phases),
            pipelines={str(k): [dict(p) for p in v] for k, v in pipelines.items()},
            seed=seed,
            client_timeout=_number(load, "client_timeout", "load", 0.0),
        )

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

    A file that does not parse, or a bad field, raises :class:`~resilience.ConfigurationError`
    whose message starts with the file's path.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.json"
        >>> _ = p.write_text('{"duration": 5, "pipelines": {"none": []}}')
        >>> load_scenario(p).duration
        5.0
    """
    p = Path(path)
    text = p.read_text(encoding="utf-8", errors="replace")
    fmt = "JSON" if p.suffix == ".json" else "TOML"
    try:
        data = json.loads(text) if fmt == "JSON" else tomllib.loads(text)
    except ValueError as exc:
        hint = "" if fmt == "JSON" else " (scenario files are TOML, or JSON named *.json)"
        raise ConfigurationError(f"{p}: not valid {fmt}: {exc}{hint}") from None
    try:
        return Scenario.from_dict(data, name=p.stem)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{p}: {exc}") from None
