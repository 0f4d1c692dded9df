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
from collections.abc import Callable, Iterator, Sequence
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
            [REDIS_CLI, "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,  # never hang on a paused server
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


def _cluster_node(workdir: str, node_timeout_ms: int, extra: Sequence[str] = ()) -> RedisServer:
    """Start one cluster-enabled redis-server in its own directory under ``workdir``."""
    port = free_port()
    node_dir = os.path.join(workdir, str(port))
    os.makedirs(node_dir)
    args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    args += ["--cluster-node-timeout", str(node_timeout_ms), *extra]
    return RedisServer(port, node_dir, args).start()


def _cluster_create(nodes: Sequence[RedisServer], *, replicas: int) -> None:
    """``redis-cli --cluster create`` over ``nodes`` with ``replicas`` replicas per master."""
    assert REDIS_CLI is not None
    hosts = [f"127.0.0.1:{n.port}" for n in nodes]
    subprocess.run(
        [
            REDIS_CLI,
            "--cluster",
            "create",
            *hosts,
            "--cluster-replicas",
            str(replicas),
            "--cluster-yes",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster on loopback, made with ``redis-cli --cluster create``."""
    require_redis()
    assert REDIS_CLI is not None
    workdir = tempfile.mkdtemp(prefix="rs-cluster-")
    nodes: list[RedisServer] = []
    try:
        nodes.extend(_cluster_node(workdir, 2000) for _ in range(3))
        _cluster_create(nodes, replicas=0)
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


# -- highly available deployments (failover drills) -----------------------------------------------
# Fast failover settings: a node is considered down after 1 s; replicas sync without the 5 s
# diskless-sync delay; every address is announced as 127.0.0.1.
_FAST_SYNC = ["--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1"]


def _wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except subprocess.CalledProcessError:
            pass  # a node that is still starting or was just killed
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def _info(server: RedisServer, section: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in server.cli("info", section).splitlines():
        name, sep, value = line.partition(":")
        if sep:
            out[name] = value.strip()
    return out


def _has_online_replica(master: RedisServer) -> bool:
    """``master`` has a replica in sync (``state=online``), not only a connected one."""
    info = _info(master, "replication")
    return any(k.startswith("slave") and "state=online" in v for k, v in info.items())


@dataclass
class ClusterWithReplicas:
    """A 3-master / 3-replica Redis Cluster on loopback (``cluster-node-timeout`` 1 s)."""

    nodes: list[RedisServer]
    workdir: str

    def alive(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    @property
    def url(self) -> str:
        return self.alive()[0].url

    def masters(self) -> list[RedisServer]:
        return [n for n in self.alive() if _info(n, "replication").get("role") == "master"]

    def owner(self, key: str) -> RedisServer:
        """The live master serving ``key``'s slot."""
        slot = int(self.alive()[0].cli("cluster", "keyslot", key))
        for n in self.masters():
            if self._serves(n, slot):
                return n
        raise RuntimeError(f"no live master serves slot {slot}")

    @staticmethod
    def _serves(node: RedisServer, slot: int) -> bool:
        myid = node.cli("cluster", "myid")
        for line in node.cli("cluster", "nodes").splitlines():
            fields = line.split()
            if fields[0] != myid:
                continue
            for r in fields[8:]:
                lo, _, hi = r.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return True
        return False

    def replica_of(self, master: RedisServer) -> RedisServer:
        """The live replica of ``master``."""
        myid = master.cli("cluster", "myid")
        for n in self.alive():
            if n is not master and _info(n, "replication").get("master_port") == str(master.port):
                return n
        raise RuntimeError(f"master {master.port} ({myid}) has no live replica")

    def healthy(self) -> bool:
        """Every live node sees ``cluster_state:ok`` and every master has a synced replica."""
        alive = self.alive()
        if not all("cluster_state:ok" in n.cli("cluster", "info") for n in alive):
            return False
        masters = self.masters()
        return len(masters) == 3 and all(_has_online_replica(m) for m in masters)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        _wait_until(self.healthy, timeout, "a healthy cluster with replicas")


@pytest.fixture
def redis_cluster_with_replicas() -> Iterator[ClusterWithReplicas]:
    """A cluster for one test (drills kill its nodes): ``redis-cli --cluster create
    --cluster-replicas 1`` over six loopback servers."""
    require_redis()
    assert REDIS_CLI is not None
    workdir = tempfile.mkdtemp(prefix="rs-cluster-ha-")
    nodes: list[RedisServer] = []
    try:
        extra = ["--cluster-announce-ip", "127.0.0.1", "--cluster-replica-validity-factor", "0"]
        nodes.extend(_cluster_node(workdir, 1000, [*extra, *_FAST_SYNC]) for _ in range(6))
        _cluster_create(nodes, replicas=1)
        cluster = ClusterWithReplicas(nodes, workdir)
        cluster.wait_healthy()
        yield cluster
    finally:
        for n in nodes:
            n.kill()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class SentinelServer(RedisServer):
    """A ``redis-server --sentinel`` process monitoring one master."""

    service: str = "drill"
    master_port: int = 0

    def _spawn(self) -> bool:
        assert REDIS_SERVER is not None
        conf = os.path.join(self.workdir, f"sentinel-{self.port}.conf")
        with open(conf, "w") as f:  # sentinel rewrites its config file: one per process
            f.write(
                f"port {self.port}\n"
                "bind 127.0.0.1\n"
                "protected-mode no\n"
                f"dir {self.workdir}\n"
                "sentinel announce-ip 127.0.0.1\n"
                "sentinel resolve-hostnames no\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {self.service} 1000\n"
                f"sentinel failover-timeout {self.service} 3000\n"
                f"sentinel parallel-syncs {self.service} 2\n"
            )
        self.proc = subprocess.Popen(
            [REDIS_SERVER, conf, "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if _ping(self.port, self.proc):
            return True
        self.proc.wait()
        return False


@dataclass
class SentinelDeployment:
    """One master, two replicas and three sentinels (quorum 2) on loopback."""

    service: str
    servers: list[RedisServer]
    sentinels: list[SentinelServer]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def master(self) -> RedisServer:
        """The data server the sentinels currently name as master."""
        for s in self.sentinels:
            if s.proc is None or s.proc.poll() is not None:
                continue
            addr = s.cli("sentinel", "get-master-addr-by-name", self.service).split()
            for server in self.servers:
                if addr and int(addr[-1]) == server.port:
                    return server
        raise RuntimeError("no sentinel names a master")

    def healthy(self) -> bool:
        """Every sentinel knows the two others and two replicas; the master has two synced
        replicas."""
        for s in self.sentinels:
            fields = s.cli("sentinel", "master", self.service).splitlines()
            info = dict(zip(fields[::2], fields[1::2], strict=False))
            if info.get("num-other-sentinels") != "2" or info.get("num-slaves") != "2":
                return False
        master = self.master()
        return int(_info(master, "replication").get("connected_slaves", "0")) >= 2

    def has_online_replica(self) -> bool:
        """The current master has a replica in sync (what ``wait_replicas=1`` writes need)."""
        return _has_online_replica(self.master())


@pytest.fixture
def redis_sentinel() -> Iterator[SentinelDeployment]:
    """Sentinel over a master and two replicas (down after 1 s, failover timeout 3 s)."""
    require_redis()
    workdir = tempfile.mkdtemp(prefix="rs-sentinel-")
    servers: list[RedisServer] = []
    sentinels: list[SentinelServer] = []
    try:
        master = RedisServer(
            free_port(), workdir, ["--replica-announce-ip", "127.0.0.1", *_FAST_SYNC]
        )
        servers.append(master.start())
        for _ in range(2):
            replica = RedisServer(
                free_port(),
                workdir,
                [
                    "--replicaof",
                    "127.0.0.1",
                    str(master.port),
                    "--replica-announce-ip",
                    "127.0.0.1",
                    *_FAST_SYNC,
                ],
            )
            servers.append(replica.start())
        # replicas first: a sentinel then finds them in its first INFO (not 10 s later)
        _wait_until(
            lambda: int(_info(master, "replication").get("connected_slaves", "0")) == 2,
            20,
            "two synced replicas",
        )
        for _ in range(3):
            sentinel = SentinelServer(free_port(), workdir, master_port=master.port)
            sentinels.append(cast_sentinel(sentinel.start()))
        deployment = SentinelDeployment("drill", servers, sentinels)
        _wait_until(deployment.healthy, 30, "three sentinels that know each other")
        yield deployment
    finally:
        for s in [*sentinels, *servers]:
            s.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def cast_sentinel(server: RedisServer) -> SentinelServer:
    assert isinstance(server, SentinelServer)
    return server
