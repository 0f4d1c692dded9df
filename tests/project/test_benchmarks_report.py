"""The benchmark tables of the docs are generated from the checked-in JSON results."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report

DOC = report.DOC
RESULTS = report.RESULTS
MICRO = RESULTS / "micro.json"


DOCS = report.DOCS
#: generated block -> the page it is on
PAGE = {
    name: doc
    for doc in DOCS
    for _, name, _, _ in report._BLOCK.findall(doc.read_text(encoding="utf-8"))
}
#: generated block -> the results files it reads (the provenance block reads them all)
READS = {
    table: [name for name, source in report.SOURCES.items() if table in source.tables]
    for table in report.TABLES
    if table != "provenance"
}
IDENTITY = {"group", "name", "config", "run"}


def results_with(tmp_path: Path, micro: dict[str, object], file: str = "micro.json") -> Path:
    """A copy of the checked-in results directory with ``file`` replaced."""
    out = tmp_path / "results"
    out.mkdir(exist_ok=True)
    for path in RESULTS.glob("*.json"):
        shutil.copy(path, out / path.name)
    (out / file).write_text(json.dumps(micro), encoding="utf-8")
    return out


def load(file: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RESULTS / file).read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_docs_tables_match_the_checked_in_json(
    doc: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = report.main(["--check", str(doc)])
    assert rc == 0, (
        capsys.readouterr().out + "\nrun: python -m benchmarks.report --write " + str(doc)
    )


def test_every_marker_in_the_docs_is_a_known_table_and_every_table_is_used_once() -> None:
    found = [
        name
        for doc in DOCS
        for _, name, _, _ in report._BLOCK.findall(doc.read_text(encoding="utf-8"))
    ]
    assert sorted(found) == sorted(report.TABLES)


def test_every_results_file_is_checked_in_and_every_table_has_one() -> None:
    for source in report.SOURCES.values():
        assert (RESULTS / source.file).exists(), f"run `{source.command}`"
        assert set(source.tables) <= set(report.TABLES)
    assert all(READS.values()), READS


@pytest.mark.parametrize("table", sorted(report.TABLES))
def test_every_table_edited_by_hand_fails_the_check(table: str, tmp_path: Path) -> None:
    doc = tmp_path / PAGE[table].name
    shutil.copy(PAGE[table], doc)
    text = doc.read_text(encoding="utf-8")
    head = f"<!-- bench:{table} -->\n"
    body = text.split(head, 1)[1].split("<!-- /bench -->", 1)[0]
    row = body.rstrip("\n").splitlines()[-1]  # the last row of the table
    edited = re.sub(r"\d", lambda m: str((int(m.group()) + 1) % 10), row, count=1)
    assert edited != row
    doc.write_text(text.replace(head + body, head + body.replace(row, edited)), encoding="utf-8")
    assert report.main(["--check", str(doc)]) == 1
    assert report.main(["--write", str(doc)]) == 0
    assert doc.read_text(encoding="utf-8") == text


@pytest.mark.parametrize(
    ("table", "source"), [(t, s) for t, names in sorted(READS.items()) for s in names]
)
def test_a_field_missing_from_the_json_is_a_clear_error(
    table: str, source: str, tmp_path: Path
) -> None:
    """Every row stripped to its identity: the error names the file, the case and the field."""
    file = report.SOURCES[source].file
    data = load(file)
    data["results"] = [{k: v for k, v in r.items() if k in IDENTITY} for r in data["results"]]
    results = results_with(tmp_path, data, file)
    with pytest.raises(report.ReportError, match=rf"^{re.escape(file)}: .* has no field '\w+'"):
        report.render(table, report.Sources.load(results))
    assert report.main(["--check", str(PAGE[table]), "--results", str(results)]) == 2


@pytest.mark.parametrize(
    ("table", "source"), [(t, s) for t, names in sorted(READS.items()) for s in names]
)
def test_a_results_file_without_rows_is_an_error(table: str, source: str, tmp_path: Path) -> None:
    file = report.SOURCES[source].file
    data = load(file)
    data["results"] = []
    with pytest.raises(report.ReportError, match=rf"^{re.escape(file)}: no result for"):
        report.render(table, report.Sources.load(results_with(tmp_path, data, file)))


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


@pytest.mark.parametrize("table", sorted(READS))
def test_a_missing_results_file_names_the_command_that_writes_it(
    table: str, tmp_path: Path
) -> None:
    required = [s for s in READS[table] if s != "instr"]  # instr.json is optional
    command = re.escape(report.SOURCES[required[0]].command)
    with pytest.raises(report.ReportError, match=command):
        report.render(table, report.Sources.load(tmp_path))


def test_a_transcribed_file_says_so_in_the_provenance(tmp_path: Path) -> None:
    data = load("grpc.json")
    data.update(source="transcribed from the previous hand-written table", date="2026-01-02")
    table = report.render(
        "provenance", report.Sources.load(results_with(tmp_path, data, "grpc.json"))
    )
    assert "| 2026-01-02: transcribed from the previous hand-written table |" in table


def test_the_stall_table_gives_ranges_over_runs(tmp_path: Path) -> None:
    data = load("redis_stall.json")
    rows = [r for r in data["results"] if r["name"] == "stall"][:1]
    first, second = dict(rows[0], run=1), dict(rows[0], run=2)
    first.update(fail_fast_after_ms=600, recovery_ms=8.04, waited_over_50_ms=30)
    second.update(fail_fast_after_ms=800, recovery_ms=55.2, waited_over_50_ms=30)
    data["results"] = [r for r in data["results"] if r["name"] != "stall"] + [first, second]
    table = report.render(
        "redis-stall", report.Sources.load(results_with(tmp_path, data, "redis_stall.json"))
    )
    row = next(line for line in table.splitlines() if line.startswith("| **stall**"))
    cells = [c.strip() for c in row.split("|")[2:-1]]
    assert cells[0] == "600–800 ms"
    assert cells[2] == "30"
    assert cells[4] == "8.0–55.2 ms"


def test_the_makefile_runs_the_commands_of_the_sources() -> None:
    makefile = (report.ROOT / "Makefile").read_text(encoding="utf-8")
    for source in report.SOURCES.values():
        assert source.command.replace("python", "$(BIN)/python", 1) in makefile, source.command
    assert (
        "benchmarks.report --write " + " ".join(str(d.relative_to(report.ROOT)) for d in DOCS)
        in makefile
    )


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
    assert loaded["command"].startswith("python ")
    assert {"resilience", "tenacity"} <= set(loaded["versions"])
    assert loaded["results"][0]["overhead_median"] is None  # NaN is not JSON
    assert report.Results.load(out).by_case[("g", "n")]["error"] == "boom"
