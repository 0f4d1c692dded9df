"""Rate limiting, bulkhead and adaptive concurrency: in-memory, vs peers.

- ``ratelimit/never/*``: limiters that never reject (10⁹/s; ours at its maximum of 10⁶/s with
  a burst of 10⁹); a guarded call ``if check():
  bare()`` (or the decorated function), so the overhead is the cost of the check. The
  ``2 windows`` rows add a daily window (``limits=[...]``): every check decides both.
- ``ratelimit/saturated/*``: limiters at 1 per hour, drained in setup: every check rejects.
"""

from __future__ import annotations

from ._harness import Case

_RS = "import resilience as rs\n"
_BIG = 10**9
_RS_NEVER = "lim = rs.RateLimiter('api', rate=10**6, burst=10**9)\n"  # 10**6/s: the maximum
_RS_TWO = (  # two windows that never reject: 10**6/s and 10**9 a day
    "lim = rs.RateLimiter('api', limits=[rs.Limit(10**6, burst=10**9),"
    " rs.Limit(10**9, per=86_400, burst=10**9)])\n"
)
_LIMITS = (
    "from limits import RateLimitItemPerSecond, RateLimitItemPerHour, storage, strategies\n"
    "st = storage.MemoryStorage()\n"
)


def _never_sync() -> list[Case]:
    g = "ratelimit/never/sync"
    rl = _RS + _RS_NEVER
    return [
        Case(g, "resilience decorator", rl + "wrapped = lim(bare)", "wrapped()"),
        Case(g, "resilience try_acquire()", rl, "if lim.try_acquire().allowed:\n    bare()"),
        Case(
            g,
            "resilience try_acquire(key)",
            rl,
            "if lim.try_acquire('user-1').allowed:\n    bare()",
        ),
        Case(
            g,
            "resilience decorator, 2 windows",
            _RS + _RS_TWO + "wrapped = lim(bare)",
            "wrapped()",
            note="limits=[per second, per day]",
        ),
        Case(
            g,
            "resilience try_acquire(), 2 windows",
            _RS + _RS_TWO,
            "if lim.try_acquire().allowed:\n    bare()",
            note="limits=[per second, per day]",
        ),
        Case(
            g,
            "token-bucket",
            "import token_bucket\n"
            f"lim = token_bucket.Limiter(rate={_BIG}, capacity={_BIG},"
            " storage=token_bucket.MemoryStorage())",
            "if lim.consume(b'k'):\n    bare()",
            note="not thread-safe",
        ),
        Case(
            g,
            "limits fixed",
            _LIMITS + f"lim = strategies.FixedWindowRateLimiter(st)\nitem = "
            f"RateLimitItemPerSecond({_BIG})",
            "if lim.hit(item):\n    bare()",
        ),
        Case(
            g,
            "limits moving",
            _LIMITS + f"lim = strategies.MovingWindowRateLimiter(st)\nitem = "
            f"RateLimitItemPerSecond({_BIG})",
            "if lim.hit(item):\n    bare()",
        ),
        Case(
            g,
            "limits sliding",
            _LIMITS + f"lim = strategies.SlidingWindowCounterRateLimiter(st)\nitem = "
            f"RateLimitItemPerSecond({_BIG})",
            "if lim.hit(item):\n    bare()",
        ),
        Case(
            g,
            "pyrate-limiter",
            "from pyrate_limiter import Limiter, Rate, Duration\n"
            f"lim = Limiter(Rate({_BIG}, Duration.SECOND))",
            "if lim.try_acquire('k', blocking=False):\n    bare()",
        ),
        Case(
            g,
            "throttled-py token_bucket",
            "from throttled import Throttled, rate_limiter\n"
            f"lim = Throttled(key='k', quota=rate_limiter.per_sec({_BIG}), using='token_bucket')",
            "if not lim.limit('k').limited:\n    bare()",
        ),
        Case(
            g,
            "throttled-py gcra",
            "from throttled import Throttled, rate_limiter\n"
            f"lim = Throttled(key='k', quota=rate_limiter.per_sec({_BIG}), using='gcra')",
            "if not lim.limit('k').limited:\n    bare()",
        ),
    ]


