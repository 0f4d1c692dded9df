"""The JSON results file every benchmark script writes with ``--json FILE``.

One object: how the run was made (``format``, ``python``, ``machine``, ``cpus``, ``date``, the
``command`` that ran, the ``versions`` of resilience and of the libraries it was compared with,
and the script's own settings), then ``results``, one object per measured case, written one a
line so a re-run diffs case by case. ``NaN`` (a failed case) is written as ``null``.
``python -m benchmarks.report`` turns these files into the benchmark tables of the docs.

A file with ``"source"`` in its metadata was not measured by that command: it holds numbers
transcribed once from an older hand-written table, until the next real run overwrites it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

__all__ = ["command_line", "run_info", "versions", "write_results"]


def command_line() -> str:
    """The command of this run as one would type it: ``python -m benchmarks.x --flag ...``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = ["python", "-m", spec.name] if spec is not None else ["python", sys.argv[0]]
    if head[-1].endswith(".__main__"):
        head[-1] = head[-1][: -len(".__main__")]
    return shlex.join(head + sys.argv[1:])


def versions(*distributions: str) -> dict[str, str | None]:
    """resilience's version and each installed distribution's (``None``: not installed)."""
    import resilience

    found: dict[str, str | None] = {"resilience": getattr(resilience, "__version__", None)}
    for name in distributions:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def run_info(*, peers: Sequence[str] = (), **settings: Any) -> dict[str, Any]:
    """The metadata of a run on this machine (``peers``: the distributions it compares with,
    recorded in ``versions``), plus the script's ``settings``."""
    return {
        "format": 1,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "command": command_line(),
        "versions": versions(*peers),
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
