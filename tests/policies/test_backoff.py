"""Backoff schedules: the pinned formulas."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

import resilience as rs


class Fixed:
    """A random source returning a fixed value."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_exponential_none_is_exact() -> None:
    b = rs.backoff.exponential(initial=0.5, maximum=3, multiplier=3, jitter="none")
    assert [b.delay(n, None, Fixed(0.5)) for n in range(1, 5)] == [0.5, 1.5, 3.0, 3.0]


@pytest.mark.parametrize(("r", "expected"), [(0.0, 0.0), (0.5, 2.0), (0.999, 3.996)])
def test_exponential_full_jitter_draws_in_zero_to_d(r: float, expected: float) -> None:
    b = rs.backoff.exponential(initial=1, maximum=100, jitter="full")
    assert b.delay(3, None, Fixed(r)) == pytest.approx(expected)


@pytest.mark.parametrize(("r", "expected"), [(0.0, 2.0), (0.5, 3.0), (1.0, 4.0)])
def test_exponential_equal_jitter_draws_in_half_d_to_d(r: float, expected: float) -> None:
    b = rs.backoff.exponential(initial=1, maximum=100, jitter="equal")
    assert b.delay(3, None, Fixed(r)) == pytest.approx(expected)


def test_exponential_huge_retry_number_is_capped() -> None:
    b = rs.backoff.exponential(initial=1, maximum=30, jitter="none")
    assert b.delay(10_000, None, Fixed(0)) == 30


def test_decorrelated_bounds_and_growth() -> None:
    b = rs.backoff.decorrelated(initial=1, maximum=20)
    assert b.delay(1, None, Fixed(0.0)) == 1.0
    assert b.delay(1, None, Fixed(1.0)) == 3.0  # uniform(initial, initial * 3)
    assert b.delay(2, 5.0, Fixed(1.0)) == 15.0  # uniform(initial, previous * 3)
    assert b.delay(3, 15.0, Fixed(1.0)) == 20.0  # capped


def test_schedule_last_step_repeats_and_timedelta() -> None:
    b = rs.backoff.schedule([timedelta(milliseconds=100), 1, 5])
    assert [b.delay(n, None, Fixed(0)) for n in range(1, 6)] == [0.1, 1.0, 5.0, 5.0, 5.0]


def test_constant_with_jitter_uses_own_random() -> None:
    b = rs.backoff.constant(2, jitter="full", random=Fixed(0.25))
    assert b.delay(1, None, Fixed(0.9)) == 0.5


def test_seeded_random_is_reproducible() -> None:
    b = rs.backoff.exponential(initial=0.1, maximum=5)
    first = [b.delay(n, None, random.Random(42)) for n in range(1, 6)]
    second = [b.delay(n, None, random.Random(42)) for n in range(1, 6)]
    assert first == second


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: rs.backoff.exponential(initial=2, maximum=1), "maximum"),
        (lambda: rs.backoff.exponential(multiplier=0.5), "multiplier must be >= 1"),
        (
            lambda: rs.backoff.exponential(jitter="half"),  # type: ignore[arg-type]
            "jitter must be one of",
        ),
        (lambda: rs.backoff.constant(-1), "delay must be >= 0"),
        (lambda: rs.backoff.schedule([]), "at least one delay"),
        (lambda: rs.backoff.schedule("1,2"), "sequence of durations"),  # type: ignore[arg-type]
        (lambda: rs.backoff.decorrelated(initial=0), "initial must be > 0"),
    ],
)
def test_invalid_backoffs(factory: object, message: str) -> None:
    with pytest.raises(rs.ConfigurationError, match=message):
        factory()  # type: ignore[operator]
