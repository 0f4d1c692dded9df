"""The breaker against a small reference model (Hypothesis stateful), and under contention."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as hs
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import resilience as rs
from resilience._policy import Emitter
from resilience.testing import FakeClock

BUCKET_US = 250_000  # window 1 s, 4 buckets
BUCKETS = 4
OPEN_US = 2_000_000
HALF_OPEN_TIMEOUT_US = 700_000


@dataclass
class Model:
    """A deliberately plain reference: a list of recorded calls, no ring, no fast paths."""

    failure_ratio: float
    failure_count: int
    slow_ratio: float
    min_calls: int
    probes: int
    consecutive: int = 0  # consecutive_failures (0: not configured)
    streak: int = 0
    state: str = "closed"
    gen: int = 0
    until: int | None = None  # open: probes allowed at; half_open: timeout (None: not armed)
    opens: int = 0
    granted: int = 0
    passed: int = 0
    calls: list[tuple[int, bool, bool]] = field(default_factory=list)  # (bucket, failed, slow)
    rejected: int = 0
    stale: int = 0

    def window(self, now: int) -> list[tuple[int, bool, bool]]:
        e = now // BUCKET_US
        return [c for c in self.calls if c[0] > e - BUCKETS]

    def go(self, state: str, now: int) -> None:
        self.gen += 1
        self.state = state
        if state == "open":
            self.opens += 1
            self.until = now + OPEN_US
        elif state == "half_open":
            self.until, self.granted, self.passed = None, 0, 0
        else:
            self.until, self.opens, self.calls, self.streak = None, 0, [], 0

    def tick(self, now: int) -> None:
        if self.until is not None and now >= self.until and self.state != "closed":
            self.go("half_open" if self.state == "open" else "open", now)

    def acquire(self, now: int) -> tuple[int, str] | None:
        self.tick(now)
        if self.state == "closed":
            return (self.gen, "closed")
        if self.state == "half_open" and self.granted < self.probes:
            self.granted += 1
            if self.until is None:
                self.until = now + HALF_OPEN_TIMEOUT_US
            return (self.gen, "half_open")
        self.rejected += 1
        return None

    def record(self, now: int, permit: tuple[int, str], failed: bool, slow: bool) -> None:
        if permit != (self.gen, self.state):
            self.stale += 1
            return
        if self.state == "closed":
            e = now // BUCKET_US
            last = max((c[0] for c in self.calls), default=e)
            self.calls.append((max(e, last), failed, slow))
            if self.consecutive:
                self.streak = self.streak + 1 if failed else 0
                if self.streak >= self.consecutive:
                    self.go("open", now)
                    return
            w = self.window(now)
            n, f, s = len(w), sum(c[1] for c in w), sum(c[2] for c in w)
            if n >= self.min_calls and (
                (self.failure_ratio and f / n >= self.failure_ratio)
                or (self.failure_count and f >= self.failure_count)
                or (self.slow_ratio and s / n >= self.slow_ratio)
            ):
                self.go("open", now)
        elif self.state == "half_open":
            bad = (failed and (self.failure_ratio or self.failure_count or self.consecutive)) or (
                slow and self.slow_ratio
            )
            if bad:
                self.go("open", now)
            else:
                self.passed += 1
                if self.passed >= self.probes:
                    self.go("closed", now)

    def release(self, permit: tuple[int, str]) -> None:
        if permit == (self.gen, self.state) and self.state == "half_open":
            self.granted -= 1
            if self.granted == self.passed:
                self.until = None

    def manual(self, action: str, now: int) -> None:
        if action == "open":
            if self.state != "open":
                self.go("open", now)
            self.until = None
        elif self.state != "closed":
            self.go("closed", now)
        if action == "reset":
            self.calls, self.opens, self.rejected, self.stale, self.streak = [], 0, 0, 0, 0


class BreakerVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.outstanding: list[tuple[int, tuple[int, str]]] = []

    @initialize(
        thresholds=hs.sampled_from(
            ["ratio", "count", "slow", "ratio+count", "all", "consecutive", "consecutive+slow"]
        ),
        min_calls=hs.integers(1, 4),
        probes=hs.integers(1, 3),
    )
    def setup(self, thresholds: str, min_calls: int, probes: int) -> None:
        cf = 3 if thresholds.startswith("consecutive") else 0
        fr = 0.5 if "ratio" in thresholds or thresholds == "all" else 0.0
        fc = 3 if not cf and ("count" in thresholds or thresholds == "all") else 0
        sr = 0.5 if thresholds in ("slow", "all", "consecutive+slow") else 0.0
        if cf and not sr:
            min_calls = 1  # no window threshold: min_calls does not apply (and is refused)
        self.breaker = rs.CircuitBreaker(
            "m",
            failure_ratio=fr or None,
            failure_count=fc or None,
            consecutive_failures=cf or None,
            slow_call_ratio=sr or None,
            slow_call_duration=0.1 if sr else None,
            min_calls=min_calls if not cf or sr else None,
            window=1.0,
            buckets=BUCKETS,
            open_for=OPEN_US / 1e6,
            half_open_calls=probes,
            half_open_timeout=HALF_OPEN_TIMEOUT_US / 1e6,
            clock=self.clock,
        )
        self.model = Model(fr, fc, sr, min_calls, probes, cf)
        self.em = Emitter((), None, "op")
        self.wrapped = self.breaker(self._body)
        self.next_outcome: tuple[bool, float] = (False, 0.0)

    def _body(self) -> str:
        failed, duration = self.next_outcome
        if duration:
            self.clock.advance(duration)
        if failed:
            raise ConnectionError("down")
        return "ok"

    @property
    def now(self) -> int:
        return round(self.clock.monotonic() * 1e6)

    @rule(us=hs.sampled_from([1, 999, 125_000, 249_999, 250_000, 700_000, 1_000_000, 2_000_000]))
    def advance(self, us: int) -> None:
        self.clock.advance(us / 1e6)

    @rule(failed=hs.booleans(), slow=hs.booleans())
    def call(self, failed: bool, slow: bool) -> None:
        """A whole call through the sync wrapper (exercises the fast path)."""
        duration = 0.2 if slow else 0.0
        self.next_outcome = (failed, duration)
        permit = self.model.acquire(self.now)
        try:
            self.wrapped()
        except rs.CircuitOpenError:
            assert permit is None
            return
        except ConnectionError:
            pass
        assert permit is not None
        self.model.record(self.now, permit, failed, slow and bool(self.model.slow_ratio))

    @rule()
    def start(self) -> None:
        """Admit a call that stays outstanding."""
        expected = self.model.acquire(self.now)
        try:
            permit = self.breaker._acquire_local(self.em)
        except rs.CircuitOpenError:
            assert expected is None
            return
        assert expected is not None
        self.outstanding.append((permit, expected))

    @rule(data=hs.data(), failed=hs.booleans(), slow=hs.booleans(), release=hs.booleans())
    def finish(self, data: Any, failed: bool, slow: bool, release: bool) -> None:
        if not self.outstanding:
            return
        i = data.draw(hs.integers(0, len(self.outstanding) - 1))
        permit, expected = self.outstanding.pop(i)
        if release:
            self.breaker._record_local(permit, -1, self.em)
            self.model.release(expected)
            return
        slow = slow and bool(self.model.slow_ratio)
        self.breaker._record_local(permit, int(failed) | (2 if slow else 0), self.em)
        self.model.record(self.now, expected, failed, slow)

    @rule(action=hs.sampled_from(["open", "close", "reset"]))
    def manual(self, action: str) -> None:
        getattr(self.breaker, action)()
        self.model.tick(self.now)
        self.model.manual(action, self.now)

    @invariant()
    def agrees(self) -> None:
        if not hasattr(self, "model"):
            return
        m = self.breaker.metrics
        self.model.tick(self.now)
        assert m.state.value == self.model.state
        assert m.rejected == self.model.rejected
        assert m.stale == self.model.stale
        assert m.consecutive_opens == self.model.opens
        if self.model.state == "closed":
            w = self.model.window(self.now)
            assert (m.calls, m.failures, m.slow_calls) == (
                len(w),
                sum(c[1] for c in w),
                sum(c[2] for c in w),
            )


TestBreakerVsModel = BreakerVsModel.TestCase
TestBreakerVsModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# -- contention (CC-1) -------------------------------------------------------------------------
def _half_open(probes: int) -> tuple[rs.CircuitBreaker, FakeClock]:
    clock = FakeClock()
    breaker = rs.CircuitBreaker(
        "contended", failure_count=1, half_open_calls=probes, open_for=1, clock=clock
    )
    try:
        breaker.call(lambda: 1 / 0)
    except ZeroDivisionError:
        pass
    clock.advance(1)
    return breaker, clock


def _contend_threads() -> tuple[int, int, rs.CircuitState]:
    breaker, _clock = _half_open(probes=3)
    barrier = threading.Barrier(8)
    release = threading.Event()
    admitted: list[int] = []
    rejected: list[int] = []

    def probe() -> None:
        admitted.append(1)
        release.wait(5)

    def worker() -> None:
        barrier.wait()
        try:
            breaker.call(probe)
        except rs.CircuitOpenError:
            rejected.append(1)
            if len(rejected) == 5:
                release.set()  # every loser has been turned away: let the probes finish

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return len(admitted), len(rejected), breaker.state


def test_exactly_half_open_calls_probes_across_8_threads() -> None:
    for _ in range(20):
        assert _contend_threads() == (3, 5, rs.CircuitState.CLOSED)


def test_exactly_half_open_calls_probes_across_100_tasks() -> None:
    breaker, _clock = _half_open(probes=4)

    async def main() -> tuple[int, int]:
        gate = asyncio.Event()
        admitted = 0

        async def probe() -> None:
            nonlocal admitted
            admitted += 1
            await gate.wait()

        async def one() -> bool:
            try:
                await breaker.acall(probe)
            except rs.CircuitOpenError:
                return False
            return True

        tasks = [asyncio.ensure_future(one()) for _ in range(100)]
        for _ in range(3):
            await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(*tasks)
        return admitted, sum(results)

    admitted, succeeded = asyncio.run(main())
    assert (admitted, succeeded) == (4, 4)
    assert breaker.state is rs.CircuitState.CLOSED
    assert breaker.metrics.rejected == 96


def test_closed_breaker_counts_every_call_across_threads() -> None:
    breaker = rs.CircuitBreaker("busy", failure_ratio=0.5, window=3600)
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(2000):
            breaker.call(int)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert breaker.metrics.calls == 16_000
