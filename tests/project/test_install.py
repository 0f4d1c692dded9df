"""Installation as a user gets it: metadata, ``--version``, and the built wheel in a fresh venv.

The ``slow`` tests build the wheel, install it with the ``httpx`` and ``grpc`` extras into a new
virtual environment (from the package index: they need it, and fail rather than skip without
it), then run a small user program there and ``mypy --strict`` on it from a directory outside
the source tree, so that only the installed wheel is seen.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from resilience.__main__ import DISTRIBUTION, main, version_line

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
VERSION: str = PYPROJECT["project"]["version"]
USER_EXTRAS = {"redis", "grpc", "httpx", "otel", "asgi", "pybreaker", "sql", "plot", "all"}


def test_distribution_name_is_the_one_the_cli_reports() -> None:
    assert PYPROJECT["project"]["name"] == DISTRIBUTION == "resilience-policies"


def test_extras_are_user_facing_and_development_needs_are_groups() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(extras) == USER_EXTRAS
    # `all` names the distribution itself (a stale name would pull someone else's package)
    assert extras["all"] == [f"{DISTRIBUTION}[redis,grpc,httpx,otel,asgi,pybreaker,sql]"]
    groups = PYPROJECT["dependency-groups"]
    assert {"test", "lint", "demo", "docs", "bench", "dev"} <= set(groups)
    included = {item["include-group"] for item in groups["dev"] if isinstance(item, dict)}
    assert included == set(groups) - {"dev"}
    requirements = [r for name, reqs in groups.items() for r in reqs if isinstance(r, str)]
    assert requirements
    assert not [r for r in requirements if r.startswith(("resilience[", f"{DISTRIBUTION}["))]


def test_both_packages_are_marked_typed() -> None:
    assert (ROOT / "resilience" / "py.typed").is_file()
    assert (ROOT / "interceptors" / "py.typed").is_file()


def _expected_version_line() -> str:
    try:
        installed = version(DISTRIBUTION)
    except PackageNotFoundError:  # the sources imported from a checkout, not installed
        installed = "0+unknown"
    return f"{DISTRIBUTION} {installed}"


def test_version_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert version_line() == _expected_version_line()
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"{_expected_version_line()}\n"


def test_python_dash_m_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "resilience", "--version"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert out.stdout == f"{_expected_version_line()}\n"


# -- the built wheel in a fresh virtual environment ------------------------------------------

USER_PROGRAM = '''
"""A user's service: policies, ASGI middleware, an httpx client and a gRPC channel."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import grpc
import httpx

import resilience as rs
from interceptors.asgi import RateLimitMiddleware, ResilienceMiddleware
from interceptors.grpc import ResilienceClientInterceptor, grpc_retry
from interceptors.httpx import ResilientTransport, http_retry
from resilience.testing import FakeClock

Message = MutableMapping[str, Any]


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


served = RateLimitMiddleware(
    ResilienceMiddleware(app, pipeline=rs.Pipeline(rs.Timeout(30.0), name="server")),
    limiter=rs.RateLimiter("clients", rate=100, burst=20),
)

clock = FakeClock()
calls: list[int] = []


@rs.Retry(on=ConnectionError, attempts=3, clock=clock)
def flaky() -> str:
    calls.append(1)
    if len(calls) < 3:
        raise ConnectionError("down")
    return "ok"


def answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, text="hello")


transport = ResilientTransport(
    rs.Pipeline(rs.Timeout(10.0), http_retry(attempts=3)),
    transport=httpx.MockTransport(answer),
)
interceptor = ResilienceClientInterceptor(
    pipeline=rs.Pipeline(
        rs.Timeout(1.0), grpc_retry(codes=(grpc.StatusCode.UNAVAILABLE,), attempts=3)
    )
)
channel: grpc.Channel = grpc.intercept_channel(grpc.insecure_channel("127.0.0.1:9"), interceptor)


def main() -> None:
    assert flaky() == "ok"
    with httpx.Client(transport=transport) as client:
        text: str = client.get("http://inventory.local/").text
    channel.close()
    print(text, len(calls), type(served).__name__)


if __name__ == "__main__":
    main()
