"""Retry: success path and failure path (3 attempts, zero wait), sync and async, vs peers."""

from __future__ import annotations

from ._harness import Case

_RS = "import resilience as rs\n"
_FAIL = """
class Boom(Exception):
    pass

def failing():
    raise Boom()

async def afailing():
    raise Boom()
"""
_CATCH_BASE = "try:\n    failing()\nexcept Boom:\n    pass"
_ACATCH_BASE = "try:\n    await afailing()\nexcept Boom:\n    pass"


def _success(group: str, is_async: bool) -> list[Case]:
    fn = "abare" if is_async else "bare"
    call = "await wrapped()" if is_async else "wrapped()"
    return [
        Case(
            group,
            "resilience",
            _RS + f"wrapped = rs.Retry(on=Exception, attempts=3)({fn})",
            call,
            is_async,
            note="Retry(on=Exception, attempts=3)",
        ),
        Case(
            group,
            "tenacity",
            "import tenacity\n"
            "wrapped = tenacity.retry(stop=tenacity.stop_after_attempt(3),"
            f" wait=tenacity.wait_exponential())({fn})",
            call,
            is_async,
        ),
        Case(
            group,
            "stamina",
            f"import stamina\nwrapped = stamina.retry(on=Exception, attempts=3)({fn})",
            call,
            is_async,
        ),
        Case(
            group,
            "backoff",
            "import backoff\n"
            f"wrapped = backoff.on_exception(backoff.expo, Exception, max_tries=3)({fn})",
            call,
            is_async,
        ),
    ]


def _failure(group: str, is_async: bool) -> list[Case]:
    fn = "afailing" if is_async else "failing"
    aw = "await " if is_async else ""
    stmt = f"try:\n    {aw}wrapped()\nexcept Boom:\n    pass"
    base = _ACATCH_BASE if is_async else _CATCH_BASE
    return [
        Case(
            group,
            "resilience",
            _RS + _FAIL + f"wrapped = rs.Retry(on=Boom, attempts=3,"
            f" backoff=rs.backoff.constant(0))({fn})",
            stmt,
            is_async,
            base,
            "3 attempts, zero wait, full call",
        ),
        Case(
            group,
            "tenacity",
            "import tenacity\n"
            + _FAIL
            + "wrapped = tenacity.retry(stop=tenacity.stop_after_attempt(3), reraise=True,"
            f" wait=tenacity.wait_none())({fn})",
            stmt,
            is_async,
            base,
        ),
        Case(
            group,
            "stamina (hooks off)",
            "import stamina\nstamina.instrumentation.set_on_retry_hooks([])\n"
            + _FAIL
            + f"wrapped = stamina.retry(on=Boom, attempts=3, wait_initial=0, wait_max=0,"
            f" wait_jitter=0)({fn})",
            stmt,
            is_async,
            base,
        ),
        Case(
            group,
            "backoff",
            "import backoff\n"
            + _FAIL
            + "wrapped = backoff.on_exception(backoff.constant, Boom, max_tries=3, interval=0,"
            f" jitter=None)({fn})",
            stmt,
            is_async,
            base,
        ),
    ]


CASES: list[Case] = [
    *_success("retry/success/sync", False),
    *_success("retry/success/async", True),
    *_failure("retry/failure/sync", False),
    *_failure("retry/failure/async", True),
    Case(
        "pipeline/success/sync",
        "resilience timeout+retry+fallback",
        _RS + "wrapped = rs.Pipeline(rs.Fallback(on=KeyError, value=None), rs.Timeout(5),"
        " rs.Retry(on=OSError))(bare)",
        "wrapped()",
    ),
    Case(
        "pipeline/success/async",
        "resilience timeout+retry+fallback",
        _RS + "wrapped = rs.Pipeline(rs.Fallback(on=KeyError, value=None), rs.Timeout(5),"
        " rs.Retry(on=OSError))(abare)",
        "await wrapped()",
        True,
    ),
    Case(
        "floor/sync",
        "functools.wraps pass-through",
        "import functools\ndef deco(f):\n    @functools.wraps(f)\n    def w(*a, **k):\n"
        "        return f(*a, **k)\n    return w\nwrapped = deco(bare)",
        "wrapped()",
    ),
]
