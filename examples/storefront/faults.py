"""The fault timeline injected into the payment (gRPC) and inventory (HTTP) services."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    """``kind`` hits ``target`` during ``[start, end)`` (fractions of the run)."""

    target: str  # "payment", "inventory" or "load"
    kind: str  # "latency", "errors", "outage", "warmup", "spike"
    start: float
    end: float
    label: str


TIMELINE = (
    Fault("payment", "latency", 0.12, 0.26, "payment latency spike (1.2-3 s)"),
    Fault("inventory", "errors", 0.30, 0.44, "inventory error burst (60% 503)"),
    Fault("payment", "outage", 0.50, 0.64, "payment outage (calls hang, run late)"),
    Fault("payment", "warmup", 0.64, 0.80, "payment restart: slow warm-up"),
    Fault("load", "spike", 0.86, 0.94, "traffic spike (3x)"),
)


@dataclass(frozen=True)
class Effect:
    """What one call to a service experiences now."""

    delay: float
    fail: bool = False
    hang_until: float | None = None  # an outage: the call hangs until then, then runs


class FaultPlan:
    """Maps wall time since the run started onto the :data:`TIMELINE`."""

    def __init__(self, duration: float, seed: int = 1) -> None:
        self.duration = duration
        self.started = time.monotonic()
        self.rng = random.Random(seed)

    def restart(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def active(self, target: str | None = None) -> list[Fault]:
        x = self.elapsed() / self.duration
        return [f for f in TIMELINE if f.start <= x < f.end and target in (None, f.target)]

    def progress(self, fault: Fault) -> float:
        x = self.elapsed() / self.duration
        return min(1.0, max(0.0, (x - fault.start) / (fault.end - fault.start)))

    def load_factor(self) -> float:
        return 3.0 if self.active("load") else 1.0

    def effect(self, target: str) -> Effect:
        delay = self.rng.lognormvariate(-4.2, 0.4)  # ~15 ms median
        fail = self.rng.random() < 0.005
        for f in self.active(target):
            if f.kind == "latency":
                delay += self.rng.uniform(1.2, 3.0)
            elif f.kind == "errors":
                fail = fail or self.rng.random() < 0.6
            elif f.kind == "outage":
                return Effect(delay, False, self.started + f.end * self.duration)
            elif f.kind == "warmup":
                cold = 1.0 - self.progress(f)
                delay += 0.9 * cold * self.rng.uniform(0.5, 1.5)
                fail = fail or self.rng.random() < 0.4 * cold
        return Effect(delay, fail)
