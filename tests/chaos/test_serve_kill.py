"""``convmem serve`` SIGKILLed mid-load, then started again on the same store (a SQLite
file; PostgreSQL with Redis): every chat the clients saw acknowledged is there, every
thread's turns are whole (seqs 1..n, its count and version agree; the SQLite file passes
its integrity check), and the restarted server continues the conversations, through
the Redis copies the killed one left."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from convmem_bench.pgbouncer import free_port
from tests.chaos.harness import Outcome, scaled
from tests.support.services import admin_connect, pg_url

CONVERSATIONS = 6


@dataclass(frozen=True)
class Target:
    name: str
    settings: dict[str, str]
    sqlite_file: Path | None = None
    postgres: str | None = None  # the database's name

    def user_turns(self) -> set[tuple[str, str]]:
        """Every stored user turn, and each thread checked whole."""
        query = "SELECT thread_id, content FROM convmem_turns WHERE role = 'user'"
        whole = (
            "SELECT t.id FROM convmem_threads t LEFT JOIN convmem_turns u ON u.thread_id = t.id"
            " GROUP BY t.id, t.version, t.turn_count"
            " HAVING count(u.seq) <> t.turn_count OR coalesce(max(u.seq), 0) <> count(u.seq)"
            " OR t.version <> count(u.seq)"
        )
        if self.sqlite_file is not None:
            with sqlite3.connect(self.sqlite_file) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                assert conn.execute(whole).fetchall() == []
                return {(str(a), str(b)) for a, b in conn.execute(query)}
        assert self.postgres is not None
        with admin_connect(self.postgres) as pg:
            assert pg.execute(whole).fetchall() == []
            return {(str(a), str(b)) for a, b in pg.execute(query)}


@pytest.fixture(params=["sqlite", "postgres+redis"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "sqlite":
        database = tmp_path / "kill.db"
        return Target("SQLite", {"CONVMEM_STORE_URL": f"sqlite:///{database}"}, database)
    name = request.getfixturevalue("clean_pg")
    settings = {
        "CONVMEM_STORE_URL": pg_url(name),
        "CONVMEM_CACHE_URL": request.getfixturevalue("redis_url"),
        "CONVMEM_CACHE_PREFIX": request.getfixturevalue("redis_prefix"),
    }
    return Target("PostgreSQL + Redis", settings, postgres=name)


def start_server(target: Target, port: int) -> subprocess.Popen[bytes]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CONVMEM_", "OPENAI_", "GLM_", "KIMI_"))
    }
    env.update(target.settings)
    env["CONVMEM_MAX_TURNS"] = "100000"
    process = subprocess.Popen(
        [sys.executable, "-m", "convmem", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx2.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("convmem serve did not start")


async def converse(url: str, name: str, acked: list[tuple[str, str]], failures: list[str]) -> None:
    """One client: a conversation continued until the server goes away."""
    continuation: str | None = None
    n = 0
    try:
        async with (
            httpx2.AsyncClient() as http,
            Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client,
        ):
            while True:
                prompt = f"{name} says {n}"
                arguments: dict[str, Any] = {"prompt": prompt}
                if continuation:
                    arguments["continuation_id"] = continuation
                result = await client.call_tool("chat", arguments)
                if result.is_error:
                    failures.append(str(result.content))
                    return
                structured = result.structured_content
                assert structured is not None
                continuation = str(structured["continuation_id"])
                acked.append((continuation, prompt))
                n += 1
    except Exception as exc:  # the server was killed under this client: expected
        failures.append(type(exc).__name__)


def test_serve_sigkilled_mid_load_loses_no_acknowledged_turn(target: Target) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(target, port)
    acked: list[tuple[str, str]] = []
    failures: list[str] = []
    load_seconds = scaled(2.0, 10.0)

    async def load() -> None:
        tasks = [
            asyncio.create_task(converse(url, f"c{i}", acked, failures))
            for i in range(CONVERSATIONS)
        ]
        await asyncio.sleep(load_seconds)
        server.send_signal(signal.SIGKILL)  # mid-load: calls are in flight
        await asyncio.wait(tasks, timeout=30)

    asyncio.run(load())
    server.wait(10)
    assert acked, "no chat was acknowledged before the kill"

    stored = target.user_turns()
    lost = [pair for pair in acked if pair not in stored]

    restarted = start_server(target, port)
    try:

        async def resume() -> str:
            continuation = acked[-1][0]
            async with (
                httpx2.AsyncClient() as http,
                Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client,
            ):
                result = await client.call_tool(
                    "chat", {"prompt": "after the crash", "continuation_id": continuation}
                )
                assert not result.is_error, result.content
                return str(result.content[0].text)  # type: ignore[union-attr]

        reply = asyncio.run(resume())
    finally:
        restarted.terminate()
        restarted.wait(10)
    Outcome(
        scenario=f"convmem serve SIGKILLed mid-load, restarted ({target.name})",
        load=f"{CONVERSATIONS} MCP clients chatting for {load_seconds:g} s",
        faults="SIGKILL of the server process",
        calls=len(acked) + len(failures),
        failed_calls=len(failures),
        acknowledged_turns=2 * len(acked),
        lost_turns=len(lost),
        crashes=0,
    ).record()
    assert lost == []
    assert "earlier" in reply  # the restarted server continued with the stored history