def _never_async() -> list[Case]:
    g = "ratelimit/never/async"
    rl = _RS + _RS_NEVER
    return [
        Case(g, "resilience decorator", rl + "wrapped = lim(abare)", "await wrapped()", True),
        Case(g, "resilience aacquire()", rl, "await lim.aacquire()\nawait abare()", True),
        Case(
            g,
            "aiolimiter",
            f"from aiolimiter import AsyncLimiter\nlim = AsyncLimiter({_BIG}, 1)",
            "async with lim:\n    await abare()",
            True,
        ),
    ]


def _saturated_sync() -> list[Case]:
    g = "ratelimit/saturated/sync"
    rl = _RS + "lim = rs.RateLimiter('api', rate=1, per=3600)\nlim.try_acquire()\n"
    catch = "try:\n    wrapped()\nexcept rs.RateLimitedError:\n    pass"
    return [
        Case(g, "resilience decorator (raises)", rl + "wrapped = lim(bare)", catch),
        Case(g, "resilience try_acquire()", rl, "if lim.try_acquire().allowed:\n    bare()"),
        Case(
            g,
            "token-bucket",
            "import token_bucket\n"
            "lim = token_bucket.Limiter(rate=1/3600, capacity=1,"
            " storage=token_bucket.MemoryStorage())\nlim.consume(b'k')",
            "if lim.consume(b'k'):\n    bare()",
        ),
        Case(
            g,
            "limits fixed",
            _LIMITS + "lim = strategies.FixedWindowRateLimiter(st)\n"
            "item = RateLimitItemPerHour(1)\nlim.hit(item)",
            "if lim.hit(item):\n    bare()",
        ),
        Case(
            g,
            "limits moving",
            _LIMITS + "lim = strategies.MovingWindowRateLimiter(st)\n"
            "item = RateLimitItemPerHour(1)\nlim.hit(item)",
            "if lim.hit(item):\n    bare()",
        ),
        Case(
            g,
            "pyrate-limiter",
            "from pyrate_limiter import Limiter, Rate, Duration\n"
            "lim = Limiter(Rate(1, Duration.HOUR))\nlim.try_acquire('k', blocking=False)",
            "if lim.try_acquire('k', blocking=False):\n    bare()",
        ),
        Case(
            g,
            "throttled-py gcra",
            "from throttled import Throttled, rate_limiter\n"
            "lim = Throttled(key='k', quota=rate_limiter.per_hour(1), using='gcra')\n"
            "lim.limit('k')",
            "if not lim.limit('k').limited:\n    bare()",
        ),
    ]


CASES: list[Case] = [
    *_never_sync(),
    *_never_async(),
    *_saturated_sync(),
    Case(
        "bulkhead/sync",
        "resilience Bulkhead",
        _RS + "wrapped = rs.Bulkhead('db', max_concurrent=10)(bare)",
        "wrapped()",
    ),
    Case(
        "bulkhead/sync",
        "threading.BoundedSemaphore (floor)",
        "import threading\nsem = threading.BoundedSemaphore(10)",
        "with sem:\n    bare()",
    ),
    Case(
        "bulkhead/async",
        "resilience Bulkhead",
        _RS + "wrapped = rs.Bulkhead('db', max_concurrent=10)(abare)",
        "await wrapped()",
        True,
    ),
    Case(
        "bulkhead/async",
        "asyncio.Semaphore (floor, one loop only)",
        "import asyncio\nsem = None\nasync def guarded():\n    global sem\n"
        "    if sem is None:\n        sem = asyncio.Semaphore(10)\n    async with sem:\n"
        "        await abare()",
        "await guarded()",
        True,
    ),
    Case(
        "adaptive/sync",
        "resilience AdaptiveConcurrency",
        _RS + "wrapped = rs.AdaptiveConcurrency('api')(bare)",
        "wrapped()",
    ),
]
