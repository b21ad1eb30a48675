"""The long soak (``make soak-long``, an hour by default): three ``convmem serve``
instances behind HAProxy on one PostgreSQL and a Redis of their own, a steady load of
MCP clients, and a fault every few minutes, in turn: Redis killed and restarted, Redis
hung (SIGSTOP) for a few seconds, every store connection cut (``pg_terminate_backend``),
and one instance SIGKILLed and started again.

Sampled every few seconds: each instance's resident memory and open file descriptors,
Redis clients, PostgreSQL connections, and the window's latency and errors. At the end,
every chat a client saw acknowledged is looked for in the store. The figures go into
RELIABILITY.md (between markers that ``make chaos`` carries over).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import psycopg
import typer

from convmem_bench.haproxy import HAProxy
from convmem_bench.redis_server import RedisServer
from convmem_bench.sections import Section
from convmem_bench.soak import TOKEN, Instance, Load, _pg_connections, _redis_clients, _start

SECTION = Section("<!-- endurance: written by make soak-long -->", "<!-- /endurance -->")
FAULTS = ("redis restart", "redis hang", "store connections cut", "instance SIGKILL")


@dataclass
class Sample:
    at_s: float  # since the measured load began
    rss_mib: list[float]
    fds: list[int]
    redis_clients: int
    postgres_connections: int
    requests: int  # finished in this window
    errors: int
    p50_ms: float
    p99_ms: float


@dataclass
class Endurance:
    minutes: float
    clients: int
    instances: int
    fault_every_s: float
    requests: int = 0
    errors: int = 0
    errors_outside_faults: int = 0
    acknowledged_chats: int = 0
    lost_chats: int = 0
    checked_prompts: int = 0
    warm_up_s: float = 60.0
    faults: list[tuple[float, str, int]] = field(default_factory=list)  # at, what, errors
    samples: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class Fleet:
    """The instances, by HAProxy backend name, and how to restart one on its port."""

    def __init__(self, count: int, env: dict[str, str]) -> None:
        self.env = env
        self.logs = Path(tempfile.mkdtemp(prefix="convmem-endurance-"))
        self.members: dict[str, tuple[int, Instance]] = {}
        for n in range(count):
            name = f"i{n + 1}"
            port, instance = _start(name, env, self.logs)
            self.members[name] = (port, instance)

    def backends(self) -> dict[str, int]:
        return {name: port for name, (port, _) in self.members.items()}

    def kill_and_restart(self, name: str) -> None:
        port, instance = self.members[name]
        instance.process.send_signal(signal.SIGKILL)
        instance.process.wait(10)
        log = self.logs / f"{name}.log"
        with log.open("ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "convmem", "serve", "--port", str(port)],
                env={**self.env, "COLUMNS": "500"},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        restarted = Instance(process, log)
        if not restarted.wait_listening(port):
            raise RuntimeError(f"{name} did not come back on port {port}: {log}")
        self.members[name] = (port, restarted)

    def stop(self) -> None:
        for _, instance in self.members.values():
            instance.process.terminate()
        for _, instance in self.members.values():
            instance.process.wait(10)


def _fds(instance: Instance) -> int:
    return len(os.listdir(f"/proc/{instance.process.pid}/fd"))


async def _inject(fault: str, redis_server: RedisServer, fleet: Fleet, dsn: str) -> None:
    if fault == "redis restart":
        redis_server.kill()
        await asyncio.sleep(2)
        redis_server.start()
    elif fault == "redis hang":
        redis_server.pause()
        await asyncio.sleep(3)
        redis_server.resume()
    elif fault == "store connections cut":
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
    else:
        await asyncio.to_thread(fleet.kill_and_restart, "i1")


async def endure(
    *,
    minutes: float,
    clients: int,
    count: int,
    fault_every: float,
    sample_every: float,
    env: dict[str, str],
    dsn: str,
    redis_server: RedisServer,
) -> Endurance:
    report = Endurance(minutes, clients, count, fault_every)
    fleet = Fleet(count, env)
    balancer = HAProxy(fleet.backends()).start()
    try:
        load = Load(balancer.url, clients, threads=256, seed=13)
        started = time.monotonic()
        seconds = minutes * 60
        running = asyncio.create_task(load.run(seconds))
        fault_windows: list[tuple[float, float]] = []
        next_fault, next_sample, fault_index, seen = fault_every, sample_every, 0, 0
        while not running.done():
            await asyncio.sleep(0.5)
            now = time.monotonic() - started
            if now >= next_fault and now < seconds - fault_every / 2:
                fault = FAULTS[fault_index % len(FAULTS)]
                fault_index += 1
                began = time.monotonic()
                await _inject(fault, redis_server, fleet, dsn)
                # calls may fail while it lasts and shortly after (an instance killed
                # under its clients, the balancer's next health check)
                fault_windows.append((began, time.monotonic() + 5))
                report.faults.append((round(now, 1), fault, 0))
                next_fault += fault_every
            if now >= next_sample:
                seen = _sample(report, load, fleet, env, dsn, started, seen, sample_every)
                next_sample += sample_every
        await running
        report.requests = len(load.latencies)
        report.errors = load.errors
        report.errors_outside_faults = sum(
            1 for t in load.error_times if not any(a <= t <= b for a, b in fault_windows)
        )
        report.faults = [
            (at, fault, sum(1 for t in load.error_times if a <= t <= b))
            for (at, fault, _), (a, b) in zip(report.faults, fault_windows, strict=True)
        ]
        report.failures = load.failures[:20]
    finally:
        balancer.stop()
        fleet.stop()
    _check_acknowledged(report, load, dsn)
    return report


def _sample(
    report: Endurance,
    load: Load,
    fleet: Fleet,
    env: dict[str, str],
    dsn: str,
    started: float,
    seen: int,
    window: float,
) -> int:
    """One sample; returns how many finished requests it has accounted for."""
    latencies = sorted(load.latencies[seen:])
    cutoff = time.monotonic() - window
    errors = sum(1 for t in load.error_times if t >= cutoff)
    instances = [instance for _, instance in fleet.members.values()]
    redis_clients = -1  # not known: Redis may be the fault of the moment
    with contextlib.suppress(Exception):
        redis_clients = _redis_clients(env["CONVMEM_CACHE_URL"])
    report.samples.append(
        Sample(
            at_s=round(time.monotonic() - started, 1),
            rss_mib=[round(i.rss_mib(), 1) for i in instances],
            fds=[_fds(i) for i in instances],
            redis_clients=redis_clients,
            postgres_connections=_pg_connections(dsn),
            requests=len(latencies),
            errors=errors,
            p50_ms=round(statistics.median(latencies) * 1000, 1) if latencies else 0.0,
            p99_ms=round(latencies[int(len(latencies) * 0.99)] * 1000, 1) if latencies else 0.0,
        )
    )
    return seen + len(latencies)


def _check_acknowledged(report: Endurance, load: Load, dsn: str) -> None:
    """Every acknowledged chat is in the store: per thread, at least as many user turns
    as chats acknowledged (an unacknowledged one may have committed too), and each
    sampled prompt word for word."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT thread_id::text, count(*) FROM convmem_turns WHERE role = 'user'"
            " GROUP BY thread_id"
        ).fetchall()
        stored = {str(thread_id): int(str(n)) for thread_id, n in rows}
        report.acknowledged_chats = sum(load.acked.values())
        report.lost_chats = sum(
            max(0, acked - stored.get(thread_id, 0)) for thread_id, acked in load.acked.items()
        )
        for thread_id, prompt in load.acked_prompts:
            found = conn.execute(
                "SELECT 1 FROM convmem_turns WHERE thread_id = %s AND content = %s",
                (thread_id, prompt),
            ).fetchone()
            if found is None:
                report.lost_chats += 1
        report.checked_prompts = len(load.acked_prompts)


