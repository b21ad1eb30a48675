"""pal-mcp-server from PyPI, run by ``convmem pal`` as a stdio subprocess and driven by
the official MCP client: pal's own ``chat`` tool, its model the local chat stand-in
(pal's custom provider pointed at it). Conversations outlive the pal process and are
shared by two pal processes on one PostgreSQL and Redis."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from convmem_bench.chat_standin import ChatCompletionsStandIn
from tests.support.services import pg_url

MODEL = "local-llama"  # declared by pal's own custom_models.json for its custom provider


@pytest.fixture(scope="module")
def standin() -> Iterator[ChatCompletionsStandIn]:
    server = ChatCompletionsStandIn().start()
    yield server
    server.stop()


def pal_env(standin: ChatCompletionsStandIn, **settings: str) -> dict[str, str]:
    return {
        **os.environ,
        "CUSTOM_API_URL": standin.base_url,
        "CUSTOM_API_KEY": "sk-standin",
        "DEFAULT_MODEL": MODEL,
        "LOG_LEVEL": "WARNING",
        **settings,
    }


CONVMEM_PAL = ["-m", "convmem", "pal"]
PAL_ALONE = ["-c", "import server; server.run()"]  # pal's own entry point, its dict storage


@contextlib.asynccontextmanager
async def pal(
    env: dict[str, str], cwd: Path, args: list[str] = CONVMEM_PAL
) -> AsyncIterator[Client]:
    """``convmem pal`` (or pal alone) as a subprocess, and the SDK's client talking to it."""
    params = StdioServerParameters(command=sys.executable, args=args, env=env, cwd=str(cwd))
    async with Client(params) as client:
        yield client


async def chat(
    client: Client, cwd: Path, prompt: str, continuation_id: str | None = None
) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "prompt": prompt,
        "model": MODEL,
        "working_directory_absolute_path": str(cwd),
    }
    if continuation_id:
        arguments["continuation_id"] = continuation_id
    result = await client.call_tool("chat", arguments)
    assert not result.is_error, result.content
    text = result.content[0].text  # type: ignore[union-attr]
    reply: dict[str, Any] = json.loads(text)
    assert reply["status"] == "continuation_available", reply
    return reply


def sent_to_model(standin: ChatCompletionsStandIn) -> str:
    return "\n".join(str(m["content"]) for m in standin.requests[-1]["body"]["messages"])


async def test_a_conversation_outlives_the_pal_process(
    tmp_path: Path, standin: ChatCompletionsStandIn
) -> None:
    env = pal_env(standin, CONVMEM_STORE_URL=f"sqlite:///{tmp_path}/pal.db")
    async with pal(env, tmp_path) as client:
        first = await chat(client, tmp_path, "remember the number 41")
        cid = first["continuation_offer"]["continuation_id"]
        await chat(client, tmp_path, "which number?", cid)
        assert "remember the number 41" in sent_to_model(standin)
    # A new process (pal's dict would be empty), started the other documented way.
    async with pal(env, tmp_path, ["-m", "convmem.integrations.pal"]) as restarted:
        again = await chat(restarted, tmp_path, "and now, after a restart?", cid)
    assert again["continuation_offer"]["continuation_id"] == cid
    history = sent_to_model(standin)
    assert "remember the number 41" in history
    assert "which number?" in history


async def test_without_convmem_pal_forgets_on_restart(
    tmp_path: Path, standin: ChatCompletionsStandIn
) -> None:
    """The control for the test above: the same flow on pal's own storage."""
    env = pal_env(standin)
    async with pal(env, tmp_path, PAL_ALONE) as client:
        cid = (await chat(client, tmp_path, "remember 7"))["continuation_offer"]["continuation_id"]
    async with pal(env, tmp_path, PAL_ALONE) as restarted:
        result = await restarted.call_tool(
            "chat",
            {
                "prompt": "still there?",
                "model": MODEL,
                "working_directory_absolute_path": str(tmp_path),
                "continuation_id": cid,
            },
        )
    assert result.is_error
    assert "expired" in result.content[0].text.lower()  # type: ignore[union-attr]


async def test_two_pal_processes_continue_each_others_conversations(
    tmp_path: Path,
    standin: ChatCompletionsStandIn,
    clean_pg: str,
    redis_url: str,
    redis_prefix: str,
) -> None:
    env = pal_env(
        standin,
        CONVMEM_STORE_URL=pg_url(clean_pg),
        CONVMEM_CACHE_URL=redis_url,
        CONVMEM_CACHE_PREFIX=redis_prefix,
    )
    async with pal(env, tmp_path) as one, pal(env, tmp_path) as two:
        first = await chat(one, tmp_path, "started in process one")
        cid = first["continuation_offer"]["continuation_id"]
        await chat(two, tmp_path, "continued in process two", cid)
        assert "started in process one" in sent_to_model(standin)
        await chat(one, tmp_path, "back in process one", cid)
        history = sent_to_model(standin)
    assert "started in process one" in history
    assert "continued in process two" in history
