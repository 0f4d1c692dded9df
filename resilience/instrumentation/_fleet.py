"""A fleet-wide view through Redis: each process publishes its :class:`Live` snapshot with a TTL
(:meth:`Live.publish`), a :class:`Fleet` reads and merges the fresh ones.

Keys (one hash slot, so Redis Cluster works): ``<prefix>:{dashboard}:<instance>`` (the JSON
snapshot, expiring after ``ttl``) and the index ``<prefix>:{dashboard}`` (a sorted set of
instances scored by publication time).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigurationError
from ._live import TRANSITIONS, Live

__all__ = ["MAX_INSTANCES", "Fleet", "Publisher", "merge"]

_log = logging.getLogger("resilience")
#: The most instances a fleet view reads (the most recently published).
MAX_INSTANCES = 64
_STATE_RANK = {"open": 3, "half_open": 2, "closed": 1}


def _index(prefix: str) -> str:
    return f"{prefix}:{{dashboard}}"


class Publisher:
    """The background thread of :meth:`Live.publish`; :meth:`stop` ends it."""

    def __init__(self, live: Live, store: Any, every: float, ttl: float) -> None:
        if every <= 0 or ttl <= every:
            raise ConfigurationError(f"need 0 < every < ttl, got every={every!r}, ttl={ttl!r}")
        self._live, self._store, self._every, self._ttl = live, store, every, ttl
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resilience-live", daemon=True)
        self._thread.start()

    def publish_once(self) -> None:
        """Write the current snapshot now (the thread does it every ``every`` seconds)."""
        client = self._store.sync_client()
        snap = self._live.snapshot()
        index = _index(self._store.prefix)
        pipe = client.pipeline(transaction=False)
        pipe.set(f"{index}:{self._live.instance}", json.dumps(snap), px=int(self._ttl * 1000))
        pipe.zadd(index, {self._live.instance: snap["time"]})
        pipe.zremrangebyscore(index, "-inf", snap["time"] - self._ttl)
        pipe.pexpire(index, int(self._ttl * 1000))
        pipe.execute()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self._every):
            try:
                self.publish_once()
                failing = False
            except Exception:  # Redis down: the dashboard shows this instance as gone
                if not failing:
                    _log.warning("resilience: could not publish the live snapshot", exc_info=True)
                failing = True

    def stop(self) -> None:
        """Stop publishing (the last snapshot expires after its TTL)."""
        self._stop.set()
        self._thread.join(timeout=5)


class Fleet:
    """The merged snapshot of every instance publishing to ``store`` (a
    :class:`~resilience.RedisStore`): give it to :class:`interceptors.asgi.Dashboard`.

    :meth:`snapshot` does blocking Redis I/O (the dashboard runs it in a thread).
    """

    blocking = True

    def __init__(self, store: Any) -> None:
        self._store = store

    def snapshot(self) -> dict[str, Any]:
        """The fleet's merged snapshot (see :func:`merge`)."""
        client = self._store.sync_client()
        index = _index(self._store.prefix)
        names = client.zrevrange(index, 0, MAX_INSTANCES - 1)
        raw = client.mget([f"{index}:{_text(n)}" for n in names]) if names else []
        snaps = []
        for value in raw:
            if value is None:
                continue
            try:
                snap = json.loads(value)
            except ValueError:
                continue
            if _valid(snap):
                snaps.append(snap)
        return merge(snaps)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _shifted(series: Sequence[Any], shift: int, window: int, fill: Any = 0) -> list[Any]:
    # the series as seen `shift` seconds later (older entries fall off the front)
    if shift <= 0:
        return list(series[-window:])
    return [*series[shift:], *([fill] * min(shift, window))][-window:]


