"""``POST /mcp`` bodies whose JSON-RPC ids are not ids are refused with an error.

JSON-RPC 2.0 and MCP give a request an id that is a string or an integer. The SDK reads a
message whose id is anything else (an object, a float, a boolean, ``NaN``, which is not
even JSON) as a notification and answers ``202 Accepted`` with nothing: the client
waits for an answer that never comes. This checks each message of a body (one or a
batch) first and answers such a request with a JSON-RPC error, 400.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
MAX_CHECKED_BYTES = 4 * 1024 * 1024  # the SDK refuses larger bodies itself


class JsonRpcIdsChecked:
    def __init__(self, app: ASGIApp, *, path: str = "/mcp") -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        read: list[Message] = []
        size, whole = 0, False
        while size <= MAX_CHECKED_BYTES:
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                whole = True
                break
        if whole and size <= MAX_CHECKED_BYTES:
            problem = _problem(b"".join(m.get("body", b"") for m in read))
            if problem is not None:
                code, text = problem
                error = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": text}}
                await JSONResponse(error, status_code=400)(scope, receive, send)
                return

        async def replay() -> Message:
            return read.pop(0) if read else await receive()

        await self.app(scope, replay, send)


def _problem(body: bytes) -> tuple[int, str] | None:
    """What is wrong with the ids of a body's messages, or None (the SDK judges the rest)."""
    try:
        value: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:  # integers beyond 64 bits are JSON; NaN and Infinity are not
            value = json.loads(body, parse_constant=_not_json)
        except (ValueError, RecursionError):
            return PARSE_ERROR, "the body is not JSON"
    for message in value if isinstance(value, list) else [value]:
        if not isinstance(message, dict) or "method" not in message or "id" not in message:
            continue
        request_id = message["id"]
        if not isinstance(request_id, str | int) or isinstance(request_id, bool):
            return INVALID_REQUEST, (
                f"a request's id must be a string or an integer, not {_kind(request_id)}"
            )
    return None


def _not_json(constant: str) -> float:
    raise ValueError(f"{constant} is not JSON")


def _kind(value: object) -> str:
    return {
        dict: "an object",
        list: "an array",
        float: "a number with a fraction",
        bool: "a boolean",
        type(None): "null",
    }.get(type(value), type(value).__name__)
