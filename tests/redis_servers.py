"""Real Redis servers for tests, started from the ``redis-server`` binary on free loopback ports.

Without the binary the tests skip with a clear reason, except under ``CI=true`` where a skipped
Redis test is a failure. Only processes started here are ever stopped (by their pid).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def require_redis() -> None:
    """Skip (or fail under CI=true) when redis-server is not installed."""
    if REDIS_SERVER is None or REDIS_CLI is None:
        reason = "redis-server/redis-cli not installed; install Redis 7 to run the Redis tests"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ping(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    """Wait until the server answers PING; ``False`` if the process exited (port taken)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"redis-server on port {port} did not answer PING")


@dataclass
class RedisServer:
    """One redis-server process we own."""

    port: int
    workdir: str
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server; if its port was taken meanwhile, retry on another free port."""
        for _ in range(5):
            if self._spawn():
                return self
            self.port = free_port()
        raise RuntimeError("could not start redis-server on a free port")

    def _spawn(self) -> bool:
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.workdir,
                "--protected-mode",
                "no",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if _ping(self.port, self.proc):
            return True
        self.proc.wait()
        return False

    def kill(self) -> None:
        """kill -9 (data is gone: the server keeps nothing on disk)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the server hangs with its socket open."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def cli(self, *args: str) -> str:
        assert REDIS_CLI is not None
        out = subprocess.run(
            [REDIS_CLI, "-p", str(self.port), *args], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()


def start_server(extra: list[str] | None = None) -> RedisServer:
    require_redis()
    workdir = tempfile.mkdtemp(prefix="rs-redis-")
    return RedisServer(free_port(), workdir, extra or []).start()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A standalone server shared by the session (tests flush what they use)."""
    server = start_server()
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A standalone server for one test (fault injection: kill, pause, restart)."""
    server = start_server()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.resume()
        server.kill()
        shutil.rmtree(server.workdir, ignore_errors=True)


@dataclass
class RedisCluster:
    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return self.nodes[0].url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster on loopback, made with ``redis-cli --cluster create``."""
    require_redis()
    assert REDIS_CLI is not None
    workdir = tempfile.mkdtemp(prefix="rs-cluster-")
    nodes: list[RedisServer] = []
    try:
        for _ in range(3):
            port = free_port()
            node_dir = os.path.join(workdir, str(port))
            os.makedirs(node_dir)
            nodes.append(
                RedisServer(
                    port,
                    node_dir,
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ],
                ).start()
            )
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *[f"127.0.0.1:{n.port}" for n in nodes],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            check=True,
            timeout=60,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in n.cli("cluster", "info") for n in nodes):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("redis cluster did not reach cluster_state:ok")
        yield RedisCluster(nodes)
    finally:
        for n in nodes:
            n.kill()
        shutil.rmtree(workdir, ignore_errors=True)
