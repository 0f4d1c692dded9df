"""Subprocess entry: read a case from stdin, measure it, print the result as JSON."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from ._harness import Case, measure


def main() -> None:
    spec = json.loads(sys.stdin.read())
    case = Case(**spec["case"])
    result = measure(case, repeats=spec["repeats"], target=spec["target"], warmup=spec["warmup"])
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
