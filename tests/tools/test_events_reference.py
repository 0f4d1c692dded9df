"""The events reference of docs/telemetry.md is generated from resilience/events.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import resilience.events as events

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "events_reference", ROOT / "scripts" / "events_reference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_event_class_has_a_section() -> None:
    page = (ROOT / "docs" / "telemetry.md").read_text()
    classes = [
        name
        for name in events.__all__
        if isinstance(obj := getattr(events, name), type)
        and issubclass(obj, events.Event)
        and obj is not events.Event
    ]
    assert "CallCompleted" in classes
    missing = [name for name in classes if f"### `{name}`" not in page]
    assert missing == [], f"run scripts/events_reference.py: {missing} are not documented"


def test_the_reference_is_fresh() -> None:
    script = _script()
    page = script.PAGE.read_text()
    assert script.updated(page) == page, "stale: run python scripts/events_reference.py"


def test_the_reference_maps_events_to_instruments() -> None:
    text = _script().render()
    section = text.split("### `CallCompleted`")[1]
    assert "`resilience.call.duration`" in section
    assert "- span event: none" in section
    retry = text.split("### `RetryScheduled`")[1].split("### ")[0]
    assert "`resilience.retry.delay`" in retry
    assert "`resilience.attempt`" in retry
