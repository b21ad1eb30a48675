"""The op protocol of the daemon convmem replaces, after the hello.

    → {"op":"list_tools","request_id"|"id"}      ← {"op":"list_tools_res",…,"tools":[…]}
    → {"op":"call_tool","request_id"|"id","name","arguments"}
      or {"op":"tool_call","request_id","tool":{"name"},"arguments"}
                                                  ← call_tool_ack, progress…, stream_chunk…,
                                                    stream_complete (see below), then
                                                    {"op":"call_tool_res",…} (ws_frames)
    → {"op":"cancel","request_id"|"id"}           ← {"op":"cancelled",…,"cancelled":bool}
    → {"op":"ping"}                               ← {"op":"pong"}

Clients that match replies by ``request_id`` get the frames sent while a call runs:
``call_tool_ack`` when it starts (with the call's timeout), ``progress`` every few
seconds (older clients extend their own timeout on them), and, when the model streams,
``stream_chunk`` pieces then ``stream_complete``. A call that names itself by ``id``
only gets exactly one reply, its result: the newest client reads the next frame as the
answer. A hello with ``capabilities: {"streaming": true}`` asks for all frames anyway.

Calls on one connection run concurrently, each as a task that inherits the connection's
owner (``current_owner``, set by the daemon after the hello); bad frames get an error
frame (with the request's id whenever it can be read) and the connection lives on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver.exceptions import ToolError
from starlette.websockets import WebSocket, WebSocketDisconnect

from convmem.server import ws_frames as frames
from convmem.server.progress import reply_listener

if TYPE_CHECKING:
    from mcp.server import MCPServer

log = logging.getLogger("convmem.server")


MAX_CALLS_PER_CONNECTION = 32
SEND_TIMEOUT_SECONDS = 30.0  # a client that reads nothing for this long is let go


@dataclass(frozen=True, slots=True)
class CallPolicy:
    max_frame_bytes: int
    progress_seconds: float
    call_timeout_seconds: float
    large_frames: frames.LargeFrameGate = field(default_factory=frames.LargeFrameGate)
    max_calls: int = MAX_CALLS_PER_CONNECTION
    send_timeout_seconds: float = SEND_TIMEOUT_SECONDS


class OpConnection:
    def __init__(
        self,
        mcp: MCPServer,
        websocket: WebSocket,
        policy: CallPolicy,
        *,
        always_stream: bool,
    ) -> None:
        self.mcp = mcp
        self.websocket = websocket
        self.policy = policy
        self.always_stream = always_stream
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
                        frames.failure(
                            "", None, "bad_frame", "binary frames are not accepted: send JSON text"
                        )
                    )
        except WebSocketDisconnect:
            pass
        finally:
            for task in self.calls.values():  # the client left: its calls are moot
                task.cancel()
            await asyncio.gather(*self.calls.values(), return_exceptions=True)

    async def send(self, frame: dict[str, Any]) -> None:
        """Send one frame; a client that has not read for ``send_timeout_seconds`` (its
        frames pile up in this process) is disconnected."""
        async with self.send_lock:
            try:
                async with asyncio.timeout(self.policy.send_timeout_seconds):
                    await self.websocket.send_text(frames.dump(frame))
            except (WebSocketDisconnect, RuntimeError):
                pass
            except TimeoutError:
                log.warning(
                    "a WebSocket client read nothing for %g s: closed",
                    self.policy.send_timeout_seconds,
                )
                with contextlib.suppress(Exception):
                    await self.websocket.close(1008, "the client does not read its replies")

    async def _frame(self, raw: str) -> None:
        if frames.too_large(raw, self.policy.max_frame_bytes):
            # Read whole (up to the server's hard cap) only to answer with its id, which
            # is read from the frame's start: the frame itself is never parsed.
            readable = frames.head_fields(raw)
            limit = self.policy.max_frame_bytes
            await self.send(
                frames.failure(
                    str(readable.get("op", "")),
                    frames.request_id_of(readable),
                    "too_large",
                    f"frames are limited to {limit} bytes",
                )
            )
            return
        async with self.policy.large_frames.admit(raw):
            frame = frames.parse(raw)
        if frame is None:
            await self.send(frames.failure("", None, "bad_json", frames.NOT_JSON))
            return
        if not isinstance(frame, dict):
            await self.send(
                frames.failure("", None, "bad_request", "a frame must be a JSON object")
            )
            return
        op = frame.get("op")
        op_name = op if isinstance(op, str) else ""
        request_id = frames.request_id_of(frame)
        if op == "ping":
            await self.send({"op": "pong", **frames.ids(request_id)})
        elif op == "list_tools":
            await self._list_tools(request_id)
        elif op in frames.CALL_OPS:
            await self._start_call(op_name, frame, request_id)
        elif op == "cancel":
            task = self.calls.get(str(request_id))
            if task is not None:
                task.cancel()
            await self.send(
                {"op": "cancelled", **frames.ids(request_id), "cancelled": task is not None}
            )
        elif op == "hello":
            await self.send(
                frames.failure(op_name, request_id, "bad_request", "already said hello")
            )
        else:
            await self.send(frames.failure(op_name, request_id, "unknown_op", f"unknown op {op!r}"))

    async def _list_tools(self, request_id: frames.RequestId | None) -> None:
        tools = await self.mcp.list_tools()
        await self.send(
            {
                "op": "list_tools_res",
                **frames.ids(request_id),
                "tools": [
                    {"name": t.name, "description": t.description, "inputSchema": t.input_schema}
                    for t in tools
                ],
            }
        )

    async def _start_call(
        self, op: str, frame: dict[str, Any], request_id: frames.RequestId | None
    ) -> None:
        tool = frame.get("tool")
        name = frame.get("name")
        if name is None and isinstance(tool, dict):  # tool_call names its tool inside
            name = tool.get("name")
        arguments = frame.get("arguments")
        if arguments is None and isinstance(tool, dict):
            arguments = tool.get("arguments")
        arguments = {} if arguments is None else arguments

        problem = None
        if request_id is None:
            problem = f"{op} needs a request_id or id (a string or number)"
        elif not isinstance(name, str):
            problem = f"{op} needs a tool name"
        elif not isinstance(arguments, dict):
            problem = "arguments must be a JSON object"
        elif str(request_id) in self.calls:
            problem = "a call with this request_id is running"
        elif len(self.calls) >= self.policy.max_calls:
            problem = (
                f"{self.policy.max_calls} calls are running on this connection, its limit:"
                " wait for a result before sending another call"
            )
        else:
            key = str(request_id)
            chatty = self.always_stream or "request_id" in frame
            self.calls[key] = asyncio.create_task(
                self._call(name, arguments, request_id, key, chatty=chatty)
            )
            return
        await self.send(frames.failure(op, request_id, "bad_request", problem))

    async def _call(
        self,
        name: str,
        arguments: dict[str, Any],
        request_id: frames.RequestId,
        key: str,
        *,
        chatty: bool,
    ) -> None:
        streamed = False

        async def stream_chunk(piece: str) -> None:
            nonlocal streamed
            streamed = True
            await self.send({"op": "stream_chunk", **frames.ids(request_id), "chunk": piece})

        ticker: asyncio.Task[None] | None = None
        if chatty:
            reply_listener.set(stream_chunk)  # this task's context only
            timeout = self.policy.call_timeout_seconds
            await self.send(
                {
                    "op": "call_tool_ack",
                    **frames.ids(request_id),
                    "accepted": True,
                    "timeout": timeout,
                }
            )
            ticker = asyncio.create_task(self._tick(request_id))
        try:
            async with asyncio.timeout(self.policy.call_timeout_seconds):
                result = await self.mcp.call_tool(name, arguments)  # the tool counts itself
            if ticker is not None:
                ticker.cancel()
            if streamed:
                await self.send({"op": "stream_complete", **frames.ids(request_id)})
            payload = result.model_dump(mode="json", by_alias=True, exclude_none=True)
            await self.send(frames.tool_result(request_id, payload))
        except asyncio.CancelledError:
            await self.send(
                frames.failure("call_tool", request_id, "cancelled", "the call was cancelled")
            )
        except TimeoutError:
            limit = self.policy.call_timeout_seconds
            await self.send(
                frames.failure(
                    "call_tool", request_id, "timeout", f"the call took longer than {limit:g} s"
                )
            )
        except ToolError as exc:
            await self.send(frames.failure("call_tool", request_id, "tool_error", str(exc)))
        except Exception:
            log.exception("tool %s failed", name)  # the detail is for the server's log only
            await self.send(
                frames.failure(
                    "call_tool", request_id, "internal", "the call failed on the server (logged)"
                )
            )
        finally:
            if ticker is not None:
                ticker.cancel()
            self.calls.pop(key, None)

    async def _tick(self, request_id: frames.RequestId) -> None:
        """``progress`` frames while the call runs: proof of life for the client."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            await asyncio.sleep(self.policy.progress_seconds)
            elapsed = loop.time() - started
            await self.send(
                {
                    "op": "progress",
                    **frames.ids(request_id),
                    "message": f"the call is running ({elapsed:.0f} s)",
                    "elapsed_seconds": round(elapsed, 1),
                }
            )
