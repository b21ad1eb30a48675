"""A rolling upgrade and its rollback, for real: the previous release (installed from git
in a venv of its own) and this one serve side by side on one PostgreSQL and one Redis,
with conversations alternating between them, while ``convmem migrate`` upgrades the
schema under the old instance's load; then the new instance is stopped and the old one
carries on alone. No call fails, no acknowledged turn is lost, and no reply is built
from a stale history (each reply says how many earlier turns it was given)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from convmem_bench.pgbouncer import free_port
from tests.support.previous_release import previous_release_python
from tests.support.services import admin_connect, create_database, drop_database, pg_url

CONVERSATIONS = 4
GIVEN = re.compile(r"I was given (\d+) earlier turn")


@pytest.fixture
def database() -> Iterator[str]:
    name = create_database()
    yield name
    drop_database(name)


def _env(store_url: str, redis_url: str, prefix: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CONVMEM_", "OPENAI_", "GLM_", "KIMI_"))
    }
    return {
        **env,
        "CONVMEM_STORE_URL": store_url,
        "CONVMEM_CACHE_URL": redis_url,
        "CONVMEM_CACHE_PREFIX": prefix,
        "COLUMNS": "500",
    }


@contextmanager
def serving(python: Path | str, env: dict[str, str]) -> Iterator[str]:
    """``convmem serve`` of the given interpreter's convmem, once it says it listens."""
    port = free_port()
    process = subprocess.Popen(
        [str(python), "-m", "convmem", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output = []
    for line in process.stdout:  # the line comes once it has bound its port
        output.append(line)
        if f":{port}: MCP at /mcp" in line:
            break
    else:
        raise RuntimeError(f"convmem serve ({python}) did not start: {''.join(output)}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.communicate(timeout=10)


def _metric(text: str, name: str) -> float:
    (value,) = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(value)


class Conversations:
    """``CONVERSATIONS`` conversations, moved forward one exchange at a time."""

    def __init__(self) -> None:
        self.ids: list[str | None] = [None] * CONVERSATIONS
        self.exchanges = [0] * CONVERSATIONS
        self.failures: list[str] = []
        self.stale: list[str] = []

    async def round(self, urls: list[str]) -> None:
        """One exchange of every conversation at once, conversation ``i`` on
        ``urls[(i + exchange) % len(urls)]``: each alternates between the instances."""
        await asyncio.gather(
            *(
                self._exchange(i, urls[(i + self.exchanges[i]) % len(urls)])
                for i in range(CONVERSATIONS)
            )
        )

    async def _exchange(self, i: int, url: str) -> None:
        arguments: dict[str, object] = {"prompt": f"conversation {i}, exchange {self.exchanges[i]}"}
        if self.ids[i] is not None:
            arguments["continuation_id"] = self.ids[i]
        try:
            async with (
                httpx2.AsyncClient(timeout=30) as http,
                Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client,
            ):
                result = await client.call_tool("chat", arguments)
        except Exception as exc:
            self.failures.append(f"{url}: {exc!r}")
            return
        if result.is_error:
            self.failures.append(f"{url}: {result.content}")
            return
        structured = result.structured_content or {}
        given = GIVEN.search(str(structured.get("content", "")) + str(result.content))
        expected = 2 * self.exchanges[i]
        if given is None or int(given[1]) != expected:
            self.stale.append(f"{url}: conversation {i} given {given and given[1]}, not {expected}")
        self.ids[i] = str(structured["continuation_id"])
        self.exchanges[i] += 1


async def test_old_and_new_side_by_side_through_the_migration_and_the_rollback(
    database: str, redis_url: str, redis_prefix: str
) -> None:
    old_python = previous_release_python()
    env = _env(pg_url(database), redis_url, redis_prefix)
    talk = Conversations()
    with serving(old_python, env) as old:  # it migrates the new database to its schema
        for _ in range(3):
            await talk.round([old])
        # The upgrade's first step, under the old instance's load: the schema.
        migrate = asyncio.create_task(
            asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "convmem", "migrate", "--store", pg_url(database)],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
        )
        while not migrate.done():
            await talk.round([old])
        migrated = await migrate
        assert migrated.returncode == 0, migrated.stderr
        assert "applied 0011_restore" in migrated.stdout
        with serving(sys.executable, env) as new:
            for _ in range(8):
                await talk.round([old, new])
            metrics = httpx2.get(f"{new}/metrics").text
            # Roll back: the new instance goes (no call is in flight between rounds).
        for _ in range(3):
            await talk.round([old])

    assert talk.failures == []
    assert talk.stale == []
    # The new instance read the old one's Redis copies, and none failed to decode.
    assert _metric(metrics, 'convmem_cache_hits_total{layer="l2"}') > 0
    assert _metric(metrics, "convmem_l2_corrupt_total") == 0
    rounds = talk.exchanges[0]
    assert talk.exchanges == [rounds] * CONVERSATIONS
    with admin_connect(database) as pg:
        rows = pg.execute(
            "SELECT thread_id::text, count(*) FROM convmem_turns GROUP BY thread_id"
        ).fetchall()
    counts = {str(thread_id): int(str(n)) for thread_id, n in rows}
    assert {talk.ids[i]: 2 * rounds for i in range(CONVERSATIONS)} == counts
