"""The fault timeline injected into the payment (gRPC) and inventory (HTTP) services.

The faults themselves are ``rs.chaos`` policies wrapped around the services' steps
(:func:`payment_chaos`, :func:`inventory_chaos`); the timeline only switches them on and off
(``enabled=plan.during(target, kind)``, a callable asked on every call) and feeds them its seeded
random source, so a run is repeatable.

Every process builds its own :class:`FaultPlan` from the same start timestamp (a
``time.monotonic()`` value: the system-wide monotonic clock on Linux, macOS and Windows), so the
services and the load generator agree on "now" without talking to each other.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import resilience as rs


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
#: what the inventory answers when it fails
OVERLOADED = (503, b'{"error": "overloaded"}')


class ProcessorError(Exception):
    """The card network failed a charge (the payment service answers ``UNAVAILABLE``)."""


class FaultPlan:
    """Maps time since the run started onto the :data:`TIMELINE`; the switches of the services'
    chaos policies (``enabled=plan.during(...)``) and their seeded random source."""

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

    def current(self, target: str, kind: str) -> Fault | None:
        """The ``kind`` fault of ``target`` running now, if any."""
        for f in self.active(target):
            if f.kind == kind:
                return f
        return None

    def during(self, target: str, kind: str) -> Callable[[], bool]:
        """A chaos policy's switch: on while a ``kind`` fault hits ``target``."""
        return lambda: self.current(target, kind) is not None

    def left(self, target: str, kind: str) -> float:
        """Seconds until the current ``kind`` fault of ``target`` ends (0 when none runs)."""
        f = self.current(target, kind)
        return 0.0 if f is None else max(0.0, self.started + f.end - time.monotonic())

    def progress(self, fault: Fault) -> float:
        x = self.elapsed()
        return min(1.0, max(0.0, (x - fault.start) / (fault.end - fault.start)))

    def cold(self) -> float:
        """How cold the restarting payment service still is: 1 at the restart, 0 when warm."""
        f = self.current("payment", "warmup")
        return 0.0 if f is None else 1.0 - self.progress(f)

    def load_factor(self) -> float:
        return 3.0 if self.active("load") else 1.0

    def service_time(self, target: str) -> float:
        """A healthy call's processing time (log-normal around :data:`BASE_DELAY`)."""
        return self.rng.lognormvariate(math.log(BASE_DELAY[target]), 0.3)


# -- the faults, as rs.chaos policies ------------------------------------------------------------
@dataclass(frozen=True)
class PaymentChaos:
    """The payment service's faults: wrap the steps of a charge with these."""

    congestion: rs.Policy  # before the call reaches the service (holds no worker)
    outage: rs.Policy  # inside a worker: the processor hangs until the network is back
    card_network: rs.Policy  # around the charge itself: warm-up latency and failures


def payment_chaos(plan: FaultPlan) -> PaymentChaos:
    """The timeline's payment faults. Every policy draws from the plan's seeded random source
    and is switched on and off by the timeline (``enabled=plan.during(...)``)."""
    rng = plan.rng
    return PaymentChaos(
        # a congested network path: 25% of the calls take 1.2-3 s longer, no extra work
        congestion=rs.chaos.Latency(
            name="payment-congestion",
            rate=0.25,
            seconds=lambda: rng.uniform(1.2, 3.0),
            enabled=plan.during("payment", "latency"),
            random=rng,
        ),
        # an outage: every call hangs until the network is back, then runs (a caller's deadline
        # ends the hang first: rs.chaos.Latency never waits past the published deadline)
        outage=rs.chaos.Latency(
            name="payment-outage",
            rate=1.0,
            seconds=lambda: plan.left("payment", "outage"),
            enabled=plan.during("payment", "outage"),
            random=rng,
        ),
        card_network=rs.Pipeline(
            # a restart: slow and failing while cold, less and less as it warms up
            rs.chaos.Latency(
                name="payment-warmup-latency",
                rate=1.0,
                seconds=lambda: 0.15 * plan.cold() * rng.uniform(0.5, 1.5),
                enabled=plan.during("payment", "warmup"),
                random=rng,
            ),
            rs.chaos.Fault(
                name="payment-warmup-errors",
                rate=0.25,
                error=ProcessorError("warming up"),
                # a callable switch is asked per call: here it also fades the fault out
                enabled=lambda: rng.random() < plan.cold(),
                random=rng,
            ),
            # the background failure rate of any real dependency
            rs.chaos.Fault(
                name="payment-glitches", rate=0.005, error=ProcessorError("glitch"), random=rng
            ),
            name="payment-chaos",
        ),
    )


def inventory_chaos(plan: FaultPlan) -> rs.Policy:
    """The timeline's inventory faults: an error burst (60% of the answers are a 503), on top of
    the background failure rate. Both replace the lookup's answer (an ``Outcome``)."""
    rng = plan.rng
    return rs.Pipeline(
        rs.chaos.Outcome(
            name="inventory-errors",
            rate=0.6,
            value=OVERLOADED,
            enabled=plan.during("inventory", "errors"),
            random=rng,
        ),
        rs.chaos.Outcome(name="inventory-glitches", rate=0.005, value=OVERLOADED, random=rng),
        name="inventory-chaos",
    )
