"""convmem as a ``Session`` of the OpenAI Agents SDK (``agents.memory.Session``).

::

    memory = Memory.from_url("postgresql://…", cache_url="redis://…")
    async with memory:
        session = ConvmemSession("user-42", memory)
        result = await Runner.run(agent, "Hello", session=session)

A session is one convmem thread. Its id is derived from the application's
``session_id`` and the ``owner`` (a UUID5), so every instance finds the same thread
without a lookup; the thread is created by the first ``add_items``. Each item is one
turn whose role and content keep convmem's history and exports readable (a message's
text, a tool call's arguments, a tool result's output) and whose metadata holds the
rest of the item as JSON, so ``get_items`` returns exactly the dicts that were added.

Cost in store round trips: ``get_items`` 0 on a warm cache, 1 cold; ``add_items`` 1
whatever the number of items (2 for the very first, which creates the thread);
``pop_item`` 1; ``clear_session`` 1. Concurrent ``add_items`` (tasks, processes) each
commit atomically: every item is kept once, in commit order.

A session holds at most the store's ``max_turns`` items (``Memory.from_url(...,
max_turns=…)``) and lives ``thread_ttl`` after its last write, as any thread.

The SDK is the ``openai-agents`` extra (``pip install 'convmem[openai-agents]'``); this
module is imported only by whoever uses it.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING, Any, Final, cast

import orjson
from agents.memory import SessionABC, SessionSettings
from agents.memory.session_settings import resolve_session_limit

from convmem.errors import (
    InvalidInputError,
    ThreadExistsError,
    ThreadExpiredError,
    ThreadNotFoundError,
)
from convmem.limits import InputLimits
from convmem.models import Role, Turn

if TYPE_CHECKING:
    from agents.items import TResponseInputItem

    from convmem.memory import Memory
    from convmem.models import Thread

# Session ids map to thread ids in this namespace (fixed: changing it loses every session).
NAMESPACE: Final = uuid.UUID("5b0b8d0e-6f4e-4d61-9c55-0a9f3c2e7d41")

ITEM: Final = "openai_agents_item"  # metadata: the item as JSON, without its text field
TEXT_FIELD: Final = "openai_agents_text"  # metadata: which field of the item is the content

# The field of each kind of item that holds its text (the turn's content).
_TEXT_FIELDS: Final = {"message": "content", "function_call_output": "output"}
_MAX_TOOL_NAME: Final = InputLimits().max_name_chars  # a longer name stays in the item only


def session_thread_id(session_id: str, owner: str | None) -> str:
    """The thread id of ``session_id`` for ``owner``: the same on every instance."""
    return str(uuid.uuid5(NAMESPACE, f"{owner or ''}\x00{session_id}"))


class ConvmemSession(SessionABC):
    """An Agents SDK session kept in a convmem thread (see the module docstring).

    Args:
        session_id: the application's name for the conversation ("user-42").
        memory: an open ``Memory``; the session does not close it.
        owner: the convmem owner the thread belongs to (threads are owner-scoped).
        session_settings: ``SessionSettings(limit=N)`` makes ``get_items()`` return the
            newest N items by default.
    """

    def __init__(
        self,
        session_id: str,
        memory: Memory,
        *,
        owner: str | None = None,
        session_settings: SessionSettings | None = None,
    ) -> None:
        if not isinstance(session_id, str) or not session_id:
            raise InvalidInputError("session_id must be a non-empty string")
        self.session_id = session_id
        self.session_settings = session_settings or SessionSettings()
        self.memory = memory
        self.owner = owner
        self.thread_id = session_thread_id(session_id, owner)

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The newest ``limit`` items (all when None), oldest first."""
        limit = resolve_session_limit(limit, self.session_settings)
        thread = await self.memory.get_thread(self.thread_id, owner=self.owner)
        if thread is None or (limit is not None and limit <= 0):
            return []
        turns = thread.turns if limit is None else thread.turns[-limit:]
        return [item_of(turn) for turn in turns]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` atomically, in order (one store round trip)."""
        if not items:
            return
        turns = [turn_of(item) for item in items]
        try:
            await self.memory.add_turns(self.thread_id, turns, owner=self.owner)
            return
        except ThreadNotFoundError:
            pass  # the session's first items: create its thread
        except ThreadExpiredError:
            # Idle past the thread's lifetime: the session starts over under its id. The
            # delete fences the id in every cache, so the new thread is served from the
            # store (correct, uncached) until the fences are forgotten (Redis' after its
            # TTL, an instance's watermark when evicted or restarted); give long-lived
            # sessions a thread lifetime longer than their idle spells.
            await self.memory.delete_thread(self.thread_id, owner=self.owner)
        try:
            await self.memory.create_thread(
                thread_id=self.thread_id,
                turns=turns,
                owner=self.owner,
                tool_name="openai-agents",
                metadata={"session_id": self.session_id},
            )
        except ThreadExistsError:  # another task or instance created it first
            await self.memory.add_turns(self.thread_id, turns, owner=self.owner)

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest item (one store round trip)."""
        try:
            turn = await self.memory.pop_turn(self.thread_id, owner=self.owner)
        except (ThreadNotFoundError, ThreadExpiredError):
            return None
        return None if turn is None else item_of(turn)

    async def clear_session(self) -> None:
        """Remove every item; the session's thread stays (one store round trip)."""
        with contextlib.suppress(ThreadNotFoundError, ThreadExpiredError):
            await self.memory.clear_thread(self.thread_id, owner=self.owner)

    async def thread(self) -> Thread | None:
        """The convmem thread behind this session (None before its first items)."""
        return await self.memory.get_thread(self.thread_id, owner=self.owner)


def turn_of(item: TResponseInputItem) -> Turn:
    """An item as a turn: readable role and content, the rest of it in the metadata."""
    if not isinstance(item, dict):
        raise InvalidInputError(f"a session item must be a dict, got {type(item).__name__}")
    fields = cast("dict[str, Any]", item)
    kind = fields.get("type", "message" if "role" in fields else None)
    text_field = _TEXT_FIELDS.get(kind or "")
    text = fields.get(text_field) if text_field else None
    metadata: dict[str, Any]
    if isinstance(text, str):
        rest = {k: v for k, v in fields.items() if k != text_field}
        metadata = {ITEM: _json(rest), TEXT_FIELD: text_field}
        content = text
    else:
        metadata = {ITEM: _json(fields)}
        content = _readable(fields)
    name = fields.get("name")
    return Turn(
        role=_role(kind, fields.get("role")),
        content=content,
        tool_name=name if isinstance(name, str) and len(name) <= _MAX_TOOL_NAME else None,
        metadata=metadata,
    )


def item_of(turn: Turn) -> TResponseInputItem:
    """The item ``turn_of`` made ``turn`` from, exactly (a new dict every time)."""
    raw = turn.metadata.get(ITEM)
    if not isinstance(raw, str):  # a turn written by something else: a plain message
        return cast("TResponseInputItem", {"role": turn.role, "content": turn.content})
    item = orjson.loads(raw)
    text_field = turn.metadata.get(TEXT_FIELD)
    if isinstance(text_field, str):
        item[text_field] = turn.content
    return cast("TResponseInputItem", item)


def _role(kind: str | None, role: object) -> Role:
    if kind == "message":
        if role in ("user", "assistant", "system"):
            return role
        return "system" if role == "developer" else "user"
    if kind is not None and kind.endswith("_output"):
        return "tool"  # function_call_output and the other tools' results
    return "assistant"  # tool calls, reasoning and whatever the model produced


def _readable(item: dict[str, Any]) -> str:
    """What a person reading the thread should see of an item without a text field."""
    content = item.get("content")
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        joined = "\n".join(t for t in texts if isinstance(t, str))
        if joined:
            return joined
    if item.get("type") == "function_call" and isinstance(item.get("arguments"), str):
        return f"{item.get('name')}({item['arguments']})"
    return _json(item)


def _json(value: object) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:
        raise InvalidInputError(f"a session item must be JSON-serialisable: {exc}") from exc
