"""The benchmark tables of docs/benchmarks.md are generated from the checked-in JSON results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import report

DOC = report.DOC
RESULTS = report.RESULTS
MICRO = RESULTS / "micro.json"


def results_with(tmp_path: Path, micro: dict[str, object]) -> Path:
    """A copy of the checked-in results directory with ``micro.json`` replaced."""
    out = tmp_path / "results"
    out.mkdir()
    for file in RESULTS.glob("*.json"):
        shutil.copy(file, out / file.name)
    (out / "micro.json").write_text(json.dumps(micro), encoding="utf-8")
    return out


def test_docs_tables_match_the_checked_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = report.main(["--check", str(DOC)])
    assert rc == 0, (
        capsys.readouterr().out + "\nrun: python -m benchmarks.report --write " + str(DOC)
    )


def test_every_marker_in_the_docs_is_a_known_table() -> None:
    names = report._BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert {name for _, name, _, _ in names} == set(report.TABLES)


def test_a_hand_edited_table_fails_the_check_and_write_restores_it(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    shutil.copy(DOC, doc)
    text = doc.read_text(encoding="utf-8")
    body = text.split("<!-- bench:retry -->\n", 1)[1].split("<!-- /bench -->", 1)[0]
    row = body.splitlines()[2]  # the first data row: success path, sync
    edited = row.replace(" µs |", "9 µs |", 1)  # one number changed by hand
    assert edited != row
    doc.write_text(text.replace(row, edited), encoding="utf-8")
    assert report.main(["--check", str(doc)]) == 1
    assert report.main(["--write", str(doc)]) == 0
    assert doc.read_text(encoding="utf-8") == text
    assert report.main(["--check", str(doc)]) == 0


def test_the_tables_follow_the_json(tmp_path: Path) -> None:
    """Change one measured value: exactly that cell and its ratios change."""
    data = json.loads(MICRO.read_text(encoding="utf-8"))
    for entry in data["results"]:
        if entry["group"] == "timeout/async" and entry["name"] == "resilience":
            entry["overhead_median"] = 1e-6
        if entry["group"] == "timeout/async" and entry["name"] == "asyncio.timeout (raw)":
            entry["overhead_median"] = 2.5e-6
    table = report.render("timeout", report.Sources.load(results_with(tmp_path, data)))
    assert "| `rs.Timeout(5)` (one shared deadline timer per event loop) | 1.0 µs |" in table
    assert "| `asyncio.timeout(5)` | 2.5 µs (2.5×) |" in table


def test_a_case_missing_from_the_json_is_an_error(tmp_path: Path) -> None:
    data = json.loads(MICRO.read_text(encoding="utf-8"))
    data["results"] = [r for r in data["results"] if not r["group"].startswith("retry/")]
    results = results_with(tmp_path, data)
    assert report.main(["--check", str(DOC), "--results", str(results)]) == 2
    with pytest.raises(report.ReportError, match="retry/success/sync / resilience"):
        report.render("retry", report.Sources.load(results))


def test_a_failed_case_is_an_error(tmp_path: Path) -> None:
    data = json.loads(MICRO.read_text(encoding="utf-8"))
    for entry in data["results"]:
        if entry["group"] == "breaker/closed/sync" and entry["name"] == "pybreaker":
            entry["overhead_median"], entry["error"] = None, "ModuleNotFoundError: pybreaker"
    with pytest.raises(report.ReportError, match="ModuleNotFoundError"):
        report.render("breaker", report.Sources.load(results_with(tmp_path, data)))


def test_a_missing_results_file_names_the_command_that_writes_it(tmp_path: Path) -> None:
    with pytest.raises(report.ReportError, match=r"python -m benchmarks\.bench_grpc --json"):
        report.render("grpc", report.Sources.load(tmp_path))


def test_numbers_keep_three_significant_digits() -> None:
    assert [report._num(v) for v in (0.134, 5.34, 15.84, 192.4, 9.96, 99.96)] == [
        "0.13",
        "5.3",
        "15.8",
        "192",
        "10",
        "100",
    ]
    assert [report._ratio(v) for v in (0.64, 2.54, 126.4)] == ["0.6×", "2.5×", "126×"]


def test_the_benchmark_json_records_how_the_run_was_made(tmp_path: Path) -> None:
    from benchmarks.__main__ import to_json, write_json
    from benchmarks._harness import Result

    out = tmp_path / "sub" / "r.json"
    failed = Result("g", "n", float("nan"), 1e-6, 1e-7, [], "", "boom")
    doc = to_json([failed], repeats=3, quick=True)
    write_json(str(out), doc)
    loaded = json.loads(out.read_text(encoding="utf-8"))
    assert loaded["repeats"] == 3
    assert loaded["quick"] is True
    assert loaded["results"][0]["overhead_median"] is None  # NaN is not JSON
    assert report.Results.load(out).by_case[("g", "n")]["error"] == "boom"
