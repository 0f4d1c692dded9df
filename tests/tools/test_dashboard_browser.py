"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` package, installed
by the Makefile) driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: no
port, no extra dependency), against a real uvicorn server whose policies produce events.

The page is screenshotted to ``artifacts/dashboard.png`` (git-ignored; CI keeps it). Without a
browser the test is skipped locally and fails under ``CI=true``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import resilience as rs
from interceptors.asgi import Dashboard
from resilience.instrumentation import Live

from .._server import serve

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "artifacts" / "dashboard.png"
#: a policy name that would run script if the page ever inserted names as markup
EVIL = '<img src=x onerror="window.__pwned=1"></script><script>window.__pwned=2</script>'


def _chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(found, os.X_OK):
        message = f"no Chromium at {found} (make installs it: apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


class DevTools:
    """A minimal DevTools-protocol client over Chromium's pipe (fd 3 in, fd 4 out, each
    message a JSON text ending with a NUL byte)."""

    def __init__(self, binary: str, profile: str) -> None:
        to_chrome_r, self._out = os.pipe()
        self._in, from_chrome_w = os.pipe()
        # bash moves the two pipe ends to the descriptors 3 and 4 Chromium expects
        script = (
            f'exec "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-'
        )
        args = [
            binary,
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",  # tests run as root in containers
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--window-size=1280,1000",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            ["bash", "-c", script, "chromium", *args],
            pass_fds=(to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._id = 0
        self.session: str | None = None

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one command (in the attached page's session once there is one)."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if self.session is not None and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    def open(self, url: str) -> None:
        """Open ``url`` in a new page and attach to it."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.send("Page.enable")
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, check: Callable[[Any], bool], within: float = 15) -> Any:
        """Poll ``expression`` until ``check(value)`` holds; the last value otherwise fails."""
        deadline = time.monotonic() + within
        value = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if check(value):
                return value
            time.sleep(0.1)
        pytest.fail(f"the page never satisfied the check: {expression} = {value!r}")

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._in)
        os.close(self._out)


@pytest.fixture
def browser() -> Iterator[DevTools]:
    binary = _chromium()
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        tools = DevTools(binary, profile)
        try:
            yield tools
        finally:
            tools.close()


def _card(name_js: str, inner: str) -> str:
    # an expression reading `inner` (a JS expression of `c`, the card) of the named policy's card
    return (
        f"(() => {{ const n = {name_js}; const c = [...document.querySelectorAll('.card')]"
        f".find(e => e.getAttribute('data-policy') === n); return c ? ({inner}) : null; }})()"
    )


def _total(name: str, metric: str) -> str:
    return _card(
        json.dumps(name),
        f"Number((c.querySelector('tr[data-metric={metric}] td.t') || {{}}).textContent || 0)",
    )


def test_the_page_follows_a_breaker_opening_and_counts_rising(browser: DevTools) -> None:
    live = Live(max_policies=50)
    breaker = rs.CircuitBreaker("payments", failure_count=3, window=60, open_for=300)
    guarded = rs.Pipeline(breaker, live.meter("payments-calls"), name="pay", listeners=[live])
    live.watch(breaker)
    evil = rs.Retry(
        on=ValueError, attempts=2, backoff=rs.backoff.constant(0), name=EVIL, listeners=[live]
    )

    def fail() -> None:
        raise ConnectionError("down")

    def boom() -> None:
        raise ValueError

    for _ in range(5):
        guarded.call(lambda: "ok")
    app = Dashboard(live, allowed_hosts=["127.0.0.1"], interval=0.2)
    with serve(app) as url:
        browser.open(url + "/")
        state = _card('"payments"', "c.querySelector('.state').getAttribute('data-state')")
        assert browser.wait_for(state, lambda v: v == "closed") == "closed"
        admitted = browser.wait_for(_total("payments-calls", "admitted"), lambda v: v == 5)
        assert admitted == 5

        for _ in range(3):
            with pytest.raises(ConnectionError):
                guarded.call(fail)
        assert browser.wait_for(state, lambda v: v == "open") == "open"
        assert browser.wait_for(_total("payments-calls", "failed"), lambda v: v == 3) == 3
        shown = _card('"payments"', "c.querySelector('.transitions li').textContent")
        assert "closed → open" in browser.wait_for(shown, lambda v: bool(v))

        for _ in range(4):
            with pytest.raises(rs.CircuitOpenError):
                guarded.call(lambda: "ok")
        assert browser.wait_for(_total("payments", "rejected"), lambda v: v == 4) == 4
        for _ in range(4):  # more refusals: the count on the page rises with them
            with pytest.raises(rs.CircuitOpenError):
                guarded.call(lambda: "ok")
        assert browser.wait_for(_total("payments", "rejected"), lambda v: v == 8) == 8

        with pytest.raises(ValueError):
            evil.call(boom)
        name = browser.wait_for(
            _card(json.dumps(EVIL), "c.querySelector('.name').textContent"), lambda v: v == EVIL
        )
        assert name == EVIL  # shown as text ...
        assert browser.evaluate("window.__pwned === undefined") is True  # ... never run
        assert browser.evaluate("document.querySelectorAll('main img, main script').length") == 0
        assert browser.evaluate("document.getElementById('status').textContent") == "live"
        browser.screenshot(SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 10_000


def test_a_host_outside_allowed_hosts_gets_no_page(browser: DevTools) -> None:
    app = Dashboard(Live(), allowed_hosts=["dashboard.internal"])
    with serve(app) as url:
        browser.open(url + "/")
        text = browser.wait_for("document.body && document.body.innerText", lambda v: bool(v))
        assert "host not allowed" in text


class _TwoInstances:
    """A fleet source without Redis: the merge of two collectors' snapshots."""

    def __init__(self, *lives: Live) -> None:
        self.lives = lives

    def snapshot(self) -> dict[str, Any]:
        return rs.instrumentation.merge([live.snapshot() for live in self.lives])


def test_a_fleet_view_shows_the_instances_and_their_disagreeing_states(
    browser: DevTools,
) -> None:
    a, b = Live(instance="order-0"), Live(instance="order-1")
    for live, opened in ((a, True), (b, False)):
        breaker = rs.CircuitBreaker("db", failure_count=1, open_for=300, listeners=[live])
        live.watch(breaker)
        if opened:
            with pytest.raises(ZeroDivisionError):
                breaker.call(lambda: 1 / 0)
    with serve(Dashboard(_TwoInstances(a, b), interval=0.2)) as url:
        browser.open(url + "/")
        sub = browser.wait_for(_card('"db"', "c.querySelector('.sub').textContent"), bool)
        assert "2 instances (order-0: open, order-1: closed)" in sub
        state = _card('"db"', "c.querySelector('.state').getAttribute('data-state')")
        assert browser.evaluate(state) == "open"  # the fleet's latest transition
        meta = browser.evaluate("document.getElementById('meta').textContent")
        assert "2 instances" in meta


def test_a_missing_browser_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no Chromium"):
        _chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no Chromium"):
        _chromium()
