"""The WebSocket daemon protocol at ``/ws``, compatible with the daemon convmem replaces.

    → {"op":"hello","token":…,"session_id"?}     ← {"op":"hello_ack","ok":true,"session_id":…}
    → {"op":"list_tools"}                          ← {"op":"list_tools_res","tools":[…]}
    → {"op":"call_tool","name","arguments","request_id"}
                                                   ← {"op":"call_tool_res","request_id",
                                                      "outputs":[{"type":"text","text"}],
                                                      "structured":…,"is_error":…}
    → {"op":"ping"}                                ← {"op":"pong"}
    → {"op":"cancel","request_id"}                 ← {"op":"cancel_ack","request_id","cancelled"}

What the old daemon got wrong is fixed: every error is ``{"op":"error","request_id",
"code","message"}``; calls on one connection run concurrently; the hello must come
within a timeout; a bad token closes with 4003; bad JSON, unknown ops, oversized
frames and wrong argument types get an error frame and the connection lives on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from mcp.server.mcpserver.exceptions import ToolError
from starlette.websockets import WebSocket, WebSocketDisconnect

from convmem.server.auth import current_owner

if TYPE_CHECKING:
    from mcp.server import MCPServer

    from convmem.server.auth import TokenTable

log = logging.getLogger("convmem.server")

# The close codes of the daemon convmem replaces, which its clients act on.
CLOSE_BAD_HELLO = 4001
CLOSE_HELLO_TIMEOUT = 4002
CLOSE_BAD_TOKEN = 4003
CLOSE_TRY_AGAIN_LATER = 1013
MAX_HELLO_BYTES = 16_384  # before a client has shown its token, no frame may be larger
MAX_PENDING_HELLOS = 64  # connections that have not said hello yet, at once


class WebSocketDaemon:
    def __init__(
        self,
        mcp: MCPServer,
        tokens: TokenTable,
        *,
        hello_timeout: float = 15.0,
        max_frame_bytes: int = 4_000_000,
    ) -> None:
        self.mcp = mcp
        self.tokens = tokens
        self.hello_timeout = hello_timeout
        self.max_frame_bytes = max_frame_bytes
        self._hellos = asyncio.Semaphore(MAX_PENDING_HELLOS)

    async def handle(self, websocket: WebSocket) -> None:
        # Memory before authentication is bounded twice: few connections may be waiting
        # to say hello, and none may send a frame larger than a hello meanwhile.
        if self._hellos.locked():
            await websocket.close(CLOSE_TRY_AGAIN_LATER, "too many connections saying hello")
            return
        async with self._hellos:
            limit = _FrameLimit(websocket)
            limit.set(MAX_HELLO_BYTES)  # before accept: no frame can slip in first
            await websocket.accept()
            accepted, owner = await self._hello(websocket)
            if not accepted:
                return
            limit.restore()
        connection = _Connection(self, websocket, owner)
        await connection.serve()

    async def _hello(self, websocket: WebSocket) -> tuple[bool, str | None]:
        """Whether the hello was accepted, and the client's owner (None without auth)."""
        try:
            message = await asyncio.wait_for(websocket.receive(), self.hello_timeout)
        except TimeoutError:
            await _send(websocket, _error(None, "hello_timeout", "no hello frame in time"))
            await websocket.close(CLOSE_HELLO_TIMEOUT)
            return False, None
        if message["type"] == "websocket.disconnect":
            return False, None
        raw = message.get("text")
        frame = _parse(raw) if isinstance(raw, str) else None
        if not isinstance(frame, dict) or frame.get("op") != "hello":
            await _send(
                websocket, _error(None, "bad_hello", 'the first frame must be {"op":"hello",…}')
            )
            await websocket.close(CLOSE_BAD_HELLO)
            return False, None
        token = frame.get("token")
        owner = self.tokens.owner_of(token if isinstance(token, str) else None)
        if self.tokens.required and owner is None:
            # The original daemon's refusal, which every generation of its clients reads
            # (an error frame made the newest report "Unknown error", older ones reconnect).
            await _send(websocket, {"op": "hello_ack", "ok": False, "error": "unauthorized"})
            await websocket.close(CLOSE_BAD_TOKEN)
            return False, None
        session_id = frame.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            session_id = uuid.uuid4().hex
        await _send(websocket, {"op": "hello_ack", "ok": True, "session_id": session_id})
        return True, owner


