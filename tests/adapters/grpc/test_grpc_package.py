"""gRPC adapter as a package: configuration errors, lazy grpc import, doctests, the docs' status
table, OpenTelemetry events.
"""

from __future__ import annotations

import doctest

import pytest

import resilience as rs
from interceptors.grpc import (
    ResilienceClientInterceptor,
    grpc_retry,
)
from resilience.testing import FakeClock

from ...grpc_fixtures import UU, Code, Fail, Script
from .grpc_support import Client, retry


# -- tracing -----------------------------------------------------------------------------------
def test_events_reach_opentelemetry_with_the_rpc_method(
    script: Script, port: int, clock: FakeClock
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel = rs.instrumentation.OpenTelemetry(tracer_provider=provider)
    script.plan = [Fail(Code.UNAVAILABLE), None]
    pipeline = rs.Pipeline(retry(clock), name="billing", listeners=[otel])
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("rpc"):  # stands for the official instrumentation's span
        assert Client("sync").run(port, pipeline, "unary_unary") == b"re:a"
    (span,) = exporter.get_finished_spans()  # no span of our own
    (event,) = span.events
    assert event.name == "resilience.retry"
    assert event.attributes is not None
    assert event.attributes["resilience.operation"] == UU
    assert event.attributes["resilience.pipeline"] == "billing"


# -- configuration and docs --------------------------------------------------------------------
def test_configuration_errors() -> None:
    with pytest.raises(rs.ConfigurationError):
        ResilienceClientInterceptor(pipeline="retry")  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigurationError):
        grpc_retry(codes=[])
    with pytest.raises(rs.ConfigurationError):
        grpc_retry(codes=[Code.OK])
    assert grpc_retry(attempts=9).attempts == 5


def test_interceptors_package_does_not_import_grpc() -> None:
    import subprocess
    import sys

    code = "import sys, interceptors; print('grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_doctests() -> None:
    import interceptors.grpc as pkg
    from interceptors.grpc import (
        _aio_client,
        _aio_server,
        _client,
        _common,
        _server,
        _status,
    )

    for module in (pkg, _status, _common, _client, _aio_client, _server, _aio_server):
        result = doctest.testmod(module)
        assert result.failed == 0, module.__name__


def test_the_status_table_in_the_docs_is_the_code_mapping() -> None:
    """docs/adapters/grpc.md's server table says what status_for answers (e.g. key reuse)."""
    import re
    from pathlib import Path

    from interceptors.grpc import status_for

    doc = (Path(__file__).resolve().parents[3] / "docs/adapters/grpc.md").read_text()
    section = doc[doc.index("## Server") :]
    rows = [line for line in section.splitlines() if re.match(r"\| `\w+Error`", line)]
    checked = {}
    for row in rows:
        errors_cell, status_cell, trailer_cell = row.split("|")[1:4]
        (status,) = re.findall(r"`([A-Z_]+)`", status_cell)
        for name in re.findall(r"`(\w+Error)`", errors_cell):
            cls = getattr(rs, name)
            exc = cls.__new__(cls)
            exc.retry_after = 1.0
            mapped = status_for(exc)
            assert mapped is not None, name
            assert mapped[0].name == status, name
            assert bool(mapped[1]) == ("pushback" in trailer_cell), name
            checked[name] = status
    assert checked["IdempotencyKeyReusedError"] == "FAILED_PRECONDITION"
    assert {"RateLimitedError", "CircuitOpenError", "StoreError"} <= set(checked)
