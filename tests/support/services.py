"""The real services the tests use: a database per run on the machine's PostgreSQL,
redis-servers of their own for fault tests, and Supabase's roles. PgBouncer is
started by ``convmem_bench.pgbouncer`` (the benchmark runs one too)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis
import redis.cluster

from convmem_bench import postgrest_standin as standin
from convmem_bench.pgbouncer import free_port, wait_for_port

PG_HOST = os.environ.get("CONVMEM_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CONVMEM_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("CONVMEM_TEST_PG_USER", "postgres")


def pg_url(dbname: str, *, port: int = PG_PORT, host: str = PG_HOST, **query: str) -> str:
    suffix = "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
    return f"postgresql://{PG_USER}@{host}:{port}/{dbname}{suffix}"


def admin_connect(dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(pg_url(dbname), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise RuntimeError(
            f"PostgreSQL is not answering on {PG_HOST}:{PG_PORT} ({exc}). Start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        ) from exc


def create_database() -> str:
    """A new database of its own for this test run; returns its name."""
    name = f"convmem_test_{uuid.uuid4().hex[:12]}"
    with admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def delete_prefixed(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` on a Redis or (``redis+cluster://``) a cluster."""
    if url.startswith("redis+cluster://"):
        host, _, port = url.removeprefix("redis+cluster://").split(",")[0].partition(":")
        cluster = redis.cluster.RedisCluster(host=host, port=int(port))
        try:
            for key in cluster.scan_iter(match=f"{prefix}*", count=1000):
                cluster.delete(key)
        finally:
            cluster.close()
        return
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
    finally:
        client.close()


@dataclass(frozen=True)
class _ClusterNode:
    """One line of ``CLUSTER NODES``: id, address, flags, primary, slot ranges."""

    node_id: str
    port: int
    flags: str
    primary_id: str
    slots: list[tuple[int, int]]

    @property
    def serving(self) -> bool:
        """A primary that is not failed."""
        return "master" in self.flags and "fail" not in self.flags

    @classmethod
    def parse(cls, line: str) -> _ClusterNode:
        fields = line.split()
        slots = []
        for served in fields[8:]:
            low, _, high = served.partition("-")
            if low.isdigit():  # not a slot being migrated ([…])
                slots.append((int(low), int(high or low)))
        port = int(fields[1].split(":")[1].split("@")[0])
        return cls(fields[0], port, fields[2], fields[3], slots)


class RedisClusterServers:
    """A Redis Cluster of the test's own: three primaries and three replicas, each a
    ``redis-server --cluster-enabled yes`` on a free loopback port, joined by
    ``redis-cli --cluster create``. Nodes may be killed and failed over."""

    def __init__(self, nodes: int = 6) -> None:
        binary = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError("redis-server/redis-cli are not installed (Debian redis-server)")
        self.binary, self.cli = binary, cli
        self.ports = [free_port() for _ in range(nodes)]
        self.dir = Path(tempfile.mkdtemp(prefix="convmem-redis-cluster-"))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:3])

    def start(self) -> RedisClusterServers:
        """Start and join the nodes; on any failure, stop whatever was started."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> RedisClusterServers:
        for port in self.ports:
            self._start_node(port)
        created = subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed: {created.stdout}{created.stderr}"
            )
        self.wait_ok()
        return self

    def _start_node(self, port: int) -> None:
        folder = self.dir / str(port)
        folder.mkdir(exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                # The bus defaults to port + 10000, past 65535 for a high free port.
                "--cluster-port",
                str(free_port()),
                "--cluster-node-timeout",
                "1000",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port)

    def cli_call(self, port: int, *args: str) -> str:
        done = subprocess.run(
            [self.cli, "-p", str(port), *args], capture_output=True, text=True, timeout=10
        )
        return done.stdout

    def _nodes(self) -> list[_ClusterNode]:
        """The cluster as a live node sees it (``CLUSTER NODES``)."""
        for port in self.processes:
            lines = self.cli_call(port, "cluster", "nodes").splitlines()
            if lines:
                return [_ClusterNode.parse(line) for line in lines]
        return []

    def primaries(self) -> dict[int, str]:
        """Live primaries: port -> node id."""
        return {n.port: n.node_id for n in self._nodes() if n.serving}

    def primary_for(self, key: str) -> int:
        """The port of the primary serving ``key``'s slot."""
        slot = int(self.cli_call(next(iter(self.processes)), "cluster", "keyslot", key))
        for node in self._nodes():
            if node.serving and any(low <= slot <= high for low, high in node.slots):
                return node.port
        raise RuntimeError(f"no primary serves slot {slot}")

    def replica_of(self, primary_port: int) -> int:
        nodes = self._nodes()
        primary = next(n.node_id for n in nodes if n.serving and n.port == primary_port)
        for node in nodes:
            if "slave" in node.flags and node.primary_id == primary:
                return node.port
        raise RuntimeError(f"no replica of {primary_port}")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok and sees every slot served."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [self.cli_call(p, "cluster", "info") for p in self.processes]
            if states and all("cluster_state:ok" in s for s in states):
                check = subprocess.run(
                    [self.cli, "--cluster", "check", f"127.0.0.1:{next(iter(self.processes))}"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                if "All 16384 slots covered" in check.stdout and "[ERR]" not in check.stdout:
                    return
            time.sleep(0.1)
        raise TimeoutError("the Redis Cluster did not reach cluster_state:ok")

    def kill(self, port: int) -> None:
        process = self.processes.pop(port)
        process.kill()
        process.wait(10)

    def stop(self) -> None:
        for port in list(self.processes):
            self.kill(port)
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer:
    """A PostgreSQL cluster of the test's own (initdb + pg_ctl, as user postgres) on a free
    port, for fault tests: stopped, hung (every process SIGSTOPped) and restarted without
    touching the machine's shared PostgreSQL."""

    def __init__(self) -> None:
        self.bin = Path(
            subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
        )
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="convmem-pg-"))
        self.data = self.dir / "data"
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to postgres
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> PostgresServer:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )
        return self

    def stop(self) -> None:
        """An immediate shutdown: every connection is cut, as when the server dies."""
        if (self.data / "postmaster.pid").exists():
            self.resume()
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def _pids(self) -> list[int]:
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True
        ).stdout.split()
        return [postmaster, *map(int, children)]

    def pause(self) -> None:
        """Every process of the cluster SIGSTOPped: a hung server with its sockets open."""
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def create_supabase_roles() -> None:
    """The roles every Supabase project has, on the machine's PostgreSQL."""
    with admin_connect() as conn:
        standin.create_supabase_roles(conn)
