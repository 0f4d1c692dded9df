"""Circuit breakers, closed-state success path, sync and async, vs peers.

Peers are configured alike (five failures, 60 s open): pybreaker ``CircuitBreaker(fail_max=5,
reset_timeout=60)`` (sync only: its async path needs Tornado), circuitbreaker ``circuit(5, 60)``,
aiobreaker ``fail_max=5`` / 60 s, purgatory in-memory factory (threshold 5, ttl 60). A floor
case shows what a decorator with one ``threading.Lock`` acquisition and one clock read costs.
"""

from __future__ import annotations

from ._harness import Case

_FLOOR = """
import threading, time
_lock = threading.Lock()
_mono = time.monotonic
def wrapped():
    r = bare()
    with _lock:
        _mono()
    return r
"""


def _cases(is_async: bool) -> list[Case]:
    mode = "async" if is_async else "sync"
    group = f"breaker/closed/{mode}"
    fn = "abare" if is_async else "bare"
    call = "await wrapped()" if is_async else "wrapped()"
    cases = [
        Case(
            group,
            "resilience",
            f"import resilience as rs\nwrapped = rs.CircuitBreaker('b', failure_ratio=0.5)({fn})",
            call,
            is_async,
            note="failure_ratio=0.5, 60 s window / 10 buckets",
        ),
        Case(
            group,
            "resilience+slow",
            f"import resilience as rs\n"
            f"wrapped = rs.CircuitBreaker('b', failure_ratio=0.5, slow_call_ratio=0.5,"
            f" slow_call_duration=1.0)({fn})",
            call,
            is_async,
            note="+ slow_call_ratio (two clock reads, general path)",
        ),
        Case(
            group,
            "resilience+consecutive",
            f"import resilience as rs\n"
            f"wrapped = rs.CircuitBreaker('b', consecutive_failures=5)({fn})",
            call,
            is_async,
            note="consecutive_failures=5 (pybreaker's fail_max=5)",
        ),
        Case(
            group,
            "circuitbreaker",
            f"import circuitbreaker\nwrapped = circuitbreaker.circuit(5, 60)({fn})",
            call,
            is_async,
        ),
        Case(
            group,
            "aiobreaker",
            "from datetime import timedelta\nimport aiobreaker\n"
            "wrapped = aiobreaker.CircuitBreaker(fail_max=5,"
            f" timeout_duration=timedelta(seconds=60))({fn})",
            call,
            is_async,
        ),
        Case(
            group,
            "purgatory",
            "import purgatory\n"
            f"f = purgatory.{'Async' if is_async else 'Sync'}CircuitBreakerFactory("
            "default_threshold=5, default_ttl=60)\n"
            f"wrapped = f('b')({fn})",
            call,
            is_async,
        ),
    ]
    if not is_async:
        cases += [
            Case(
                group,
                "pybreaker",
                "import pybreaker\n"
                "wrapped = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)(bare)",
                call,
            ),
            Case(
                group,
                "interop.PyBreaker",
                "import pybreaker\nfrom resilience.interop.pybreaker import PyBreaker\n"
                "wrapped = PyBreaker(pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60))(bare)",
                call,
                note="pybreaker through resilience.interop (calling(), no lock held)",
            ),
            Case(group, "floor: Lock + monotonic", _FLOOR, call, note="not a breaker"),
        ]
    return cases


CASES: list[Case] = _cases(False) + _cases(True)
