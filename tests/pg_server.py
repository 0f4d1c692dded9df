"""A real PostgreSQL server for tests: ``initdb`` into a temporary directory, then ``postgres``
on a free loopback port (its unix socket in the same directory), stopped by its pid.

The binaries come from ``$PG_BIN``, else the newest ``/usr/lib/postgresql/*/bin`` (Debian's
``postgresql`` package, which ``make test`` installs when it is missing), else ``$PATH``.
PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` system user
(the package creates it), its directory handed to that user. Without the binaries the tests
skip with a clear reason, except under ``CI=true`` where that is a failure. The machine's own
PostgreSQL (if any) is never used.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .redis_servers import free_port


def pg_bin() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``, or ``None``."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if found:
        versions = {Path(p).parent: Path(p).parts[-3] for p in found}
        return max(versions, key=lambda d: int(versions[d]) if versions[d].isdigit() else 0)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def require_postgres() -> Path:
    """The binaries' directory; skip (or fail under CI=true) when PostgreSQL is not installed."""
    found = pg_bin()
    if found is None or not (found / "initdb").is_file() or not (found / "postgres").is_file():
        reason = (
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; "
            "make installs it: apt-get install -y postgresql)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    return found


def _as_user() -> dict[str, Any]:
    """Popen's arguments that drop root to the ``postgres`` user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        message = "running as root and there is no 'postgres' user to run PostgreSQL as"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


@dataclass
class PostgresServer:
    """One ``postgres`` process we own, its data and socket under ``workdir``."""

    bindir: Path
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The SQLAlchemy URL (psycopg 3) of its ``postgres`` database, over TCP on loopback."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    def init(self) -> PostgresServer:
        user = _as_user()
        if user:
            os.chown(self.workdir, user["user"], user["group"])
        subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
            **user,
        )
        return self

    def start(self) -> PostgresServer:
        """Start the server; if its port was taken meanwhile, retry on another free port."""
        for _ in range(5):
            self.port = free_port()
            if self._spawn():
                return self
        raise RuntimeError("could not start postgres on a free port")

    def _spawn(self) -> bool:
        log = open(self.workdir / "postgres.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self.workdir),
                "-F",  # no fsync: a test server's data need not survive a crash
                "-c",
                "max_connections=40",
                "-c",
                "shared_buffers=16MB",
            ],
            stdout=log,
            stderr=log,
            **_as_user(),
        )
        log.close()
        return self._ready()

    def _ready(self, timeout: float = 30.0) -> bool:
        """Wait until it accepts connections; ``False`` if the process exited (port taken)."""
        import psycopg

        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with psycopg.connect(
                    host="127.0.0.1", port=self.port, user="postgres", connect_timeout=2
                ) as conn:
                    conn.execute("SELECT 1")
                    return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise RuntimeError(
            f"postgres on port {self.port} did not accept connections:\n{self.log()}"
        )

    def log(self) -> str:
        path = self.workdir / "postgres.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        """A fast shutdown (SIGINT) of our postmaster, by its pid; SIGKILL if it lingers."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        """Stop it and start it again on the same port (the data is kept)."""
        self.stop()
        if not self._spawn():
            raise RuntimeError(f"postgres did not restart on port {self.port}:\n{self.log()}")


def start_postgres() -> PostgresServer:
    bindir = require_postgres()
    workdir = Path(tempfile.mkdtemp(prefix="rs-pg-"))
    return PostgresServer(bindir, workdir).init().start()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server shared by the session (tests use their own tables)."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)
