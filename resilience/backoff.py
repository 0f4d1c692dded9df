"""Backoff schedules: the delay before retry *n* (n = 1 for the first retry).

All schedules are pure: ``delay(n, previous, random)`` returns seconds and keeps no state, so
one schedule object is safe to share. Jittered schedules draw from the ``random`` they were given
(``random=`` on the schedule), else the one the retry policy was given.

Pinned semantics:

* :func:`exponential`: ``d = min(maximum, initial * multiplier ** (n - 1))``, then jitter:
  ``"full"`` draws uniformly in ``[0, d]``, ``"equal"`` in ``[d/2, d]``, ``"none"`` is ``d``.
* :func:`decorrelated`: ``min(maximum, uniform(initial, previous * 3))`` with ``previous``
  starting at ``initial`` (AWS "decorrelated jitter").
* :func:`constant` and :func:`schedule` add no jitter unless asked.

Example:
    >>> import random, resilience as rs
    >>> b = rs.backoff.exponential(initial=0.1, maximum=1.0, jitter="none")
    >>> [b.delay(n, None, random.Random(0)) for n in range(1, 6)]
    [0.1, 0.2, 0.4, 0.8, 1.0]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Protocol, runtime_checkable

from ._clock import RandomLike
from ._types import Duration, positive_number, seconds
from .errors import ConfigurationError

__all__ = ["Backoff", "constant", "decorrelated", "exponential", "schedule", "Jitter"]

Jitter = Literal["full", "equal", "none"]
_JITTERS = ("full", "equal", "none")


@runtime_checkable
class Backoff(Protocol):
    """A backoff schedule."""

    def delay(self, retry: int, previous: float | None, random: RandomLike, /) -> float:
        """Seconds to wait before retry ``retry`` (1-based); ``previous`` is the last delay."""
        ...


def _jitter(jitter: object) -> Jitter:
    if jitter not in _JITTERS:
        raise ConfigurationError(f"jitter must be one of {_JITTERS}, got {jitter!r}")
    return jitter  # type: ignore[return-value]


def _apply(d: float, jitter: Jitter, rnd: RandomLike) -> float:
    if jitter == "none" or d <= 0:
        return d
    if jitter == "full":
        return d * rnd.random()
    return d / 2 + (d / 2) * rnd.random()


class _Base:
    __slots__ = ("_random",)

    def __init__(self, random: RandomLike | None) -> None:
        if random is not None and not callable(getattr(random, "random", None)):
            raise ConfigurationError(f"random must be a random.Random instance, got {random!r}")
        self._random = random


class _Constant(_Base):
    __slots__ = ("_d", "_jitter")

    def __init__(self, d: float, jitter: Jitter, random: RandomLike | None) -> None:
        super().__init__(random)
        self._d = d
        self._jitter = jitter

    def delay(self, retry: int, previous: float | None, random: RandomLike, /) -> float:
        return _apply(self._d, self._jitter, self._random or random)

    def __repr__(self) -> str:
        return f"constant({self._d!r}, jitter={self._jitter!r})"


class _Exponential(_Base):
    __slots__ = ("_initial", "_jitter", "_maximum", "_multiplier")

    def __init__(
        self,
        initial: float,
        maximum: float,
        multiplier: float,
        jitter: Jitter,
        random: RandomLike | None,
    ) -> None:
        super().__init__(random)
        self._initial, self._maximum, self._multiplier = initial, maximum, multiplier
        self._jitter = jitter

    def delay(self, retry: int, previous: float | None, random: RandomLike, /) -> float:
        try:
            d = min(self._maximum, self._initial * self._multiplier ** (retry - 1))
        except OverflowError:
            d = self._maximum
        return _apply(d, self._jitter, self._random or random)

    def __repr__(self) -> str:
        return (
            f"exponential(initial={self._initial!r}, maximum={self._maximum!r}, "
            f"multiplier={self._multiplier!r}, jitter={self._jitter!r})"
        )


class _Decorrelated(_Base):
    __slots__ = ("_initial", "_maximum")

    def __init__(self, initial: float, maximum: float, random: RandomLike | None) -> None:
        super().__init__(random)
        self._initial, self._maximum = initial, maximum

    def delay(self, retry: int, previous: float | None, random: RandomLike, /) -> float:
        prev = self._initial if previous is None or previous < self._initial else previous
        upper = prev * 3
        r = (self._random or random).random()
        return min(self._maximum, self._initial + (upper - self._initial) * r)

    def __repr__(self) -> str:
        return f"decorrelated(initial={self._initial!r}, maximum={self._maximum!r})"


class _Schedule(_Base):
    __slots__ = ("_jitter", "_steps")

    def __init__(self, steps: tuple[float, ...], jitter: Jitter, random: RandomLike | None) -> None:
        super().__init__(random)
        self._steps = steps
        self._jitter = jitter

    def delay(self, retry: int, previous: float | None, random: RandomLike, /) -> float:
        d = self._steps[min(retry, len(self._steps)) - 1]
        return _apply(d, self._jitter, self._random or random)

    def __repr__(self) -> str:
        return f"schedule({list(self._steps)!r}, jitter={self._jitter!r})"


def constant(
    delay: Duration, *, jitter: Jitter = "none", random: RandomLike | None = None
) -> Backoff:
    """The same delay before every retry.

    Example:
        >>> import random, resilience as rs
        >>> rs.backoff.constant(0.5).delay(3, None, random.Random())
        0.5
    """
    return _Constant(seconds(delay, "delay"), _jitter(jitter), random)


def exponential(
    *,
    initial: Duration = 0.1,
    maximum: Duration = 10.0,
    multiplier: float = 2.0,
    jitter: Jitter = "full",
    random: RandomLike | None = None,
) -> Backoff:
    """Exponential backoff: ``min(maximum, initial * multiplier ** (n - 1))`` plus jitter.

    Example:
        >>> import random, resilience as rs
        >>> b = rs.backoff.exponential(initial=1, maximum=8, jitter="equal")
        >>> 2.0 <= b.delay(3, None, random.Random(1)) <= 4.0
        True
    """
    ini = seconds(initial, "initial")
    mx = seconds(maximum, "maximum")
    if mx < ini:
        raise ConfigurationError(f"maximum ({mx}) must be >= initial ({ini})")
    mult = positive_number(multiplier, "multiplier")
    if mult < 1:
        raise ConfigurationError(f"multiplier must be >= 1, got {multiplier!r}")
    return _Exponential(ini, mx, mult, _jitter(jitter), random)


def decorrelated(
    *, initial: Duration = 0.1, maximum: Duration = 10.0, random: RandomLike | None = None
) -> Backoff:
    """Decorrelated jitter: ``min(maximum, uniform(initial, previous * 3))``.

    Example:
        >>> import random, resilience as rs
        >>> b = rs.backoff.decorrelated(initial=0.1, maximum=5)
        >>> 0.1 <= b.delay(1, None, random.Random(7)) <= 0.3
        True
    """
    ini = seconds(initial, "initial", allow_zero=False)
    mx = seconds(maximum, "maximum")
    if mx < ini:
        raise ConfigurationError(f"maximum ({mx}) must be >= initial ({ini})")
    return _Decorrelated(ini, mx, random)


def schedule(
    steps: Iterable[Duration], *, jitter: Jitter = "none", random: RandomLike | None = None
) -> Backoff:
    """A stepped schedule: delay ``steps[n - 1]`` before retry *n*; the last step repeats.

    Example:
        >>> import random, resilience as rs
        >>> b = rs.backoff.schedule([0.1, 1, 5])
        >>> [b.delay(n, None, random.Random()) for n in (1, 2, 3, 4)]
        [0.1, 1.0, 5.0, 5.0]
    """
    if isinstance(steps, str | bytes) or not isinstance(steps, Iterable):
        raise ConfigurationError(f"steps must be a sequence of durations, got {steps!r}")
    out = tuple(seconds(s, f"steps[{i}]") for i, s in enumerate(steps))
    if not out:
        raise ConfigurationError("steps must hold at least one delay")
    return _Schedule(out, _jitter(jitter), random)


def _is_backoff(obj: object) -> bool:
    return callable(getattr(obj, "delay", None))