def _flat(values: list[float]) -> str:
    """First tenth against last tenth of the run (medians): what drifted."""
    tenth = max(1, len(values) // 10)
    first, last = statistics.median(values[:tenth]), statistics.median(values[-tenth:])
    return f"{first:.0f} → {last:.0f}"


def markdown(report: Endurance) -> str:
    # (the first minute fills pools, L1 and the allocator: drift is measured after it)
    samples = [s for s in report.samples if s.at_s >= report.warm_up_s] or report.samples
    quiet = [s for s in samples if s.errors == 0 and s.requests]
    known_redis = [s for s in samples if s.redis_clients >= 0]
    per_instance = len(samples[0].rss_mib) if samples else 0
    rss = ", ".join(_flat([s.rss_mib[i] for s in samples]) for i in range(per_instance))
    fds = ", ".join(_flat([float(s.fds[i]) for s in samples]) for i in range(per_instance))
    lines = [
        SECTION.start,
        "",
        f"## Endurance: {report.minutes:g} minutes, {report.instances} instances behind"
        f" HAProxy, {report.clients} clients, a fault every {report.fault_every_s:g} s",
        "",
        "`make soak-long` (`convmem_bench.endurance`): MCP clients chatting with"
        " continuation over 256 Zipf-popular threads (the offline echo model) through"
        " HAProxy, on one PostgreSQL and a Redis of the run's own; a fault every few"
        f" minutes, in turn: {', '.join(FAULTS)} ({len(report.faults)} in all). Drift is the"
        " median of the first tenth of the samples against the last tenth, after a"
        f" {report.warm_up_s:g} s warm-up.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| requests · errors (within 5 s of a fault) · errors otherwise | {report.requests}"
        f" · {report.errors - report.errors_outside_faults} · {report.errors_outside_faults} |",
        f"| acknowledged chats · missing from the store (per-thread counts and"
        f" {report.checked_prompts} prompts checked word for word) | {report.acknowledged_chats}"
        f" · {report.lost_chats} |",
        f"| RSS per instance, MiB (first → last tenth) | {rss} |",
        f"| open file descriptors per instance | {fds} |",
        f"| Redis clients | {_flat([float(s.redis_clients) for s in known_redis])} |",
        f"| PostgreSQL connections | {_flat([float(s.postgres_connections) for s in samples])} |",
        f"| p50 / p99 latency of windows without errors, ms | {_flat([s.p50_ms for s in quiet])}"
        f" / {_flat([s.p99_ms for s in quiet])} |",
        "",
        "Failed calls per kind of fault (calls in flight when it struck, or sent before the"
        " balancer's next health check):",
        "",
        "| fault | times | failed calls |",
        "|---|---|---|",
    ]
    for kind in FAULTS:
        struck = [errors for _, fault, errors in report.faults if fault == kind]
        lines.append(f"| {kind} | {len(struck)} | {sum(struck)} |")
    lines += ["", SECTION.end]
    return "\n".join(lines)


app = typer.Typer(add_completion=False)


@app.command()
def main(
    minutes: Annotated[float, typer.Option(help="How long the load runs.")] = 60.0,
    clients: Annotated[int, typer.Option(help="Concurrent MCP clients.")] = 16,
    count: Annotated[int, typer.Option("--instances", help="convmem serve instances.")] = 3,
    fault_every: Annotated[float, typer.Option(help="Seconds between faults.")] = 180.0,
    sample_every: Annotated[float, typer.Option(help="Seconds between samples.")] = 10.0,
    admin_dsn: Annotated[
        str, typer.Option(envvar="CONVMEM_BENCH_ADMIN_DSN")
    ] = "postgresql://postgres@127.0.0.1:5432/postgres",
    out: Annotated[Path | None, typer.Option(help="Write endurance.json here.")] = None,
    document: Annotated[
        Path | None, typer.Option(help="Write the section into this RELIABILITY.md.")
    ] = None,
) -> None:
    """An hour (by default) of steady load with faults; fails if a chat was lost."""
    database = f"convmem_endurance_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    dsn = admin_dsn.rsplit("/", 1)[0] + f"/{database}"
    redis_server = RedisServer().start()
    env = {
        **os.environ,
        "CONVMEM_STORE_URL": dsn,
        "CONVMEM_CACHE_URL": redis_server.url,
        "CONVMEM_TOKEN": TOKEN,
        "CONVMEM_PROVIDER": "echo",
    }
    try:
        report = asyncio.run(
            endure(
                minutes=minutes,
                clients=clients,
                count=count,
                fault_every=fault_every,
                sample_every=sample_every,
                env=env,
                dsn=dsn,
                redis_server=redis_server,
            )
        )
    finally:
        redis_server.stop()
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    print(
        f"{report.requests} requests, {report.errors} errors"
        f" ({report.errors_outside_faults} outside faults), {report.acknowledged_chats}"
        f" acknowledged, {report.lost_chats} lost, {len(report.faults)} faults",
        flush=True,
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "endurance.json").write_text(json.dumps(asdict(report), indent=2))
    if document is not None:
        SECTION.write(document, markdown(report))
    if report.lost_chats or report.errors_outside_faults:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