def _top(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _valid(snap: Any) -> bool:
    # what Live.snapshot writes; anything else in the store (an older or foreign writer, a
    # corrupted value) is left out rather than breaking the dashboard
    if not isinstance(snap, dict) or snap.get("version") != 1:
        return False
    if not isinstance(snap.get("time"), int | float) or not isinstance(snap.get("window"), int):
        return False
    policies, instances = snap.get("policies"), snap.get("instances")
    if not isinstance(policies, list) or not isinstance(instances, list) or not instances:
        return False
    return all(
        isinstance(p, dict)
        and isinstance(p.get("name"), str)
        and isinstance(p.get("totals"), dict)
        and isinstance(p.get("rates"), dict)
        and all(isinstance(v, int) for v in p["totals"].values())
        and all(isinstance(v, list) for v in p["rates"].values())
        and isinstance(p.get("transitions", []), list)
        for p in policies
    )


def merge(snapshots: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One snapshot from several instances' snapshots: counts summed per policy name (aligned
    on wall-clock seconds), a breaker's state that of its latest transition (else the worst
    of the instances'), latency percentiles the highest of the instances' (an upper bound).

    Example:
        >>> a = {"time": 10.0, "window": 2, "instances": ["a"], "dropped": 0, "policies": [
        ...     {"name": "db", "kind": "retry", "state": None, "pipelines": [], "transitions": [],
        ...      "totals": {"retries": 3}, "rates": {"retries": [1, 2]}, "latency": None}]}
        >>> b = {**a, "instances": ["b"]}
        >>> m = merge([a, b])
        >>> m["instances"], m["policies"][0]["totals"], m["policies"][0]["rates"]
        (['a', 'b'], {'retries': 6}, {'retries': [2, 4]})
    """
    latest = max((float(s["time"]) for s in snapshots), default=time.time())
    window = max((int(s["window"]) for s in snapshots), default=0)
    merged: dict[str, dict[str, Any]] = {}
    for snap in snapshots:
        shift = int(latest) - int(float(snap["time"]))
        instance = str(snap["instances"][0])
        for p in snap["policies"]:
            m = merged.get(p["name"])
            if m is None:
                m = merged[p["name"]] = {
                    **p,
                    "totals": {},
                    "rates": {},
                    "transitions": [],
                    "instances": [],
                    "latency": None,
                    "latency_p99": None,
                }
            m["instances"].append({"instance": instance, "state": p.get("state")})
            streak = p.get("consecutive_failures")
            if streak is not None and streak > (m.get("consecutive_failures") or 0):
                m["consecutive_failures"] = streak  # the longest streak of the instances
            for k, v in p["totals"].items():
                m["totals"][k] = m["totals"].get(k, 0) + v
            for k, series in p["rates"].items():
                series = _shifted(series, shift, window)
                have = m["rates"].get(k) or [0] * len(series)
                m["rates"][k] = [x + y for x, y in zip(have, series, strict=False)]
            m["transitions"].extend({**t, "instance": instance} for t in p.get("transitions", []))
            if p.get("latency"):
                have = m["latency"] or {}
                m["latency"] = {k: max(v, have.get(k, 0)) for k, v in p["latency"].items()}
                m["latency"]["count"] = have.get("count", 0) + p["latency"].get("count", 0)
            if p.get("latency_p99"):
                ours = _shifted(p["latency_p99"], shift, window, None)
                have = m["latency_p99"] or [None] * len(ours)
                m["latency_p99"] = [_top(x, y) for x, y in zip(have, ours, strict=False)]
    for m in merged.values():
        m["transitions"] = sorted(m["transitions"], key=lambda t: t["at"])[-TRANSITIONS:]
        states = [i["state"] for i in m["instances"] if i["state"]]
        if m["transitions"]:
            m["state"] = m["transitions"][-1]["to"]
        elif states:
            m["state"] = max(states, key=lambda s: _STATE_RANK.get(s, 0))
    return {
        "version": 1,
        "time": latest,
        "window": window,
        "instances": [str(s["instances"][0]) for s in snapshots],
        "policies": list(merged.values()),
        "dropped": sum(int(s.get("dropped", 0)) for s in snapshots),
    }
