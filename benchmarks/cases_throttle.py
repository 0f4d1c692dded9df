"""The adaptive throttle's own cost per call: admitted (a healthy backend, p = 0: no random
draw) and rejected locally (a window full of refusals and a draw that always rejects; the
case includes raising and catching the ``ThrottledError``)."""

from __future__ import annotations

from ._harness import Case

_REJECTING = """
import resilience as rs

class _AlwaysReject:
    def random(self):
        return 0.0

throttle = rs.AdaptiveThrottle('t', on=Exception, window=600, random=_AlwaysReject())

def _refused():
    raise ConnectionError('503')

for _ in range(100):
    try:
        throttle.call(_refused)
    except (ConnectionError, rs.ThrottledError):
        pass
wrapped = throttle(bare)
ThrottledError = rs.ThrottledError
"""

_REJECT_STMT = """
try:
    wrapped()
except ThrottledError:
    pass
"""

CASES = [
    Case(
        "throttle/admit/sync",
        "resilience",
        "import resilience as rs\nwrapped = rs.AdaptiveThrottle('t')(bare)",
        "wrapped()",
        note="healthy backend: p = 0, no draw",
    ),
    Case(
        "throttle/admit/async",
        "resilience",
        "import resilience as rs\nwrapped = rs.AdaptiveThrottle('t')(abare)",
        "await wrapped()",
        True,
        note="healthy backend: p = 0, no draw",
    ),
    Case(
        "throttle/reject/sync",
        "resilience",
        _REJECTING,
        _REJECT_STMT,
        note="rejected locally: decision, draw, ThrottledError raised and caught",
    ),
]
