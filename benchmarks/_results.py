"""The JSON results file every benchmark script writes with ``--json FILE``.

One object: how the run was made (``format``, ``python``, ``machine``, ``cpus``, ``date`` and
the script's own settings), then ``results``, one object per measured case, written one a line
so a re-run diffs case by case. ``NaN`` (a failed case) is written as ``null``.
``python -m benchmarks.report`` turns these files into the tables of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["run_info", "write_results"]


def run_info(**settings: Any) -> dict[str, Any]:
    """The metadata of a run on this machine, plus the script's ``settings``."""
    return {
        "format": 1,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        **settings,
    }


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def write_results(path: str, info: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> None:
    """Write ``info`` and ``results`` to ``path`` (creating its directory)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    rows = ",\n".join(
        "  " + json.dumps({k: _clean(v) for k, v in r.items()}, ensure_ascii=False) for r in results
    )
    head = json.dumps(dict(info), ensure_ascii=False)
    with open(path, "w", encoding="utf-8") as f:
        f.write(head[:-1] + ', "results": [\n' + rows + "\n]}\n")
