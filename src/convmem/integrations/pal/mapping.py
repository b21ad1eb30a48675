"""pal's ``ThreadContext`` (as a JSON object) and convmem's ``Thread``, both ways.

Each pal turn becomes a convmem turn with pal's fields where convmem has them (role,
content, files, images, tool, provider, model), so convmem's own history and exports
stay readable; what convmem has no field for (pal's timestamp, ``model_metadata``, a
``files``/``images`` that was null rather than empty, fields of a later pal) is kept in
the turn's metadata under ``pal``. The thread's ``created_at``, ``initial_context`` and
``last_updated_at`` live in metadata too: the thread's at creation, then each appended
turn carries the ``last_updated_at`` that came with it. Nothing pal sent is lost, and the
JSON read back is pal's own serialisation of the same object.
"""

from __future__ import annotations

import hashlib
import json
from types import MappingProxyType
from typing import Any

from convmem.errors import InvalidPalContextError
from convmem.models import Thread, Turn

PAL = "pal"
NATIVE_TEXT = ("tool_name", "model_provider", "model_name")
NATIVE_LISTS = ("files", "images")
HEADER = ("thread_id", "parent_thread_id", "created_at", "tool_name", "initial_context")
# What makes it the same conversation: the thread's own columns, which a rewrite keeps.
IDENTITY = ("thread_id", "parent_thread_id", "tool_name")


def parse_context(value: str, thread_id: str) -> dict[str, Any]:
    """pal's JSON as a dict, checked for what the mapping relies on."""
    try:
        context = json.loads(value)
    except (TypeError, ValueError) as exc:
        raise InvalidPalContextError(f"the value is not JSON: {exc}") from None
    if not isinstance(context, dict):
        raise InvalidPalContextError("the value is not a JSON object (a pal ThreadContext)")
    if context.get("thread_id") != thread_id:
        raise InvalidPalContextError(
            f"the ThreadContext is for thread {context.get('thread_id')!r}, "
            f"not for the key's thread {thread_id}"
        )
    turns = context.get("turns")
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise InvalidPalContextError("turns must be a list of objects")
    for field in ("created_at", "last_updated_at", "tool_name"):
        if not isinstance(context.get(field), str):
            raise InvalidPalContextError(f"{field} must be a string")
    if not isinstance(context.get("initial_context"), dict):
        raise InvalidPalContextError("initial_context must be an object")
    for turn in turns:
        if not isinstance(turn.get("role"), str) or not isinstance(turn.get("content"), str):
            raise InvalidPalContextError("every turn needs a string role and content")
    return context


def thread_metadata(context: dict[str, Any]) -> dict[str, Any]:
    return {
        PAL: {
            "created_at": context["created_at"],
            "last_updated_at": context["last_updated_at"],
            "initial_context": context["initial_context"],
        }
    }


def written_by_pal(thread: Thread) -> bool:
    """Whether this mapping wrote the thread (it keeps pal's header in its metadata)."""
    header = thread.metadata.get(PAL)
    return isinstance(header, dict | MappingProxyType) and "created_at" in header


def same_header(context: dict[str, Any], stored: dict[str, Any]) -> bool:
    return all(context.get(field) == stored.get(field) for field in HEADER)


def same_conversation(context: dict[str, Any], stored: dict[str, Any]) -> bool:
    return all(context.get(field) == stored.get(field) for field in IDENTITY)


def agreed_turns(turns: list[dict[str, Any]], stored: list[dict[str, Any]]) -> int:
    """How many leading turns the two lists have in common."""
    agreed = 0
    for new, old in zip(turns, stored, strict=False):
        if new != old:
            break
        agreed += 1
    return agreed


def to_turns(
    pal_turns: list[dict[str, Any]], *, first_index: int, last_updated_at: str
) -> list[Turn]:
    """convmem turns for pal turns that start at ``first_index`` in their thread; the
    last carries the thread's ``last_updated_at``."""
    turns = []
    for offset, pal_turn in enumerate(pal_turns):
        extra: dict[str, Any] = {
            k: v
            for k, v in pal_turn.items()
            if k not in ("role", "content", *NATIVE_TEXT, *NATIVE_LISTS)
        }
        for name in NATIVE_LISTS:
            if name in pal_turn and pal_turn[name] is None:
                extra[f"{name}_null"] = True  # pal distinguishes null from []
        if offset == len(pal_turns) - 1:
            extra["thread_last_updated_at"] = last_updated_at
        index = first_index + offset
        turns.append(
            Turn(
                role=pal_turn["role"],
                content=pal_turn["content"],
                tool_name=pal_turn.get("tool_name"),
                model_provider=pal_turn.get("model_provider"),
                model_name=pal_turn.get("model_name"),
                files=tuple(pal_turn.get("files") or ()),
                images=tuple(pal_turn.get("images") or ()),
                metadata={PAL: extra},
                key=turn_key(index, pal_turn),
            )
        )
    return turns


def turn_key(index: int, pal_turn: dict[str, Any]) -> str:
    """The same pal turn at the same place gets the same key: a retried set after a lost
    acknowledgement appends nothing twice."""
    digest = hashlib.sha256(json.dumps(pal_turn, sort_keys=True).encode()).hexdigest()
    return f"pal:{index}:{digest[:32]}"


def to_context(thread: Thread) -> dict[str, Any]:
    """pal's ThreadContext fields, in pal's order, for a thread this mapping wrote."""
    header = dict(thread.metadata.get(PAL, {}))
    last_updated_at = header.get("last_updated_at")
    turns = []
    for turn in thread.turns:
        extra = dict(turn.metadata.get(PAL, {}))
        last_updated_at = extra.pop("thread_last_updated_at", last_updated_at)
        pal_turn: dict[str, Any] = {"role": turn.role, "content": turn.content}
        pal_turn["timestamp"] = extra.pop("timestamp", None)
        for name, value in (("files", turn.files), ("images", turn.images)):
            pal_turn[name] = None if extra.pop(f"{name}_null", False) else list(value)
        pal_turn["tool_name"] = turn.tool_name
        pal_turn["model_provider"] = turn.model_provider
        pal_turn["model_name"] = turn.model_name
        pal_turn.update(extra)  # model_metadata, and fields of a later pal
        turns.append(pal_turn)
    return {
        "thread_id": thread.id,
        "parent_thread_id": thread.parent_id,
        "created_at": header.get("created_at"),
        "last_updated_at": last_updated_at,
        "tool_name": thread.tool_name,
        "turns": turns,
        "initial_context": header.get("initial_context", {}),
    }
