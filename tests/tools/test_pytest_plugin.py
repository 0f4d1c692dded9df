"""The pytest plugin (``resilience.pytest_plugin``): its fixtures, run by pytester in a pytest of
their own, and the ``pytest11`` entry point that installs it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import resilience as rs
from resilience import pytest_plugin

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

#: load the plugin by module whether or not an installed entry point already loads it
PLUGIN = ("-p", "no:resilience", "-p", "resilience.pytest_plugin", "-p", "no:cacheprovider")

USER_TESTS = """
import asyncio
import time

import pytest

import resilience as rs

CALLS = []


@rs.Retry(on=ConnectionError, attempts=4, backoff=rs.backoff.constant(60))
def fetch():
    CALLS.append(1)
    raise ConnectionError("refused")


@rs.Retry(on=ConnectionError, attempts=3, backoff=rs.backoff.constant(60))
async def afetch():
    raise ConnectionError("refused")


def test_import_time_retry_sleeps_on_the_fake_clock(fake_clock):
    assert rs.testing.testing_clock() is fake_clock
    t0, real = fake_clock.monotonic(), time.monotonic()
    with pytest.raises(ConnectionError):
        fetch()
    assert fake_clock.sleeps == [60, 60, 60]
    assert fake_clock.monotonic() - t0 == 180
    assert time.monotonic() - real < 60


@pytest.mark.asyncio
async def test_async_too(fake_clock):
    with pytest.raises(ConnectionError):
        await afetch()
    assert fake_clock.sleeps == [60, 60]


def test_each_test_has_its_own_clock_and_the_mode_ends_with_it(fake_clock):
    assert fake_clock.sleeps == []


def test_without_the_fixture_there_is_no_test_mode():
    assert not rs.testing.is_testing()


def test_attempts_can_be_capped_on_the_fixture_clock(fake_clock):
    CALLS.clear()
    with rs.testing.testing_mode(attempts=1) as clock:
        assert clock is fake_clock
        with pytest.raises(ConnectionError):
            fetch()
    assert CALLS == [1]
    assert rs.testing.testing_clock() is fake_clock


def test_events_records_what_the_tests_policies_emit(events, fake_clock):
    retry = rs.Retry(on=KeyError, attempts=2, backoff=rs.backoff.constant(5), listeners=[events])
    with pytest.raises(KeyError):
        retry.call(lambda: {}["missing"])
    assert events.kinds() == ["retry", "retries_exhausted"]
    assert events.last(rs.events.RetryScheduled).delay == 5
    assert fake_clock.sleeps == [5]


def test_events_is_new_for_each_test(events):
    assert events.events == []
"""


@pytest.fixture(autouse=True)
def _ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


def test_the_fixtures_in_a_pytest_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(passed=7)
    assert not rs.testing.is_testing()


def test_a_failing_test_still_restores_the_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fails="def test_it(fake_clock):\n    fake_clock.advance(1)\n    assert False\n"
    )
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(failed=1)
    assert not rs.testing.is_testing()


def test_the_fixtures_are_listed(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures", *PLUGIN)
    result.stdout.fnmatch_lines(["fake_clock*", "*process clock*", "events*"])


def test_the_entry_point_names_the_plugin_module() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"resilience": "resilience.pytest_plugin"}
    assert pytest_plugin.__name__ == "resilience.pytest_plugin"
    assert set(pytest_plugin.__all__) == {"events", "fake_clock"}