class _Connection:
    def __init__(self, daemon: WebSocketDaemon, websocket: WebSocket, owner: str | None) -> None:
        self.daemon = daemon
        self.websocket = websocket
        self.owner = owner
        self.calls: dict[str, asyncio.Task[None]] = {}
        self.send_lock = asyncio.Lock()

    async def serve(self) -> None:
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                raw = message.get("text")
                if isinstance(raw, str):
                    await self._frame(raw)
                else:  # a binary frame: refused, and the connection lives on
                    await self.send(
                        _error(None, "bad_frame", "binary frames are not accepted: send JSON text")
                    )
        except WebSocketDisconnect:
            pass
        finally:
            for task in self.calls.values():  # the client left: its calls are moot
                task.cancel()
            await asyncio.gather(*self.calls.values(), return_exceptions=True)

    async def send(self, frame: dict[str, Any]) -> None:
        async with self.send_lock:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await _send(self.websocket, frame)

    async def _frame(self, raw: str) -> None:
        if len(raw.encode()) > self.daemon.max_frame_bytes:
            await self.send(
                _error(
                    None, "too_large", f"frames are limited to {self.daemon.max_frame_bytes} bytes"
                )
            )
            return
        frame = _parse(raw)
        if frame is None:
            await self.send(_error(None, "bad_json", "the frame is not JSON text"))
            return
        if not isinstance(frame, dict):
            await self.send(_error(None, "bad_request", "a frame must be a JSON object"))
            return
        op = frame.get("op")
        request_id = frame.get("request_id")
        if op == "ping":
            await self.send({"op": "pong", "request_id": request_id})
        elif op == "list_tools":
            tools = await self.daemon.mcp.list_tools()
            await self.send(
                {
                    "op": "list_tools_res",
                    "request_id": request_id,
                    "tools": [
                        {
                            "name": t.name,
                            "description": t.description,
                            "inputSchema": t.input_schema,
                        }
                        for t in tools
                    ],
                }
            )
        elif op == "call_tool":
            await self._start_call(frame, request_id)
        elif op == "cancel":
            task = self.calls.get(str(request_id))
            if task is not None:
                task.cancel()
            await self.send(
                {"op": "cancel_ack", "request_id": request_id, "cancelled": task is not None}
            )
        elif op == "hello":
            await self.send(_error(request_id, "bad_request", "already said hello"))
        else:
            await self.send(_error(request_id, "unknown_op", f"unknown op {op!r}"))

    async def _start_call(self, frame: dict[str, Any], request_id: object) -> None:
        name, arguments = frame.get("name"), frame.get("arguments", {})
        if not isinstance(request_id, str | int | float) or isinstance(request_id, bool):
            await self.send(
                _error(None, "bad_request", "call_tool needs a request_id (string or number)")
            )
            return
        key = str(request_id)
        if not isinstance(name, str):
            await self.send(_error(request_id, "bad_request", "call_tool needs a tool name"))
        elif not isinstance(arguments, dict):
            await self.send(_error(request_id, "bad_request", "arguments must be a JSON object"))
        elif key in self.calls:
            await self.send(
                _error(request_id, "bad_request", "a call with this request_id is running")
            )
        else:
            current_owner.set(self.owner)  # copied into the call's task context
            self.calls[key] = asyncio.create_task(self._call(name, arguments, request_id, key))

    async def _call(
        self, name: str, arguments: dict[str, Any], request_id: str | int | float, key: str
    ) -> None:
        try:
            result = await self.daemon.mcp.call_tool(name, arguments)  # the tool counts itself
            payload = result.model_dump(mode="json", by_alias=True, exclude_none=True)
            await self.send(
                {
                    "op": "call_tool_res",
                    "request_id": request_id,
                    "outputs": payload.get("content", []),
                    "structured": payload.get("structuredContent"),
                    "is_error": bool(payload.get("isError", False)),
                }
            )
        except asyncio.CancelledError:
            await self.send(_error(request_id, "cancelled", "the call was cancelled"))
        except ToolError as exc:
            await self.send(
                {
                    "op": "call_tool_res",
                    "request_id": request_id,
                    "outputs": [{"type": "text", "text": str(exc)}],
                    "structured": None,
                    "is_error": True,
                }
            )
        except Exception as exc:
            log.exception("tool %s failed", name)
            await self.send(_error(request_id, "internal", f"{type(exc).__name__}: {exc}"))
        finally:
            self.calls.pop(key, None)


def _parse(raw: str) -> object:
    """The frame's JSON, or None. orjson first; the standard library for what orjson
    refuses but JSON allows (integers beyond 64 bits, as some clients' request ids)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            return json.loads(raw)
        except ValueError:
            return None


class _FrameLimit:
    """The largest incoming message, set at the protocol, so a larger frame is refused
    (close 1009) before it is read whole. Works on uvicorn's default WebSocket protocol
    (websockets, sans-I/O); elsewhere it does nothing and only the count of pending
    hellos bounds what is read before authentication."""

    def __init__(self, websocket: WebSocket) -> None:
        receive = getattr(websocket, "_receive", None)  # the server's ASGI receive
        self._conn = getattr(getattr(receive, "__self__", None), "conn", None)
        self._original = getattr(self._conn, "max_message_size", None)

    def set(self, limit: int) -> None:
        if self._original is not None:
            self._conn.max_message_size = limit  # type: ignore[union-attr]

    def restore(self) -> None:
        if self._original is not None:
            self._conn.max_message_size = self._original  # type: ignore[union-attr]


def _error(request_id: object, code: str, message: str) -> dict[str, Any]:
    return {"op": "error", "request_id": request_id, "code": code, "message": message}


async def _send(websocket: WebSocket, frame: dict[str, Any]) -> None:
    try:
        text = orjson.dumps(frame).decode()
    except TypeError:  # an integer beyond 64 bits (a client's request id): still JSON
        text = json.dumps(frame)
    await websocket.send_text(text)
