"""The pytest plugin: the ``fake_clock`` and ``events`` fixtures.

Installed with the distribution (entry point ``pytest11``, name ``resilience``), so the fixtures
are there in every test session once ``resilience-policies`` is installed; disable it with
``-p no:resilience``. Nothing is switched on by loading it: only a test that asks for
``fake_clock`` runs in test mode.

* ``fake_clock`` -- a :class:`~resilience.testing.FakeClock`, and test mode switched on for the
  test with that clock as the process clock (see :func:`resilience.testing.set_testing`): every
  policy built without ``clock=``, functions decorated at import time included, sleeps on it at
  once. The clock is new for each test and goes on from the latest reading of the process clock
  (never before what a policy recorded); the mode in force before the test is restored after it.
* ``events`` -- a new :class:`~resilience.testing.RecordingListener` for the test, that the test
  gives to the policies it builds (``listeners=[events]``). It is not attached process-wide: a
  process-wide listener would make every call of every policy emit its events, and the
  policies that matter to one test are the ones it builds or passes in.

Example (a test module)::

    import resilience as rs

    @rs.Retry(on=ConnectionError, attempts=3, backoff=rs.backoff.constant(10))
    def fetch() -> str: ...

    def test_fetch_gives_up(fake_clock: rs.testing.FakeClock) -> None:
        ...  # fetch() sleeps 10 s twice on fake_clock, at once
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import FakeClock, RecordingListener, _new_timeline, testing_mode

__all__ = ["events", "fake_clock"]


@pytest.fixture
def fake_clock() -> Iterator[FakeClock]:
    """A fake clock, the process clock of the test mode in force during the test."""
    clock = _new_timeline()
    with testing_mode(clock=clock):
        yield clock


@pytest.fixture
def events() -> RecordingListener:
    """A recording listener for the test's own policies (``listeners=[events]``)."""
    return RecordingListener()
