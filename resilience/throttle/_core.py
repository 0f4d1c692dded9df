"""The adaptive throttle's window: pure functions on a list of integers (private).

The state is ``[LAST, REQUESTS, ACCEPTS, r0, a0, r1, a1, ...]``: the index of the newest time
bucket (``now_us // bucket_us``), the window's totals, then a ring of ``buckets`` pairs
(requests, accepts). ``throttle.lua`` is the line-by-line Redis twin; the in-process policy and
:class:`resilience.MemoryStore` run these functions, so every store takes the same decision for
the same clock readings and random draws.

Example:
    >>> cfg = config(window_us=10_000_000, buckets=5, k=2.0, cap=1.0)
    >>> st = fresh(cfg, 0)
    >>> decide(st, cfg, 0, 0, 0)  # an empty window admits
    0.0
    >>> [decide(st, cfg, 1, done=1, accepted=0) for _ in range(2)]  # refused: p grows
    [0.5, 0.6666666666666666]
    >>> reject(st, cfg, 2)  # a rejected request counts too
    >>> decide(st, cfg, 3, done=1, accepted=1)  # 4 requests, 1 accepted: (4 - 2) / 5
    0.4
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Config", "config", "decide", "fresh", "reject", "retry_us", "roll_ring", "snapshot"]

LAST, REQ, ACC, RING = 0, 1, 2, 3


class Config(NamedTuple):
    """The window's shape and the rejection formula's constants."""

    buckets: int
    bucket_us: int
    k: float
    cap: float

    @property
    def window_us(self) -> int:
        """The effective window: ``buckets`` whole buckets."""
        return self.buckets * self.bucket_us


def config(*, window_us: int, buckets: int, k: float, cap: float) -> Config:
    """The configuration of a ``window_us`` window cut into ``buckets`` buckets (>= 1 µs each)."""
    return Config(buckets, max(1, window_us // buckets), k, cap)


def fresh(cfg: Config, now_us: int) -> list[int]:
    """An empty window whose newest bucket is the one of ``now_us``."""
    return [now_us // cfg.bucket_us, 0, 0] + [0] * (2 * cfg.buckets)


def roll_ring(st: list[int], buckets: int, e: int) -> None:
    """Advance a ring of count pairs to bucket ``e``: the buckets that left the window are
    emptied and taken off the two totals. The layout, shared with the retry budget's window:
    ``[last bucket, total a, total b, a0, b0, a1, b1, ...]``; a clock behind the stored one keeps
    the last bucket."""
    last = st[LAST]
    if e <= last:
        return
    if e - last >= buckets:
        for i in range(1, len(st)):
            st[i] = 0
    else:
        for b in range(last + 1, e + 1):
            i = RING + 2 * (b % buckets)
            st[REQ] -= st[i]
            st[ACC] -= st[i + 1]
            st[i] = st[i + 1] = 0
    st[LAST] = e


def _flush(st: list[int], cfg: Config, now_us: int, done: int, accepted: int) -> int:
    """Roll to ``now_us`` and count ``done`` finished requests, ``accepted`` of them accepted;
    the index of the bucket written (the newest: never an older one another caller rolled past).
    """
    e = now_us // cfg.bucket_us
    roll_ring(st, cfg.buckets, e)
    i = RING + 2 * (st[LAST] % cfg.buckets)
    if done:  # accepted <= done
        st[i] += done
        st[REQ] += done
        st[i + 1] += accepted
        st[ACC] += accepted
    return i


def decide(st: list[int], cfg: Config, now_us: int, done: int, accepted: int) -> float:
    """Count ``done`` finished requests (``accepted`` of them accepted), then return the
    rejection probability of a new request: ``(requests - k * accepts) / (requests + 1)``, at
    most ``cap`` (``<= 0``: admit; else reject when a uniform draw in [0, 1) is below it).

    An admitted request is counted when it finishes (reported with a later operation as
    ``done``), so calls still in flight never raise the probability (a burst of concurrent
    first calls is not throttled); a rejected one at once, by :func:`reject`.
    :func:`_flush` inlined: this is the hot path of every call.
    """
    nb, bus, k, cap = cfg
    e = now_us // bus
    if e > st[0]:
        roll_ring(st, cfg.buckets, e)
    if done:  # accepted <= done
        i = 3 + 2 * (st[0] % nb)
        st[i] += done
        st[1] += done
        st[i + 1] += accepted
        st[2] += accepted
    req = st[1]
    p = (req - k * st[2]) / (req + 1)
    return cap if p > cap else p


def reject(st: list[int], cfg: Config, now_us: int) -> None:
    """Count a request rejected at ``now_us`` (a rejected request counts, per the book)."""
    _flush(st, cfg, now_us, 1, 0)


def snapshot(st: list[int], cfg: Config, now_us: int, done: int, accepted: int) -> tuple[int, int]:
    """Count ``done`` finished requests, ``accepted`` of them accepted; ``(requests, accepts)``
    in the window now."""
    _flush(st, cfg, now_us, done, accepted)
    return st[REQ], st[ACC]


def retry_us(cfg: Config, now_us: int) -> int:
    """Microseconds until the oldest bucket leaves the window (the next bucket boundary)."""
    return cfg.bucket_us - now_us % cfg.bucket_us
