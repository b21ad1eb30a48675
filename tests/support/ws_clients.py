"""Clients of the WebSocket daemon, one per dialect the original daemon's clients speak,
written from how those clients behave (no other project's code):

- ``NextFrameClient``: the newest shim. Hello with protocolVersion, capabilities and
  clientInfo; requests carry ``id``; the reply is simply the next frame, its answer
  under ``result``.
- ``RequestIdClient``: the older shims. Hello with session_id; requests carry
  ``request_id``; frames are read until the ``call_tool_res`` with that id, and the
  client gives up ``idle_timeout`` seconds after the call or its last ``call_tool_ack``
  or ``progress`` frame (only those extend its wait); an ``error`` key fails the call.
  ``op="tool_call"`` sends ``{"tool": {"name"}}`` instead of ``name``. What such a shim
  shows its MCP client is ``shown(reply)``: the top-level ``text``, or only its
  ``content`` when it is JSON with that key.
- ``JsonRpcClient``: MCP's JSON-RPC over the socket, ``initialize`` as the first frame.

Each returns the chat tool's structured result and raises ``CallFailed`` for a tool error.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any, Self

import orjson
from websockets.asyncio.client import ClientConnection, connect

MAX_SIZE = 64 * 1024 * 1024


class CallFailed(Exception):
    pass


def _dump(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


async def _receive(ws: ClientConnection, within: float) -> dict[str, Any]:
    frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), within))
    return frame


async def _say_hello(url: str, hello: dict[str, Any], within: float) -> ClientConnection:
    """A connection whose hello the daemon accepted; ``CallFailed`` when refused."""
    ws = await connect(url, max_size=MAX_SIZE)
    await ws.send(_dump(hello))
    ack = await _receive(ws, within)
    if not ack.get("ok"):
        await ws.close()
        raise CallFailed(f"refused: {ack}")
    return ws


def _structured(text: str) -> dict[str, Any]:
    """The chat tool's result from its text output (the SDK writes it as JSON)."""
    value: dict[str, Any] = orjson.loads(text)
    return value


@dataclass
class NextFrameClient:
    url: str
    token: str
    timeout: float = 90.0
    ws: ClientConnection | None = None

    async def __aenter__(self) -> Self:
        hello = {
            "op": "hello",
            "protocolVersion": "2024-11-05",
            "capabilities": {},
            "clientInfo": {"name": "next-frame-shim", "version": "1"},
            "token": self.token,
        }
        self.ws = await _say_hello(self.url, hello, self.timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ws is not None
        await self.ws.close()

    async def list_tools(self) -> list[str]:
        assert self.ws is not None
        await self.ws.send(_dump({"op": "list_tools", "id": "list_1"}))
        reply = await _receive(self.ws, self.timeout)
        return [tool["name"] for tool in reply["tools"]]

    async def chat(self, arguments: dict[str, Any]) -> dict[str, Any]:
        assert self.ws is not None
        await self.ws.send(
            _dump({"op": "call_tool", "id": "call_1", "name": "chat", "arguments": arguments})
        )
        reply = await _receive(self.ws, self.timeout)  # the next frame is the answer
        if reply.get("error"):
            raise CallFailed(reply["error"]["message"])
        return _structured(reply["result"][0]["text"])


@dataclass
class RequestIdClient:
    url: str
    token: str
    op: str = "call_tool"
    idle_timeout: float = 90.0
    ws: ClientConnection | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)  # every frame of the last call
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def __aenter__(self) -> Self:
        hello = {"op": "hello", "session_id": "shim-1", "token": self.token}
        self.ws = await _say_hello(self.url, hello, self.idle_timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ws is not None
        await self.ws.close()

    async def list_tools(self) -> list[str]:
        assert self.ws is not None
        await self.ws.send(_dump({"op": "list_tools", "request_id": "list"}))
        while True:
            reply = await _receive(self.ws, self.idle_timeout)
            if reply.get("op") == "list_tools_res":
                return [tool["name"] for tool in reply["tools"]]

    async def chat(self, arguments: dict[str, Any]) -> dict[str, Any]:
        reply = await self.call("chat", arguments)
        structured: dict[str, Any] = reply["structured"]
        return structured

    async def chat_shown(self, arguments: dict[str, Any]) -> str:
        """What the shim's MCP client is shown of a chat call."""
        return shown(await self.call("chat", arguments))

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        assert self.ws is not None
        request_id = f"req-{next(self._ids)}"
        frame: dict[str, Any] = {"op": self.op, "request_id": request_id, "arguments": arguments}
        if self.op == "tool_call":
            frame["tool"] = {"name": name}
        else:
            frame["name"] = name
        await self.ws.send(_dump(frame))
        self.seen = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.idle_timeout
        while True:
            try:
                reply = await _receive(self.ws, max(deadline - loop.time(), 0.01))
            except TimeoutError:
                raise CallFailed(f"no progress on {request_id} in {self.idle_timeout} s") from None
            if reply.get("request_id") != request_id:
                continue
            self.seen.append(reply)
            if reply.get("op") in ("call_tool_ack", "progress"):
                deadline = loop.time() + self.idle_timeout
            if reply.get("op") == "call_tool_res":
                if reply.get("error"):
                    raise CallFailed(reply["error"]["message"])
                return reply


def shown(reply: dict[str, Any]) -> str:
    """What the older shims pass on to their MCP client from a ``call_tool_res``."""
    text: str = reply["text"]
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        content: str = value["content"]
        return content
    return text


@dataclass
class JsonRpcClient:
    url: str
    token: str
    timeout: float = 90.0
    ws: ClientConnection | None = None
    progress: list[dict[str, Any]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def __aenter__(self) -> Self:
        self.ws = await connect(
            self.url,
            max_size=MAX_SIZE,
            additional_headers={"Authorization": f"Bearer {self.token}"},
        )
        result = await self.request(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "json-rpc-shim", "version": "1"},
            },
        )
        assert result["serverInfo"]["name"] == "convmem"
        await self.ws.send(_dump({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ws is not None
        await self.ws.close()

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.ws is not None
        request_id = next(self._ids)
        await self.ws.send(
            _dump({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        )
        while True:
            reply = await _receive(self.ws, self.timeout)
            if reply.get("method") == "notifications/progress":
                self.progress.append(reply["params"])
                continue
            if reply.get("id") != request_id:
                continue
            if "error" in reply:
                raise CallFailed(reply["error"]["message"])
            result: dict[str, Any] = reply["result"]
            return result

    async def list_tools(self) -> list[str]:
        return [tool["name"] for tool in (await self.request("tools/list", {}))["tools"]]

    async def chat(self, arguments: dict[str, Any]) -> dict[str, Any]:
        self.progress = []
        result = await self.request(
            "tools/call",
            {"name": "chat", "arguments": arguments, "_meta": {"progressToken": "p-1"}},
        )
        if result.get("isError"):
            raise CallFailed(result["content"][0]["text"])
        structured: dict[str, Any] = result["structuredContent"]
        return structured
