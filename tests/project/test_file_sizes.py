"""Each module is a room you can read: at most 500 hand-written lines (generated sync twins, which
nobody edits, are not counted, but a module with them stays under 650 lines in all)."""

from __future__ import annotations

from pathlib import Path

from .twins_tool import twins

ROOT = Path(__file__).resolve().parents[2]
HAND_WRITTEN_MAX = 500
TOTAL_MAX = 650


def _sizes() -> dict[str, tuple[int, int]]:
    sizes: dict[str, tuple[int, int]] = {}
    for package in ("resilience", "interceptors"):
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            generated = sum(b.twin_end - b.twin_start for b in twins.find_blocks(lines, str(path)))
            sizes[path.relative_to(ROOT).as_posix()] = (len(lines) - generated, len(lines))
    return sizes


def test_no_module_has_more_than_500_hand_written_lines() -> None:
    sizes = _sizes()
    assert len(sizes) > 50  # the scan found the packages
    too_big = {m: s for m, s in sizes.items() if s[0] > HAND_WRITTEN_MAX or s[1] > TOTAL_MAX}
    assert too_big == {}, f"(hand-written, total) lines: {too_big}"


def test_the_count_leaves_out_generated_twins_only() -> None:
    hand, total = _sizes()["resilience/_retry.py"]
    assert 0 < hand < total  # _retry.py has a generated twin