'''

# a type error in a call into each installed package: mypy must see their real signatures
BROKEN_PROGRAM = """
import resilience as rs
from interceptors.httpx import http_retry

rs.Retry(on=ConnectionError, attempts="three")
http_retry(attempts=None)
"""


@dataclass(frozen=True)
class Installed:
    """A fresh virtual environment with the wheel installed, and a directory outside the repo."""

    wheel: Path
    python: Path
    workdir: Path
    env: dict[str, str]

    def run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args],
            capture_output=True,
            text=True,
            check=check,
            cwd=self.workdir,
            env=self.env,
            timeout=600,
        )

    def mypy(self, program: str) -> subprocess.CompletedProcess[str]:
        """``mypy --strict`` on ``program`` against the venv's site-packages only."""
        path = self.workdir / "program_under_check.py"
        path.write_text(textwrap.dedent(program), encoding="utf-8")
        config = self.workdir / "mypy.ini"
        config.write_text("[mypy]\n", encoding="utf-8")
        return self.run(
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            config,
            "--python-executable",
            self.python,
            "--cache-dir",
            self.workdir / ".mypy_cache",
            "--no-error-summary",
            path,
            check=False,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("install")
    # nothing may point back into the source tree
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    env["PYTHONNOUSERSITE"] = "1"
    workdir = base / "user"
    workdir.mkdir()
    step = Installed(wheel=base, python=base / "venv" / "bin" / "python", workdir=workdir, env=env)
    step.run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", base, ROOT)
    (wheel,) = base.glob("*.whl")
    step.run(sys.executable, "-m", "venv", base / "venv")
    step.run(
        step.python,
        "-m",
        "pip",
        "install",
        "--quiet",
        f"{wheel}[httpx,grpc]",
        "grpc-stubs",  # what a typed gRPC user installs next to grpcio
    )
    return Installed(wheel=wheel, python=step.python, workdir=workdir, env=env)


@pytest.mark.slow
def test_wheel_contents(installed: Installed) -> None:
    assert installed.wheel.name == f"resilience_policies-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        meta_dir = f"resilience_policies-{VERSION}.dist-info"
        metadata = wheel.read(f"{meta_dir}/METADATA").decode()
    assert {"resilience/py.typed", "interceptors/py.typed"} <= names
    assert {n for n in names if n.endswith(".lua")}, "the Lua scripts are package data"
    assert f"{meta_dir}/licenses/LICENSE" in names
    assert {n.split("/")[0] for n in names} == {"resilience", "interceptors", meta_dir}
    headers = metadata.split("\n\n", 1)[0].splitlines()
    assert f"Name: {DISTRIBUTION}" in headers
    assert "License-Expression: MIT" in headers
    extras = {h.removeprefix("Provides-Extra: ") for h in headers if h.startswith("Provides-")}
    assert extras == USER_EXTRAS
    assert any(h.startswith("Project-URL: Changelog, ") for h in headers)


@pytest.mark.slow
def test_installed_wheel_imports_from_site_packages_and_runs(installed: Installed) -> None:
    where = installed.run(
        installed.python,
        "-c",
        "import resilience, interceptors.grpc; print(resilience.__file__, interceptors.__file__)",
    )
    for path in where.stdout.split():
        assert "site-packages" in path
        assert not Path(path).is_relative_to(ROOT)
    program = installed.workdir / "service.py"
    program.write_text(USER_PROGRAM, encoding="utf-8")
    out = installed.run(installed.python, program)
    assert out.stdout.split() == ["hello", "3", "RateLimitMiddleware"]


@pytest.mark.slow
def test_mypy_strict_on_a_user_program_sees_only_the_installed_wheel(
    installed: Installed,
) -> None:
    result = installed.mypy(USER_PROGRAM)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    broken = installed.mypy(BROKEN_PROGRAM)
    assert broken.returncode == 1
    assert broken.stdout.count(": error: ") == 2, broken.stdout


@pytest.mark.slow
def test_console_script_and_module_print_the_distribution_version(installed: Installed) -> None:
    script = installed.python.parent / "resilience"
    for command in ([script], [installed.python, "-m", "resilience"]):
        out = installed.run(*command, "--version")
        assert out.stdout == f"{DISTRIBUTION} {VERSION}\n"


@pytest.mark.slow
def test_dunder_version_is_the_installed_version(installed: Installed) -> None:
    out = installed.run(installed.python, "-c", "import resilience; print(resilience.__version__)")
    assert out.stdout == f"{VERSION}\n"


def test_top_level_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "usage: resilience" in out
    assert "simulate" in out
    assert "``" not in out
    assert ":class:" not in out
