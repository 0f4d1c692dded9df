"""The fault timeline injected into the payment (gRPC) and inventory (HTTP) services.

Every process builds its own :class:`FaultPlan` from the same start timestamp (a
``time.monotonic()`` value: the system-wide monotonic clock on Linux, macOS and Windows), so the
services and the load generator agree on "now" without talking to each other.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    """``kind`` hits ``target`` during ``[start, end)`` (seconds into the run)."""

    target: str  # "payment", "inventory" or "load"
    kind: str  # "latency", "errors", "outage", "warmup", "spike"
    start: float
    end: float
    label: str


#: the default run (16 s); times in seconds, so timeouts and client patience mean the same in
#: both timelines
TIMELINE = (
    Fault("payment", "latency", 1.9, 4.2, "payment slow calls (25% take 1.2-3 s)"),
    Fault("inventory", "errors", 4.5, 6.4, "inventory error burst (60% 503)"),
    Fault("payment", "outage", 7.0, 10.2, "payment outage (calls hang, then run late)"),
    Fault("payment", "warmup", 10.2, 12.5, "payment restart: slow, failing warm-up"),
    Fault("load", "spike", 13.4, 15.0, "traffic spike (3x)"),
)
#: ``--short`` (10 s): the same faults, less time in between
SHORT_TIMELINE = (
    Fault("payment", "latency", 0.6, 2.2, "payment slow calls (25% take 1.2-3 s)"),
    Fault("inventory", "errors", 2.2, 3.0, "inventory error burst (60% 503)"),
    Fault("payment", "outage", 3.2, 5.8, "payment outage (calls hang, then run late)"),
    Fault("payment", "warmup", 5.8, 7.0, "payment restart: slow, failing warm-up"),
    Fault("load", "spike", 8.0, 9.0, "traffic spike (3x)"),
)

#: median service time of a healthy call, seconds
BASE_DELAY = {"payment": 0.100, "inventory": 0.012}


@dataclass(frozen=True)
class Effect:
    """What one call to a service experiences now."""

    delay: float  # processing time (holds one of the service's workers)
    fail: bool = False
    hang_until: float | None = None  # an outage: the call hangs until then, then runs
    transit: float = 0.0  # network delay before the call reaches the service


class FaultPlan:
    """Maps time since the run started onto the :data:`TIMELINE`."""

    def __init__(
        self,
        duration: float,
        started: float | None = None,
        seed: int = 1,
        timeline: tuple[Fault, ...] = TIMELINE,
    ) -> None:
        self.duration = duration
        self.timeline = timeline
        self.started = time.monotonic() if started is None else started
        self.rng = random.Random(seed)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def active(self, target: str | None = None) -> list[Fault]:
        x = self.elapsed()
        return [f for f in self.timeline if f.start <= x < f.end and target in (None, f.target)]

    def progress(self, fault: Fault) -> float:
        x = self.elapsed()
        return min(1.0, max(0.0, (x - fault.start) / (fault.end - fault.start)))

    def load_factor(self) -> float:
        return 3.0 if self.active("load") else 1.0

    def effect(self, target: str) -> Effect:
        rng = self.rng
        delay = rng.lognormvariate(math.log(BASE_DELAY[target]), 0.3)
        fail = rng.random() < 0.005
        transit = 0.0
        for f in self.active(target):
            if f.kind == "latency":  # a congested network path: slow, but no extra work
                if rng.random() < 0.25:
                    transit = rng.uniform(1.2, 3.0)
            elif f.kind == "errors":
                fail = fail or rng.random() < 0.6
            elif f.kind == "outage":
                return Effect(delay, False, self.started + f.end, transit)
            elif f.kind == "warmup":
                cold = 1.0 - self.progress(f)
                delay += 0.15 * cold * rng.uniform(0.5, 1.5)
                fail = fail or rng.random() < 0.25 * cold
        return Effect(delay, fail, None, transit)
