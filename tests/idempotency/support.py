"""Helpers shared by the Idempotent policy tests: a keyed policy on the fake clock and a counting
function.
"""

from __future__ import annotations

from typing import Any

import resilience as rs
from resilience._policy import function_identity
from resilience.idempotency import (
    args_fingerprint,
)
from resilience.testing import FakeClock

from ..conftest import Runner


def by_first_arg(*args: Any, **kwargs: Any) -> str:
    return str(args[0])


def policy(clock: FakeClock, **kw: Any) -> rs.Idempotent:
    kw.setdefault("key", by_first_arg)
    return rs.Idempotent(clock=clock, **kw)


class Counter:
    """A function (sync or async per runner) that counts executions and returns a dict."""

    def __init__(self, runner: Runner, outcome: Any = None) -> None:
        self.n = 0
        self.outcome = outcome

        def body() -> Any:
            self.n += 1
            if isinstance(self.outcome, BaseException):
                raise self.outcome
            return {"run": self.n} if self.outcome is None else self.outcome

        self.fn = runner.wrap(body)


def claim_as_other(p: rs.Idempotent, c: Counter, key: str, *args: Any) -> Any:
    """Claim the record a call ``c.fn(*args)`` with ``key`` would use, as another owner."""
    rkey = p.records.key(function_identity(c.fn), key)
    return p.records.try_claim(rkey, args_fingerprint(args, {}))
