"""The WebSocket daemon, compatible with every generation of the daemon convmem
replaces: its clients dial ``ws://HOST:PORT`` (any path is accepted) and open with

    → {"op":"hello","token",…}          newer: protocolVersion, capabilities, clientInfo;
                                          older: session_id
    ← {"op":"hello_ack","ok":true,"session_id":…}     then the op protocol (ws_ops)
    → {"jsonrpc":"2.0","method":"initialize",…}        then MCP's JSON-RPC (ws_jsonrpc)

A client's token is read from its hello, else from the upgrade's ``Authorization:
Bearer`` header or its ``?token=`` query. A bad token is answered as the original
daemon did, ``{"op":"hello_ack","ok":false,"error":"unauthorized"}`` (a JSON-RPC error
for an initialize), then closed with 4003; a silent client is closed after the hello
timeout with 4002, a first frame that is neither with 4001 — the original's codes.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from convmem.errors import RepeatedHeaderError
from convmem.server import ws_frames as frames
from convmem.server.auth import current_owner
from convmem.server.headers import bearer_token
from convmem.server.ws_jsonrpc import UNAUTHORIZED, is_initialize, json_rpc_error, serve_json_rpc
from convmem.server.ws_ops import CallPolicy, OpConnection

if TYPE_CHECKING:
    from mcp.server import MCPServer
    from starlette.websockets import WebSocket

    from convmem.server.auth import TokenTable

CLOSE_BAD_HELLO = 4001
CLOSE_HELLO_TIMEOUT = 4002
CLOSE_BAD_TOKEN = 4003
CLOSE_TRY_AGAIN_LATER = 1013
MAX_HELLO_BYTES = 16_384  # before a client has shown its token, no frame may be larger
MAX_PENDING_HELLOS = 64  # connections that have not said hello yet, at once
DEFAULT_MAX_FRAME_BYTES = 32 * 1024 * 1024  # the original daemon's limit


class WebSocketDaemon:
    def __init__(
        self,
        mcp: MCPServer,
        tokens: TokenTable,
        *,
        hello_timeout: float = 15.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        progress_seconds: float = 5.0,
        call_timeout_seconds: float = 300.0,
        send_timeout_seconds: float = 30.0,
    ) -> None:
        self.mcp = mcp
        self.tokens = tokens
        self.hello_timeout = hello_timeout
        self.policy = CallPolicy(
            max_frame_bytes,
            progress_seconds,
            call_timeout_seconds,
            send_timeout_seconds=send_timeout_seconds,
        )
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
            first = await self._first_frame(websocket)
            if first is None:
                return
            raw, frame = first
            owner, accepted = await self._authenticate(websocket, frame)
            if not accepted:
                return
            limit.restore()
        current_owner.set(owner)  # this connection's task and every task it starts
        if is_initialize(frame):
            await serve_json_rpc(
                self.mcp,
                websocket,
                raw,
                max_frame_bytes=self.policy.max_frame_bytes,
                large_frames=self.policy.large_frames,
                send_timeout_seconds=self.policy.send_timeout_seconds,
            )
            return
        assert isinstance(frame, dict)
        session_id = frame.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            session_id = uuid.uuid4().hex
        await websocket.send_text(
            frames.dump({"op": "hello_ack", "ok": True, "session_id": session_id})
        )
        capabilities = frame.get("capabilities")
        streaming = isinstance(capabilities, dict) and capabilities.get("streaming") is True
        connection = OpConnection(self.mcp, websocket, self.policy, always_stream=streaming)
        await connection.serve()

    async def _first_frame(self, websocket: WebSocket) -> tuple[str, dict[str, Any]] | None:
        """The hello or initialize frame, or None when the connection was closed."""
        try:
            message = await asyncio.wait_for(websocket.receive(), self.hello_timeout)
        except TimeoutError:
            await websocket.send_text(
                frames.dump(frames.failure("", None, "hello_timeout", "no hello frame in time"))
            )
            await websocket.close(CLOSE_HELLO_TIMEOUT)
            return None
        if message["type"] == "websocket.disconnect":
            return None
        raw = message.get("text")
        frame = frames.parse(raw) if isinstance(raw, str) else None
        if (
            isinstance(raw, str)
            and isinstance(frame, dict)
            and (frame.get("op") == "hello" or is_initialize(frame))
        ):
            return raw, frame
        message_text = (
            'the first frame must be {"op":"hello","token":…} or a JSON-RPC initialize request'
        )
        await websocket.send_text(frames.dump(frames.failure("", None, "bad_hello", message_text)))
        await websocket.close(CLOSE_BAD_HELLO)
        return None

    async def _authenticate(
        self, websocket: WebSocket, frame: dict[str, Any]
    ) -> tuple[str | None, bool]:
        """The client's owner (None without auth), and whether it may go on."""
        token = _token_of(websocket, frame)
        owner = self.tokens.owner_of(token)
        if not self.tokens.required or owner is not None:
            return owner, True
        if is_initialize(frame):
            refusal = json_rpc_error(frame.get("id"), UNAUTHORIZED, "unauthorized")
        else:
            # The original daemon's refusal, which every generation of its clients reads
            # (an error frame made the newest report "Unknown error", older ones reconnect).
            refusal = {"op": "hello_ack", "ok": False, "error": "unauthorized"}
        await websocket.send_text(frames.dump(refusal))
        await websocket.close(CLOSE_BAD_TOKEN)
        return None, False


def _token_of(websocket: WebSocket, frame: dict[str, Any]) -> str | None:
    """The hello's token (an initialize may carry it in params), else the upgrade's
    bearer header, else its ``token`` query parameter."""
    params = frame.get("params")
    for holder in (frame, params if isinstance(params, dict) else {}):
        token = holder.get("token")
        if isinstance(token, str) and token:
            return token
    try:
        header_token = bearer_token(websocket.scope["headers"])
    except RepeatedHeaderError:  # the app refuses such an upgrade before it gets here
        header_token = None
    if header_token:
        return header_token
    return websocket.query_params.get("token") or None


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
