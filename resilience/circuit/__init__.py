"""Circuit breakers: error ratio, error count and slow-call ratio over a sliding time window,
or consecutive failures.

A breaker is CLOSED (calls run and their outcomes are recorded), OPEN (calls are refused with
:class:`resilience.CircuitOpenError` without running) or HALF_OPEN (a fixed number of probe
calls run; their outcomes decide what comes next).

Pinned rules (the state machine itself is the pure core, ``_core.py``, and its Lua twin
``breaker.lua``):

* **Window.** ``window`` seconds split into ``buckets`` equal buckets (default 10). A call counts
  from the moment its outcome is recorded until its bucket is ``buckets`` buckets old: between
  ``window - window/buckets`` and ``window`` seconds.
* **Thresholds.** Nothing trips while the window holds fewer than ``min_calls`` calls. Then the
  breaker opens when ``failures / calls >= failure_ratio``, ``failures >= failure_count`` or
  ``slow / calls >= slow_call_ratio`` (any configured one). A call is slow when its duration is
  strictly greater than ``slow_call_duration``, whether it succeeded or failed.
* **Streak.** With ``consecutive_failures`` (instead of ``failure_ratio`` / ``failure_count``)
  the breaker opens on that many failures in a row, however far apart; any success ends the
  streak (an ignored exception neither ends nor extends it), and closing starts a new one.
* **Half-open.** After ``open_for`` seconds exactly ``half_open_calls`` probes are admitted
  (other callers are refused). A probe that fails (or is slow, when ``slow_call_ratio`` is set)
  reopens the breaker at once; when every probe has succeeded it closes, with an empty window.
* **Never stuck.** A probe cancelled or ending with an ignored exception gives its permit back;
  probes that never report are bounded by ``half_open_timeout``: once it has passed since the
  first probe was admitted, the breaker reopens (and later admits fresh probes).
* **Generations.** Every transition starts a new generation and a permit remembers the one it
  was granted in. Outcomes of calls admitted in an older generation (e.g. started while CLOSED,
  finished after the breaker opened) are ignored; they are counted as ``stale``.
* **What counts.** An exception matching ``on`` (default: any :class:`Exception`) or a result
  matching ``on_result`` is a failure; any other exception (and ``CancelledError``,
  ``KeyboardInterrupt``...) records nothing and releases the permit.
* **Our own refusals do not count.** A :class:`resilience.RejectedError` raised by a policy
  *inside* the breaker's composition (an inner rate limiter, bulkhead, adaptive concurrency or
  breaker, in the same :class:`resilience.Pipeline` or stacked on the same function) never
  reached the dependency: it records nothing (neither failure nor success, nor slow) and
  releases the permit, like an ignored exception. A ``RejectedError`` raised by the protected
  function itself (e.g. a client library's refusal) is an ordinary exception, matched against
  ``on``. ``count_rejections=True`` counts inner refusals too (matched against ``on``).

Layout: ``_options.py`` (parameters and validation), ``_core.py`` (the pure state machine),
``_store.py`` + ``breaker.lua`` (the store operations), ``_local.py`` (the in-process fast
path), ``_shared.py`` (a breaker in a store), ``_breaker.py`` (:class:`CircuitBreaker`).

Example:
    >>> from resilience.circuit import CircuitBreaker, CircuitState
    >>> CircuitBreaker("db", failure_count=3).state is CircuitState.CLOSED
    True
"""

from ._breaker import CircuitBreaker
from ._metrics import CircuitMetrics, CircuitState

__all__ = ["CircuitBreaker", "CircuitMetrics", "CircuitState"]
