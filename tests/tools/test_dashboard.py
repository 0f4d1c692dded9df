"""The live collector (``Live``, ``Meter``), the fleet merge, and the ``Dashboard`` ASGI app
driven directly (the browser test is tests/test_dashboard_browser.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from importlib.resources import files
from typing import Any

import pytest

import resilience as rs
from interceptors.asgi import Dashboard
from resilience import events as ev
from resilience.__main__ import main
from resilience._dashboard_cli import is_loopback
from resilience.instrumentation import Live, Meter, default_live, merge
from resilience.instrumentation._live import TRANSITIONS, WINDOW
from resilience.testing import FakeClock


def _policy(live: Live, name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [p for p in live.snapshot()["policies"] if p["name"] == name]
    assert len(found) == 1, live.snapshot()
    return found[0]


# -- the collector ------------------------------------------------------------------------------
def test_every_event_kind_lands_in_its_counter_and_names_the_policy_kind() -> None:
    live = Live(clock=FakeClock())
    o: Any = {"pipeline": "checkout", "operation": "pay"}
    for event in (
        ev.CallRejected(policy="gate", reason="rate_limited", **o),
        ev.BulkheadRejected(policy="slots", reason="bulkhead_full", **o),
        ev.RateLimitWaited(policy="gate", wait=0.1, **o),
        ev.RetryScheduled(policy="again", attempt=1, delay=0.1, reason="exception", **o),
        ev.RetriesExhausted(policy="again", attempts=2, reason="attempts", **o),
        ev.TimeoutElapsed(policy="limit", timeout=1.0, **o),
        ev.FallbackUsed(policy="spare", **o),
        ev.IdempotentReplay(policy="once", **o),
        ev.RecordsEvicted(policy="once", count=3, **o),
        ev.StoreFailed(policy="gate", decision="local", error_type="ConnectionError", **o),
    ):
        live(event)
    kinds = {p["name"]: p["kind"] for p in live.snapshot()["policies"]}
    assert kinds == {
        "gate": "rate_limiter",
        "slots": "bulkhead",
        "again": "retry",
        "limit": "timeout",
        "spare": "fallback",
        "once": "idempotent",
    }
    gate = _policy(live, "gate")["totals"]
    assert (gate["rejected"], gate["queued"], gate["store_failures"]) == (1, 1, 1)
    again = _policy(live, "again")["totals"]
    assert (again["retries"], again["give_ups"]) == (1, 1)
    once = _policy(live, "once")
    assert (once["totals"]["replays"], once["totals"]["evicted"]) == (1, 3)
    assert once["pipelines"] == ["checkout"]
    json.dumps(live.snapshot())  # JSON-ready


def test_per_second_rates_roll_over_the_window_and_totals_stay() -> None:
    clock = FakeClock()
    live = Live(clock=clock)
    reject = ev.CallRejected(policy="gate", reason="rate_limited")
    for _ in range(3):
        live(reject)
    clock.advance(1)
    live(reject)
    rates = _policy(live, "gate")["rates"]["rejected"]
    assert len(rates) == WINDOW
    assert rates[-2:] == [3, 1]  # the last entry is the running second
    clock.advance(WINDOW - 1)
    assert _policy(live, "gate")["rates"]["rejected"][0] == 1
    clock.advance(1)
    p = _policy(live, "gate")
    assert sum(p["rates"]["rejected"]) == 0
    assert p["totals"]["rejected"] == 4


def test_a_breaker_shows_its_state_and_its_latest_transitions_only() -> None:
    clock = FakeClock()
    live = Live(clock=clock)
    breaker = rs.CircuitBreaker("db", failure_count=1, open_for=1, clock=clock, listeners=[live])
    live.watch(breaker)
    assert _policy(live, "db")["state"] == "closed"

    def down() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        breaker.call(down)  # closed -> open
    for _ in range(TRANSITIONS):
        clock.advance(1.5)
        with pytest.raises(ConnectionError):
            breaker.call(down)  # the probe: open -> half-open -> open
    p = _policy(live, "db")
    assert p["state"] == "open"
    assert len(p["transitions"]) == TRANSITIONS
    last = p["transitions"][-1]
    assert (last["from"], last["to"], last["reason"]) == ("half_open", "open", "probe_failed")
    assert last["at"] == pytest.approx(clock.time())


def test_watching_a_pipeline_shows_the_policies_inside_it() -> None:
    live = Live(clock=FakeClock())
    inner = rs.Pipeline(rs.Timeout(1, name="t"), name="inner")
    live.watch(rs.Pipeline(rs.Retry(on=OSError, name="r"), inner, name="outer"))
    kinds = [(p["name"], p["kind"]) for p in live.snapshot()["policies"]]
    assert kinds == [("r", "retry"), ("t", "timeout")]


def test_a_breaker_whose_state_cannot_be_read_is_watched_without_one() -> None:
    class Unreachable:
        name, kind = "shared", "circuit_breaker"

        @property
        def state(self) -> str:
            raise rs.StoreError("redis is down")

    live = Live(clock=FakeClock())
    live.watch(Unreachable())
    assert _policy(live, "shared")["state"] is None
    live(ev.CircuitStateChanged(policy="shared", from_state="closed", to_state="open",
                                reason="manual"))  # fmt: skip
    assert _policy(live, "shared")["state"] == "open"


def test_policies_beyond_max_policies_are_counted_not_kept() -> None:
    live = Live(max_policies=2, clock=FakeClock())
    for i in range(5):
        live(ev.TimeoutElapsed(policy=f"t{i}", timeout=1.0))
    snap = live.snapshot()
    assert [p["name"] for p in snap["policies"]] == ["t0", "t1"]
    assert snap["dropped"] == 3
    with pytest.raises(ValueError):
        Live(max_policies=0)


def test_long_names_and_many_pipelines_are_bounded() -> None:
    live = Live(clock=FakeClock())
    for i in range(20):
        live(ev.TimeoutElapsed(policy="x" * 1000, pipeline=f"p{i}", timeout=1.0))
    p = live.snapshot()["policies"][0]
    assert len(p["name"]) == 200
    assert len(p["pipelines"]) == 8


async def test_the_meter_counts_admitted_failed_and_latency_percentiles_sync_and_async() -> None:
    clock = FakeClock()
    live = Live(clock=clock)
    meter = live.meter("search")
    assert isinstance(meter, Meter)

    @meter
    def work(seconds: float) -> float:
        clock.advance(seconds)
        if seconds > 1:
            raise TimeoutError
        return seconds

    @meter
    async def awork(seconds: float) -> float:
        clock.advance(seconds)
        return seconds

    for _ in range(88):
        work(0.010)
    for _ in range(10):
        await awork(0.100)
    for _ in range(2):
        with pytest.raises(TimeoutError):
            work(2.0)
    p = _policy(live, "search")
    assert p["kind"] == "meter"
    assert (p["totals"]["admitted"], p["totals"]["failed"]) == (100, 2)
    lat = p["latency"]
    assert lat["count"] == 100
    assert 10 <= lat["p50"] <= 11  # the bucket bound just above 10 ms (buckets are ~19 % wide)
    assert 100 <= lat["p90"] <= 120
    assert 2000 <= lat["p99"] <= 2400
    assert p["latency_p99"][-1] is not None


def test_without_live_no_listener_is_added_anywhere() -> None:
    default_live()
    assert rs.Retry(on=ValueError).listeners == ()
    assert rs.CircuitBreaker("x", failure_count=2).listeners == ()


# -- the fleet merge ------------------------------------------------------------------------
def _snap(instance: str, time: float, **policy: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "db",
        "kind": "circuit_breaker",
        "state": "closed",
        "pipelines": [],
    }
    base.update({"transitions": [], "totals": {}, "rates": {}, "latency": None})
    base.update(policy)
    return {"version": 1, "time": time, "window": 3, "instances": [instance], "dropped": 1,
            "policies": [base]}  # fmt: skip


def test_merge_aligns_seconds_sums_counts_and_takes_the_latest_transition() -> None:
    a = _snap(
        "a", 100.2, totals={"rejected": 6}, rates={"rejected": [1, 2, 3]}, state="open",
        transitions=[{"at": 99.0, "from": "closed", "to": "open", "reason": "failure_count"}],
        latency={"p50": 1.0, "p90": 2.0, "p99": 9.0, "count": 10},
    )  # fmt: skip
    b = _snap(
        "b", 101.7, totals={"rejected": 1}, rates={"rejected": [0, 0, 1]}, state="half_open",
        latency={"p50": 3.0, "p90": 4.0, "p99": 5.0, "count": 5},
    )  # fmt: skip
    m = merge([a, b])
    assert m["instances"] == ["a", "b"]
    assert m["dropped"] == 2
    (p,) = m["policies"]
    assert p["totals"] == {"rejected": 7}
    assert p["rates"]["rejected"] == [2, 3, 1]  # a's series one second older
    assert p["state"] == "open"  # the latest transition says so
    assert p["transitions"][0]["instance"] == "a"
    assert p["latency"] == {"p50": 3.0, "p90": 4.0, "p99": 9.0, "count": 15}
    assert [i["state"] for i in p["instances"]] == ["open", "half_open"]
    assert (
        merge([_snap("a", 1, state="closed"), _snap("b", 1, state="half_open")])["policies"][0][
            "state"
        ]
        == "half_open"
    )  # no transition seen: the worst state


@pytest.mark.redis
def test_published_snapshots_are_merged_by_a_fleet_and_expire(redis_server: Any) -> None:
    store = rs.RedisStore.from_url(redis_server.url, prefix="dash-test")
    try:
        lives = [Live(clock=FakeClock(), instance=f"w{i}") for i in range(2)]
        for i, live in enumerate(lives):
            for _ in range(i + 1):
                live(ev.RetryScheduled(policy="fetch", attempt=1, delay=0, reason="exception"))
            publisher = live.publish(store, every=60, ttl=120)
            publisher.publish_once()
            publisher.stop()
        snap = rs.instrumentation.Fleet(store).snapshot()
        assert sorted(snap["instances"]) == ["w0", "w1"]
        assert snap["policies"][0]["totals"]["retries"] == 3
        client = store.sync_client()
        key = "dash-test:{dashboard}:w0"
        assert 0 < client.pttl(key) <= 120_000
        client.delete(key)  # expired
        assert rs.instrumentation.Fleet(store).snapshot()["instances"] == ["w1"]
        client.set(key, b"not json")
        assert rs.instrumentation.Fleet(store).snapshot()["instances"] == ["w1"]
    finally:
        store.sync_client().delete("dash-test:{dashboard}", "dash-test:{dashboard}:w0")
        store.close()


def test_a_publisher_needs_a_ttl_longer_than_its_period() -> None:
    with pytest.raises(ValueError):
        Live().publish(object(), every=5, ttl=5)


# -- the ASGI app ---------------------------------------------------------------------------
Sent = list[MutableMapping[str, Any]]


async def _request(
    app: Callable[..., Awaitable[None]],
    path: str,
    *,
    method: str = "GET",
    host: str = "127.0.0.1:8000",
    root_path: str = "",
    chunks: int = 1,
) -> tuple[int, dict[str, str], bytes]:
    """Run one request; a streamed answer is disconnected after ``chunks`` body chunks."""
    sent: Sent = []
    enough = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await enough.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)
        if message["type"] != "http.response.body":
            return
        bodies = [m for m in sent if m["type"] == "http.response.body"]
        if len(bodies) >= chunks or not message.get("more_body", False):
            enough.set()

    scope = {
        "type": "http",
        "method": method,
        "path": root_path + path,
        "root_path": root_path,
        "headers": [(b"host", host.encode())],
    }
    await asyncio.wait_for(app(scope, receive, send), 5)
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], headers, body


def _live_with_policy(name: str = "payments") -> Live:
    live = Live(clock=FakeClock())
    live(ev.CallRejected(policy=name, reason="circuit_open"))
    return live


async def test_the_page_and_its_assets_are_served_with_a_strict_policy() -> None:
    app = Dashboard(_live_with_policy())
    status, headers, body = await _request(app, "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert b'src="dashboard.js"' in body
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"
    for asset, ctype in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        status, headers, body = await _request(app, "/" + asset)
        assert (status, headers["content-type"].split(";")[0]) == (200, ctype)
        assert body == (files("interceptors.asgi") / "dashboard" / asset).read_bytes()
    status, headers, body = await _request(app, "/", method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) > 0


async def test_no_markup_is_built_from_data_in_the_script() -> None:
    script = (files("interceptors.asgi") / "dashboard" / "dashboard.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


async def test_the_snapshot_and_the_event_stream_carry_the_state() -> None:
    evil = "</script><script>alert(1)</script>"
    app = Dashboard(_live_with_policy(evil), interval=0.01)
    status, headers, body = await _request(app, "/snapshot.json")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["policies"][0]["name"] == evil
    status, headers, body = await _request(app, "/events", chunks=3)
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    frames = body.decode().split("\n\n")
    assert frames[0] == "retry: 2000"
    snaps = [json.loads(f.removeprefix("data: ")) for f in frames[1:] if f]
    assert len(snaps) >= 2
    assert all(s["policies"][0]["totals"]["rejected"] == 1 for s in snaps)
    assert app._streams == 0  # the disconnect ended the stream


async def test_streams_are_bounded() -> None:
    app = Dashboard(_live_with_policy(), max_streams=0)
    status, headers, _ = await _request(app, "/events")
    assert (status, headers["retry-after"]) == (503, "5")


async def test_auth_hosts_methods_and_unknown_paths_are_refused() -> None:
    seen: list[str] = []

    async def only_with_token(scope: MutableMapping[str, Any]) -> bool:
        seen.append(scope["path"])
        return (b"authorization", b"Bearer t") in scope["headers"]

    app = Dashboard(_live_with_policy(), auth=only_with_token)
    assert (await _request(app, "/snapshot.json"))[0] == 401
    assert (await _request(app, "/events"))[0] == 401
    assert seen == ["/snapshot.json", "/events"]
    assert (await _request(Dashboard(_live_with_policy(), auth=lambda s: True), "/"))[0] == 200

    app = Dashboard(_live_with_policy(), allowed_hosts=["127.0.0.1", "[::1]", "localhost"])
    assert (await _request(app, "/", host="127.0.0.1:8765"))[0] == 200
    assert (await _request(app, "/", host="[::1]:8765"))[0] == 200
    assert (await _request(app, "/", host="localhost"))[0] == 200
    assert (await _request(app, "/", host="attacker.example:8765"))[0] == 403
    status, headers, _ = await _request(app, "/", method="POST")
    assert (status, headers["allow"]) == (405, "GET, HEAD")
    assert (await _request(app, "/../etc/passwd"))[0] == 404


async def test_mounted_under_a_prefix_it_redirects_to_the_slash_and_serves_below() -> None:
    app = Dashboard(_live_with_policy())
    status, headers, _ = await _request(app, "", root_path="/_resilience")
    assert (status, headers["location"]) == (308, "/_resilience/")
    assert (await _request(app, "/dashboard.js", root_path="/_resilience"))[0] == 200


async def test_lifespan_is_answered_and_websockets_ignored() -> None:
    app = Dashboard(Live())
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: Sent = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    await app({"type": "websocket", "path": "/"}, receive, send)
    assert len(sent) == 2
    with pytest.raises(ValueError):
        Dashboard(Live(), interval=0)


def test_the_default_source_is_the_process_collector() -> None:
    assert Dashboard().source is default_live()


# -- the command line -----------------------------------------------------------------------
def test_the_cli_refuses_a_non_loopback_bind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "not a loopback address" in capsys.readouterr().err
    assert [is_loopback(h) for h in ("127.0.0.2", "[::1]", "localhost", "example.com")] == [
        True,
        True,
        True,
        False,
    ]


@pytest.mark.redis
def test_the_cli_serves_the_fleet_from_redis_on_loopback(redis_server: Any) -> None:
    import os
    import re
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    args = ["--redis", redis_server.url, "--prefix", "cli-dash", "--port", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "resilience", "dashboard", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    store = rs.RedisStore.from_url(redis_server.url, prefix="cli-dash")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert found, line
        url = found.group(0)
        live = Live(instance="worker-1")
        live(ev.CircuitStateChanged(policy="db", from_state="closed", to_state="open",
                                    reason="failure_ratio"))  # fmt: skip
        publisher = live.publish(store, every=60, ttl=120)
        publisher.publish_once()
        publisher.stop()
        deadline = time.monotonic() + 10
        while True:  # uvicorn is listening once the URL is printed; retry a refused connect
            try:
                with urllib.request.urlopen(url + "snapshot.json", timeout=5) as r:
                    snap = json.loads(r.read())
                break
            except urllib.error.URLError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert snap["instances"] == ["worker-1"]
        assert snap["policies"][0]["state"] == "open"
        rebound = urllib.request.Request(url, headers={"Host": "attacker.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound, timeout=5)
        refused.value.close()
        assert refused.value.code == 403
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
        store.sync_client().delete("cli-dash:{dashboard}", "cli-dash:{dashboard}:worker-1")
        store.close()


async def test_the_storefront_order_service_serves_its_dashboard() -> None:
    import importlib

    # imported by name: mypy checks examples/ as its own tree (examples/ is no package)
    services: Any = importlib.import_module("examples.storefront.services")
    live = Live(clock=FakeClock())
    app, close = services.order_app(
        payment_port=1,
        inventory_url="http://127.0.0.1:1",
        stats=services.OrderStats(),
        resilient=True,
        entry_rate=10,
        live=live,
    )
    try:
        status, _, body = await _request(app, "/snapshot.json", root_path=services.DASHBOARD_PATH)
        assert status == 200
        shown = {p["name"]: p for p in json.loads(body)["policies"]}
        assert shown["payment"]["state"] == shown["inventory"]["state"] == "closed"
        assert {"entry", "payment-retry", "payment-calls"} <= set(shown)
        scope_path = await _request(app, "/", root_path=services.DASHBOARD_PATH)
        assert scope_path[0] == 200
        assert (await _request(app, "/orders", method="GET"))[0] == 405  # the service itself
    finally:
        await close()


class _Broken:
    blocking = True

    def snapshot(self) -> dict[str, Any]:
        raise ConnectionError("redis is down")


async def test_a_failing_source_is_reported_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    app = Dashboard(_Broken(), interval=0.01)
    status, _, body = await _request(app, "/snapshot.json")
    assert (status, json.loads(body)["error"]) == (503, "the source failed (ConnectionError)")
    status, _, body = await _request(app, "/events", chunks=2)
    assert status == 200
    assert b'"error": "the source failed (ConnectionError)"' in body
    assert "the dashboard's source failed" in caplog.text


def test_merge_leaves_out_malformed_snapshots() -> None:
    good = _snap("a", 5.0, totals={"retries": 1}, rates={"retries": [0, 0, 1]})
    bad: list[Any] = [
        {"version": 1, "time": 5.0, "window": 3, "instances": ["x"], "policies": [{"name": 3}]},
        {"version": 1, "time": "soon", "window": 3, "instances": ["y"], "policies": []},
        {**good, "policies": [{**good["policies"][0], "totals": {"retries": "many"}}]},
        [],
    ]
    from resilience.instrumentation._fleet import _valid

    assert [_valid(s) for s in [good, *bad]] == [True, False, False, False, False]


async def test_mounted_in_starlette_the_page_and_its_assets_resolve() -> None:
    import httpx
    from starlette.applications import Starlette
    from starlette.routing import Mount

    app = Starlette(routes=[Mount("/_resilience", app=Dashboard(_live_with_policy()))])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        assert (await client.get("/_resilience/")).status_code == 200
        assert (await client.get("/_resilience/dashboard.js")).status_code == 200
        snap = (await client.get("/_resilience/snapshot.json")).json()
        assert snap["policies"][0]["name"] == "payments"
        assert (await client.get("/_resilience/nope")).status_code == 404
