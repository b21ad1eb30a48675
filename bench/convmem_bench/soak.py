"""``make soak``: many concurrent MCP clients through HAProxy against 1, 2 and 3
``convmem serve`` instances on one PostgreSQL and one Redis, for a set time each.

Each client (the official SDK over Streamable HTTP) chats on threads picked by a Zipf
law from a popular set, continuing each with its ``continuation_id`` (a thread that
fills up is replaced by a new one). The model is the offline echo provider, so what is
measured is convmem and its transport. Reported per instance count: requests/s, p50 and
p99 latency, errors, each instance's resident memory after the warm-up and at the end,
and the Redis and PostgreSQL connections in use at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx2
import psycopg
import redis
import typer
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from convmem_bench.haproxy import HAProxy
from convmem_bench.pgbouncer import free_port
from convmem_bench.sections import Section

TOKEN = "soak-token"
SECTION = Section("<!-- soak: written by make soak -->", "<!-- /soak -->")


@dataclass
class SoakResult:
    instances: int
    clients: int
    seconds: float
    warm_up_seconds: float
    requests: int
    errors: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    rss_start_mib: list[float] = field(default_factory=list)  # per instance, after warm-up
    rss_end_mib: list[float] = field(default_factory=list)
    redis_clients: int = 0
    postgres_connections: int = 0


@contextlib.contextmanager
def instances(count: int, env: dict[str, str]) -> Iterator[dict[str, Instance]]:
    """``count`` convmem serve processes, each listening on a port of its own."""
    started: dict[str, Instance] = {}
    logs = Path(tempfile.mkdtemp(prefix="convmem-soak-"))
    try:
        for n in range(count):
            name = f"i{n + 1}"
            port, instance = _start(name, env, logs)
            started[f"{name}:{port}"] = instance
        yield started
    finally:
        for instance in started.values():
            instance.process.terminate()
        for instance in started.values():
            instance.process.wait(10)


def _start(name: str, env: dict[str, str], logs: Path, attempts: int = 5) -> tuple[int, Instance]:
    """One ``convmem serve`` on a free port, once it says it listens there and answers.

    A port free when chosen may be taken before the server binds it (on a busy machine
    another test's server, or an outgoing connection, gets it first): the server then
    exits, and a /health answer on that port would come from the other process. So it
    counts as started only once its own output says it listens, and a server that exits
    first is started again on another port.
    """
    log = logs / f"{name}.log"
    for _ in range(attempts):
        port = free_port()
        with log.open("wb") as output:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "convmem", "serve", "--port", str(port)],
                env={**env, "COLUMNS": "500"},  # its one line, unwrapped
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        instance = Instance(process, log)
        if instance.wait_listening(port):
            _wait_healthy(f"http://127.0.0.1:{port}", process)
            return port, instance
    raise RuntimeError(f"convmem serve never got a port: {log.read_text(errors='replace')}")


def _wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(httpx2.HTTPError):
            if httpx2.get(f"{url}/health", timeout=1).status_code == 200:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"convmem serve at {url} did not start")
        time.sleep(0.1)


@dataclass(frozen=True)
class Instance:
    """A ``convmem serve`` process and the file its output goes to."""

    process: subprocess.Popen[bytes]
    log: Path

    def wait_listening(self, port: int, seconds: float = 60.0) -> bool:
        """True once it says it listens on ``port``; False if it exits first."""
        said = f":{port}: MCP at /mcp"
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if said in self.log.read_text(errors="replace"):
                return True
            if self.process.poll() is not None:
                return False
            time.sleep(0.05)
        self.process.kill()
        raise RuntimeError(f"convmem serve said nothing in {seconds:.0f} s: {self.log}")

    def rss_mib(self) -> float:
        """Its resident memory; one that has exited is an error, with what it wrote last
        (read from /proc, a process that exited has no resident memory to report)."""
        if self.process.poll() is None:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(
            f"convmem serve (pid {self.process.pid}) exited ({self.process.wait()}): {tail}"
        )


class Load:
    """Concurrent conversations over a Zipf-popular set of threads."""

    def __init__(self, url: str, clients: int, threads: int, seed: int = 7) -> None:
        self.url = url
        self.clients = clients
        self.threads: list[str | None] = [None] * threads
        weights = [1 / (rank + 1) for rank in range(threads)]
        self.random = random.Random(seed)
        self.weights = weights
        self.latencies: list[float] = []
        self.finished: list[float] = []  # when each request ended (monotonic), for windows
        self.errors = 0
        self.error_times: list[float] = []
        self.failures: list[str] = []  # what went wrong, for the report
        self.acked: dict[str, int] = {}  # thread id: chats acknowledged on it
        self.acked_prompts: list[tuple[str, str]] = []  # one in 50, checked one by one

    async def run(self, seconds: float) -> None:
        stop = time.monotonic() + seconds
        await asyncio.gather(*(self._client(stop) for _ in range(self.clients)))

    async def _client(self, stop: float) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        while time.monotonic() < stop:
            try:
                async with (
                    httpx2.AsyncClient(headers=headers, timeout=60) as http,
                    Client(streamable_http_client(f"{self.url}/mcp", http_client=http)) as mcp,
                ):
                    while time.monotonic() < stop:
                        await self._request(mcp)
            except Exception as exc:
                self._failed(repr(exc))  # the client broke: a new one takes over

    async def _request(self, mcp: Client) -> None:
        slot = self.random.choices(range(len(self.threads)), self.weights)[0]
        arguments: dict[str, Any] = {"prompt": f"soak {uuid.uuid4().hex[:8]}"}
        if self.threads[slot] is not None:
            arguments["continuation_id"] = self.threads[slot]
        started = time.perf_counter()
        result = await mcp.call_tool("chat", arguments)
        elapsed = time.perf_counter() - started
        if result.is_error:
            text = str(result.content)
            # Two clients on one popular thread: one may fill it under the other. That
            # is the workload, not a failure: the thread is replaced by a new one.
            if "is full (it holds at most" not in text:
                self._failed(text)
            self.threads[slot] = None
            return
        self.latencies.append(elapsed)
        self.finished.append(time.monotonic())
        structured = result.structured_content or {}
        thread_id = str(structured.get("continuation_id"))
        self.acked[thread_id] = self.acked.get(thread_id, 0) + 1
        if len(self.latencies) % 50 == 0:
            self.acked_prompts.append((thread_id, str(arguments["prompt"])))
        full = structured.get("remaining_turns", 0) < 2
        self.threads[slot] = None if full else thread_id

    def _failed(self, what: str) -> None:
        self.errors += 1
        self.error_times.append(time.monotonic())
        if len(self.failures) < 1000:
            self.failures.append(what[:300])


async def soak_once(
    count: int, env: dict[str, str], *, clients: int, seconds: float, warm_up: float, dsn: str
) -> SoakResult:
    with instances(count, env) as running:
        backends = {name.split(":")[0]: int(name.split(":")[1]) for name in running}
        balancer = HAProxy(backends).start()
        try:
            warm = Load(balancer.url, clients, threads=64)
            await warm.run(warm_up)
            rss_start = [i.rss_mib() for i in running.values()]
            load = Load(balancer.url, clients, threads=64, seed=11)
            started = time.monotonic()
            await load.run(seconds)
            took = time.monotonic() - started
            rss_end = [i.rss_mib() for i in running.values()]
            redis_clients = _redis_clients(env["CONVMEM_CACHE_URL"])
            pg_connections = _pg_connections(dsn)
        finally:
            balancer.stop()
    latencies = sorted(load.latencies) or [0.0]
    return SoakResult(
        instances=count,
        clients=clients,
        seconds=round(took, 1),
        warm_up_seconds=warm_up,
        requests=len(load.latencies),
        errors=load.errors,
        requests_per_second=len(load.latencies) / took,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        rss_start_mib=[round(r, 1) for r in rss_start],
        rss_end_mib=[round(r, 1) for r in rss_end],
        redis_clients=redis_clients,
        postgres_connections=pg_connections,
    )


def _redis_clients(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        info: dict[str, Any] = client.info("clients")
        return int(info["connected_clients"])
    finally:
        client.close()


def _pg_connections(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        database = conn.info.dbname
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
        return int(row[0]) if row else 0


def markdown(results: list[SoakResult]) -> str:
    first = results[0]
    lines = [
        SECTION.start,
        "",
        f"## Soak: {first.clients} concurrent MCP clients through HAProxy, "
        f"{first.seconds:g} s per row",
        "",
        "`make soak` (`convmem_bench.soak`): the official MCP client over Streamable HTTP,"
        " chat with continuation over 64 Zipf-popular threads, the offline echo model;"
        " every instance on one PostgreSQL and one Redis, on this one machine (load,"
        " balancer, instances and both services share its cores, so more instances cannot"
        " add throughput here; they show that nothing is lost or serialised by spreading"
        f" the load). RSS per instance after a {first.warm_up_seconds:g} s warm-up (RSS"
        " climbs fast during the first ~30 s, while pools, L1 and the allocator fill) and"
        " at the end; connections in use at the end.",
        "",
        "| instances | requests/s | p50 | p99 | errors | RSS start → end (MiB, per instance)"
        " | Redis clients | PostgreSQL connections |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        pairs = zip(r.rss_start_mib, r.rss_end_mib, strict=True)
        rss = ", ".join(f"{a:.0f} → {b:.0f}" for a, b in pairs)
        lines.append(
            f"| {r.instances} | {r.requests_per_second:.0f} | {r.p50_ms:.1f} ms | "
            f"{r.p99_ms:.1f} ms | {r.errors} | {rss} | {r.redis_clients} | "
            f"{r.postgres_connections} |"
        )
    lines += ["", SECTION.end]
    return "\n".join(lines)


app = typer.Typer(add_completion=False)


@app.command()
def soak(
    seconds: Annotated[float, typer.Option(help="Load time per instance count.")] = 60.0,
    # RSS climbs fast for the first ~30 s (pools, L1, the allocator): measure after.
    warm_up: Annotated[float, typer.Option(help="Warm-up before each measured run.")] = 30.0,
    clients: Annotated[int, typer.Option(help="Concurrent MCP clients.")] = 32,
    counts: Annotated[str, typer.Option("--instances", help="Instance counts, e.g. 1,2,3.")] = (
        "1,2,3"
    ),
    admin_dsn: Annotated[
        str, typer.Option(envvar="CONVMEM_BENCH_ADMIN_DSN")
    ] = "postgresql://postgres@127.0.0.1:5432/postgres",
    redis_url: Annotated[
        str, typer.Option("--redis", envvar="CONVMEM_BENCH_REDIS_URL")
    ] = "redis://127.0.0.1:6379/0",
    out: Annotated[Path | None, typer.Option(help="Write soak.json here.")] = None,
    document: Annotated[
        Path | None, typer.Option(help="Write the soak section into this BENCHMARKS.md.")
    ] = None,
) -> None:
    """Soak three (or N) convmem serve instances behind HAProxy."""
    database = f"convmem_soak_{uuid.uuid4().hex[:8]}"
    prefix = f"convmem-soak-{uuid.uuid4().hex[:8]}:"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    dsn = admin_dsn.rsplit("/", 1)[0] + f"/{database}"
    env = {
        **os.environ,
        "CONVMEM_STORE_URL": dsn,
        "CONVMEM_CACHE_URL": redis_url,
        "CONVMEM_CACHE_PREFIX": prefix,
        "CONVMEM_TOKEN": TOKEN,
        "CONVMEM_PROVIDER": "echo",
    }
    results = []
    try:
        for count in (int(c) for c in counts.split(",")):
            result = asyncio.run(
                soak_once(count, env, clients=clients, seconds=seconds, warm_up=warm_up, dsn=dsn)
            )
            print(
                f"{count} instance(s): {result.requests_per_second:.0f} req/s, "
                f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                f"{result.errors} errors, RSS {result.rss_start_mib} → {result.rss_end_mib} MiB",
                flush=True,
            )
            results.append(result)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "soak.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    if document is not None:
        SECTION.write(document, markdown(results))


if __name__ == "__main__":
    app()
