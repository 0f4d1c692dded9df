"""The Redis Streams consumer recipe: a consumer killed before its XACK, the redelivery replayed.

Everything is real: a redis-server this test starts, consumers in subprocesses, SIGKILL.
The kill is ordered by the consumer itself (it announces the effect is done on a Redis list and
blocks before acking), never by sleeping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis

from ..redis_servers import RedisServer

ROOT = Path(__file__).resolve().parents[2]


def consumer(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "examples.stream_consumer", "--redis", url, *args]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_killed_consumer_redelivery_is_replayed_not_rerun(
    own_redis_server: RedisServer, tmp_path: Path
) -> None:
    url = own_redis_server.url
    r: Any = redis.Redis.from_url(url, decode_responses=True)
    subprocess.run(consumer(url, "--publish", "2"), check=True, env=environment(), timeout=60)
    first_id, second_id = (mid for mid, _ in r.xrange("orders"))

    # consumer A reads both, charges the first, then stops before its XACK ...
    log = tmp_path / "consumer-a.log"
    with log.open("wb") as out:
        a = subprocess.Popen(
            consumer(url, "--consumer", "a", "--pause-before-ack", "paused"),
            env=environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        announced = r.blpop(["paused"], timeout=60)
        assert announced == ("paused", first_id), log.read_text()
        assert r.lrange("ledger", 0, -1) == [f"order-1:{first_id}"]
        # ... and dies there: the effect happened, the ack never will
        os.kill(a.pid, signal.SIGKILL)
        assert a.wait(timeout=30) == -signal.SIGKILL
    finally:
        if a.poll() is None:  # pragma: no cover - only when an assertion above failed
            a.kill()
            a.wait(timeout=30)
    assert r.xpending("orders", "billing")["pending"] == 2  # both still pending on A

    # consumer B claims what A abandoned: the first is replayed, the second runs, both acked
    b = subprocess.run(
        consumer(url, "--consumer", "b", "--claim-idle-ms", "0", "--once"),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert b.returncode == 0, b.stderr
    assert b.stdout.splitlines() == [
        f"{first_id} replayed: charged order-1",
        f"{second_id} ran: charged order-2",
    ]
    assert r.lrange("ledger", 0, -1) == [f"order-1:{first_id}", f"order-2:{second_id}"]
    assert r.xpending("orders", "billing")["pending"] == 0

    # a third consumer finds nothing left to do
    c = subprocess.run(
        consumer(url, "--consumer", "c", "--claim-idle-ms", "0", "--once"),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (c.returncode, c.stdout) == (0, "")
    assert r.llen("ledger") == 2
