"""Chaos injection as ordinary policies: :class:`Fault`, :class:`Latency`, :class:`Outcome`,
:class:`Behavior`.

Each one injects into a ``rate`` share of the calls it wraps, and composes like any policy: a
decorator, ``.call``/``.acall``, a :class:`resilience.Pipeline` stage, or the ``pipeline=`` of
an adapter (the httpx transports, the gRPC interceptors, ``ResilienceMiddleware``). Put it
*inside* the policies under test (``rs.Pipeline(rs.Retry(...), rs.chaos.Fault(...))``) so
they see the injected failures as real ones.

``enabled=`` is the operator's switch: ``False`` removes the policy entirely (wrapping returns
the function itself), a zero-argument callable is asked on every call. A seeded ``random=``
and a :class:`~resilience.testing.FakeClock` make a chaos run repeatable.

Example:
    >>> import random, resilience as rs
    >>> flaky = rs.chaos.Fault(rate=0.5, error=ConnectionError, random=random.Random(7))
    >>> retry = rs.Retry(on=ConnectionError, attempts=5, backoff=rs.backoff.constant(0))
    >>> rs.Pipeline(retry, flaky).call(lambda: "ok")
    'ok'
"""

from __future__ import annotations

from ._base import ChaosPolicy, Switch
from ._policies import Behavior, ErrorSpec, Fault, Latency, Outcome

__all__ = ["Behavior", "ChaosPolicy", "ErrorSpec", "Fault", "Latency", "Outcome", "Switch"]
