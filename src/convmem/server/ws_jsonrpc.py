"""MCP's own JSON-RPC over the daemon's WebSocket, for clients whose first frame is an
``initialize`` request instead of a hello.

The official SDK serves the session (initialize, tools/list, tools/call with progress
notifications, ping, cancellation), exactly as on stdio: this module only moves one
JSON-RPC message per text frame between the socket and the SDK's server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types
from mcp.shared.message import SessionMessage
from starlette.websockets import WebSocketDisconnect

from convmem.server import ws_frames as frames

if TYPE_CHECKING:
    from mcp.server import MCPServer
    from starlette.websockets import WebSocket

log = logging.getLogger("convmem.server")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
UNAUTHORIZED = -32001  # implementation-defined server error range


def is_initialize(frame: object) -> bool:
    return (
        isinstance(frame, dict)
        and frame.get("jsonrpc") == "2.0"
        and frame.get("method") == "initialize"
    )


def json_rpc_error(request_id: object, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


async def serve_json_rpc(
    mcp: MCPServer,
    websocket: WebSocket,
    first_frame: str,
    *,
    max_frame_bytes: int,
    large_frames: frames.LargeFrameGate,
    send_timeout_seconds: float,
) -> None:
    """Serve an MCP session whose ``initialize`` came as ``first_frame``, until the
    client leaves. The caller has authenticated the client and set its owner."""
    to_server, from_client = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    to_client, from_server = anyio.create_memory_object_stream[SessionMessage](0)

    async def send_text(text: str) -> None:
        try:
            async with asyncio.timeout(send_timeout_seconds):
                await websocket.send_text(text)
        except (WebSocketDisconnect, RuntimeError):
            pass
        except TimeoutError:  # the client reads nothing: its replies would pile up here
            log.warning("a WebSocket client read nothing for %g s: closed", send_timeout_seconds)
            with contextlib.suppress(Exception):
                await websocket.close(1008, "the client does not read its replies")

    async def forward(raw: str) -> None:
        if frames.too_large(raw, max_frame_bytes):
            request_id = frames.head_fields(raw).get("id")  # the frame is never parsed
            limit = f"frames are limited to {max_frame_bytes} bytes"
            await send_text(frames.dump(json_rpc_error(request_id, INVALID_REQUEST, limit)))
            return
        try:
            async with large_frames.admit(raw):
                message = mcp_types.jsonrpc_message_adapter.validate_json(raw, by_name=False)
        except ValueError:
            frame = frames.parse(raw)
            if frame is None:
                error = json_rpc_error(None, PARSE_ERROR, frames.NOT_JSON)
            else:
                request_id = frame.get("id") if isinstance(frame, dict) else None
                error = json_rpc_error(request_id, INVALID_REQUEST, "not a JSON-RPC 2.0 message")
            await send_text(frames.dump(error))
            return
        await to_server.send(SessionMessage(message))

    async def read_socket() -> None:
        async with to_server:
            await forward(first_frame)
            while True:
                try:
                    received = await websocket.receive()
                except WebSocketDisconnect:
                    return
                if received["type"] == "websocket.disconnect":
                    return
                raw = received.get("text")
                if isinstance(raw, str):
                    await forward(raw)
                else:
                    error = json_rpc_error(None, INVALID_REQUEST, "send JSON-RPC as text frames")
                    await send_text(frames.dump(error))

    async def write_socket() -> None:
        async with from_server:
            async for outgoing in from_server:
                await send_text(outgoing.message.model_dump_json(by_alias=True, exclude_unset=True))

    server = mcp._lowlevel_server  # as the SDK's own stdio and in-memory transports use it
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(read_socket)
        tasks.start_soon(write_socket)
        # Returns when the client leaves (the reader closes the server's input).
        await server.run(from_client, to_client, server.create_initialization_options())
        tasks.cancel_scope.cancel()
