"""The frames of the WebSocket daemon's op protocol, shaped so that every generation of
the original daemon's clients finds what it reads.

Each reply echoes the request's id under both spellings (``request_id`` and ``id``).
A tool's result carries ``outputs`` (older shims), ``result`` (the newest), ``text``,
``structured`` and ``is_error``; a failure also carries ``error: {code, message}``,
the key older shims test for.

The two older generations show their MCP client the top-level ``text`` and, when it is
JSON with a ``content`` key, only that ``content``: a chat result's reply without its
``continuation_id``. So in ``text`` alone a chat result's ``content`` ends with the
continuation note; ``outputs``, ``result`` and ``structured`` (what the newest reads)
are the tool's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson

RequestId = str | int | float

CALL_OPS = frozenset({"call_tool", "tool_call"})


def request_id_of(frame: dict[str, Any]) -> RequestId | None:
    """The request's id, spelt ``request_id`` or ``id``; None when absent or not a
    string or number."""
    for key in ("request_id", "id"):
        value = frame.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return value
    return None


def ids(request_id: RequestId | None) -> dict[str, Any]:
    return {"request_id": request_id, "id": request_id}


def failure(op: str, request_id: RequestId | None, code: str, message: str) -> dict[str, Any]:
    """A refused or failed request. A call's failure is a ``call_tool_res``, so clients
    that wait for their result by request id see it; anything else is ``error``."""
    frame: dict[str, Any] = {
        "op": "call_tool_res" if op in CALL_OPS else "error",
        **ids(request_id),
        "ok": False,
        "code": code,
        "message": message,
        "error": {"code": code, "message": message},
    }
    if op in CALL_OPS:
        outputs = [{"type": "text", "text": message}]
        frame |= {
            "outputs": outputs,
            "result": outputs,
            "text": message,
            "structured": None,
            "is_error": True,
        }
    return frame


def tool_result(request_id: RequestId, payload: dict[str, Any]) -> dict[str, Any]:
    """A ``call_tool_res`` from the MCP ``CallToolResult`` (dumped by alias)."""
    outputs: list[dict[str, Any]] = payload.get("content", [])
    text = "\n".join(o["text"] for o in outputs if o.get("type") == "text")
    is_error = bool(payload.get("isError", False))
    if is_error:
        frame = failure("call_tool", request_id, "tool_error", text or "the tool failed")
        return frame | {"outputs": outputs, "result": outputs}
    structured = payload.get("structuredContent")
    return {
        "op": "call_tool_res",
        **ids(request_id),
        "ok": True,
        "outputs": outputs,
        "result": outputs,
        "text": _with_continuation_note(text, structured),
        "structured": structured,
        "is_error": False,
    }


def _with_continuation_note(text: str, structured: object) -> str:
    """``text`` whose ``content`` carries the way to continue, for the shims that show
    only ``content`` (see the module's docstring); other results' text unchanged."""
    if not isinstance(structured, dict):
        return text
    content = structured.get("content")
    offer = structured.get("continuation_offer")
    if not isinstance(content, str) or not isinstance(offer, dict):
        return text
    note = offer.get("note")
    if not isinstance(note, str) or not note:
        return text
    return dump(structured | {"content": f"{content}\n\n---\n{note}"})


def too_large(raw: str, limit: int) -> bool:
    """Whether a text frame is over ``limit`` bytes of UTF-8. A character is 1 to 4 bytes,
    so most frames are decided by their length alone, without encoding a copy."""
    if len(raw) > limit:
        return True
    if len(raw) * 4 <= limit:
        return False
    return len(raw.encode()) > limit


MAX_DEPTH = 1024  # orjson's own bound; a deeper frame is not read at all

NOT_JSON = f"the frame is not JSON text (or nests deeper than {MAX_DEPTH} levels)"


# A frame's id is read from its start when the frame is too large to be parsed whole.
_HEAD_CHARS = 4096
_ID_IN_HEAD = re.compile(r'"(request_id|id|op)"\s*:\s*("(?:[^"\\]|\\.){0,256}"|-?\d{1,32})')


def head_fields(raw: str) -> dict[str, Any]:
    """``op``, ``request_id`` and ``id`` as they appear at the start of a frame too large
    to parse: its refusal names its request, without building the whole frame in
    memory (a 60 MB frame parsed took several times its size)."""
    found: dict[str, Any] = {}
    for name, value in _ID_IN_HEAD.findall(raw[:_HEAD_CHARS]):
        if name not in found:
            try:
                found[name] = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
    return found


LARGE_FRAME_CHARS = 1024 * 1024
LARGE_FRAMES_AT_ONCE = 2


class LargeFrameGate:
    """At most ``at_once`` large frames parsed at a time in the process: parsing builds
    the frame's objects, several times its size, and ten clients sending 60 MB at once
    took the process from 140 MB to 1.5 GB. A connection waiting here reads no more,
    so its client is held back by TCP."""

    def __init__(self, at_once: int = LARGE_FRAMES_AT_ONCE) -> None:
        self._slots = asyncio.Semaphore(at_once)

    @contextlib.asynccontextmanager
    async def admit(self, raw: str) -> AsyncIterator[None]:
        if len(raw) < LARGE_FRAME_CHARS:
            yield
            return
        async with self._slots:
            yield


def parse(raw: str) -> object:
    """The frame's JSON, or None. orjson first (it refuses nesting deeper than
    ``MAX_DEPTH``); the standard library only for what orjson refuses but JSON allows
    (integers beyond 64 bits, as some clients' request ids), and never for a frame that
    nests deeper: its recursive parser would fail with ``RecursionError``."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            return None


def dump(frame: dict[str, Any]) -> str:
    try:
        return orjson.dumps(frame).decode()
    except TypeError:  # an integer beyond 64 bits (a client's request id): still JSON
        return json.dumps(frame)
