"""``convmem serve`` as a real process on a free port, and the clients the live tests
share: the SDK's Streamable HTTP client and a WebSocket client of the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import orjson
from mcp import Client
from mcp.client.client import ConnectMode
from mcp.client.streamable_http import streamable_http_client
from websockets.asyncio.client import ClientConnection, connect

from convmem_bench.chat_standin import ChatCompletionsStandIn
from convmem_bench.pgbouncer import free_port


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    standin: ChatCompletionsStandIn

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"


def server_env(tmp: Path, standin: ChatCompletionsStandIn, **settings: str) -> dict[str, str]:
    """The environment of a server on its own SQLite file, two clients' tokens and the
    stand-in model; ``settings`` add or override ``CONVMEM_*`` variables."""
    return {
        **os.environ,
        "CONVMEM_STORE_URL": f"sqlite:///{tmp}/live.db",
        "CONVMEM_CLIENT_TOKENS": "alice=token-alice,bob=token-bob",
        "CONVMEM_MODEL_API_KEY": "sk-standin",
        "CONVMEM_MODEL_BASE_URL": standin.base_url,
        "CONVMEM_MODEL": "standin-model",
        **settings,
    }


@contextlib.contextmanager
def live_server(
    env: dict[str, str], standin: ChatCompletionsStandIn, *, port: int | None = None
) -> Iterator[LiveServer]:
    """``convmem serve`` with this environment (on ``port``, or a free one), once it says
    it listens and its /health answers; stopped when the block ends, unless it was
    killed already.

    A free port may be taken before the server binds it (another test's server, or an
    outgoing connection, on a busy machine): that server exits at once, and /health on
    the port would be another process's. So it counts as started only when its own
    output names the port, and one that exits first is started again on another port.
    """
    for _ in range(1 if port is not None else 5):
        chosen = port or free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "convmem", "serve", "--port", str(chosen)],
            env={**env, "COLUMNS": "500"},  # its one line, unwrapped
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        if _says_listening(process, chosen):
            break
        process.wait(10)
    else:
        output = process.stderr.read().decode() if process.stderr else ""
        raise RuntimeError(f"convmem serve did not start: {output}")
    url = f"http://127.0.0.1:{chosen}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx2.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx2.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            output = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"convmem serve did not start: {output}")
        time.sleep(0.1)
    try:
        yield LiveServer(url, process, standin)
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()


def _says_listening(process: subprocess.Popen[bytes], port: int, seconds: float = 60) -> bool:
    """True once the server prints that it listens on ``port`` (it binds first); False
    when it exits before that (its stdout ends)."""
    assert process.stdout is not None
    stdout = process.stdout
    deadline = time.monotonic() + seconds
    with ThreadPoolExecutor(1) as reader:
        while True:
            try:
                line = reader.submit(stdout.readline).result(deadline - time.monotonic())
            except (TimeoutError, ValueError):  # (ValueError: the deadline has passed)
                process.kill()  # which ends the read
                raise RuntimeError(f"convmem serve said nothing in {seconds:.0f} s") from None
            if not line:
                return False
            if f":{port}: MCP at /mcp".encode() in line:
                return True


@contextlib.asynccontextmanager
async def http_client(
    live: LiveServer | str, token: str | None, *, mode: ConnectMode = "auto"
) -> AsyncIterator[Client]:
    """The SDK's client over Streamable HTTP, with this client's bearer token, to a
    server or any base URL (a balancer's). ``mode="legacy"`` speaks the 2025 revisions
    (initialize handshake, a protocol session), as the ``mcp`` 1.x clients do."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = live if isinstance(live, str) else live.url
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http), mode=mode) as client,
    ):
        yield client


async def chat(client: Client, prompt: str, continuation_id: str | None = None) -> dict[str, Any]:
    arguments: dict[str, Any] = {"prompt": prompt}
    if continuation_id:
        arguments["continuation_id"] = continuation_id
    result = await client.call_tool("chat", arguments)
    assert not result.is_error, result.content
    structured: dict[str, Any] | None = result.structured_content
    assert structured is not None
    return structured


async def hello(live: LiveServer, token: str = "token-alice") -> ClientConnection:
    ws = await connect(live.ws_url)
    await ws.send(orjson.dumps({"op": "hello", "token": token, "session_id": "s-1"}).decode())
    ack = orjson.loads(await ws.recv())
    assert ack == {"op": "hello_ack", "ok": True, "session_id": "s-1"}
    return ws


async def frame(ws: ClientConnection, message: dict[str, Any] | str) -> dict[str, Any]:
    await ws.send(message if isinstance(message, str) else orjson.dumps(message).decode())
    reply: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
    return reply


async def until(ws: ClientConnection, op: str, request_id: object) -> dict[str, Any]:
    """The next frame of this op for this request, past any other frame."""
    while True:
        reply: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if reply["op"] == op and reply["request_id"] == request_id:
            return reply
