"""The conversation tools' logic, independent of any transport.

Every method takes the caller's ``owner`` (the authenticated client) and raises
``ToolCallError`` with a message meant for the model or person reading it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from convmem.compaction import summariser_for
from convmem.compactor import Compactor
from convmem.errors import (
    ConfigurationError,
    ConvMemError,
    DecryptionError,
    InvalidInputError,
    ProviderError,
    StoreError,
    StoreUnavailableError,
    ThreadExpiredError,
    ThreadFullError,
    ThreadNotFoundError,
    ToolCallError,
)
from convmem.export import thread_to_dict
from convmem.limits import HISTORY_TOKENS
from convmem.models import Turn
from convmem.summaries import unsummarised

if TYPE_CHECKING:
    from convmem.memory import Memory
    from convmem.messages import ChatMessage
    from convmem.models import Thread
    from convmem.providers.base import Provider, TextSink
    from convmem.settings import Settings

log = logging.getLogger("convmem.server")

MAX_PROMPT_CHARS = 200_000
HEALTH_STORE_SECONDS = 0.7  # with Redis' share, /health answers within a second
HEALTH_REDIS_SECONDS = 0.25


class ContinuationOffer(BaseModel):
    """The original server's way of saying a conversation can go on."""

    continuation_id: str
    remaining_turns: int
    note: str


class ForkResult(BaseModel):
    continuation_id: str = Field(description="The new conversation: pass it to chat")
    parent_id: str = Field(description="The conversation it was forked from (unchanged)")
    parent_seq: int = Field(description="The parent's turns up to this seq come first")
    remaining_turns: int = Field(description="Turns the new conversation may take")
    note: str


class RewindResult(BaseModel):
    continuation_id: str
    removed: int = Field(description="How many turns were removed")
    turns: int = Field(description="How many turns the conversation has now")
    remaining_turns: int = Field(description="Turns left before the thread is full")


class UpdateResult(BaseModel):
    continuation_id: str
    metadata: dict[str, Any] = Field(description="The conversation's metadata now")
    version: int = Field(description="The conversation's version (every write raises it)")


class ChatResult(BaseModel):
    content: str = Field(description="The model's reply")
    continuation_id: str = Field(description="Pass this back to continue the conversation")
    remaining_turns: int = Field(description="Turns left before the thread is full")
    provider: str
    model: str
    thread_source: Literal["new", "l1", "l2", "store"] = Field(
        description="Where the thread came from: new, the L1 or L2 cache, or the store"
    )
    # The shape of the server convmem replaces, for tools written against it.
    status: Literal["continuation_available", "success"] = Field(
        description="continuation_available while the thread has turns left"
    )
    continuation_offer: ContinuationOffer | None = Field(
        description="How to continue, while the thread has turns left"
    )
    history_turns: int = Field(0, description="Earlier turns of this conversation")
    summarised_turns: int = Field(
        0, description="Of those, how many the model saw only as a summary (compaction)"
    )
    summarised_share: float = Field(
        0.0, description="summarised_turns / history_turns (0 when there is no history)"
    )


class ThreadSummaryView(BaseModel):
    continuation_id: str
    tool_name: str | None
    turns: int
    updated_at: str
    expires_at: str


class ThreadPageView(BaseModel):
    threads: list[ThreadSummaryView]
    next_cursor: str | None


StoreStatus = Literal["ok", "timeout", "unavailable", "error"]
RedisStatus = Literal["ok", "down", "disabled"]


HealthStatus = Literal["ok", "degraded", "unavailable"]


class Health(BaseModel):
    ok: bool  # the store answers: this instance serves (without Redis too, from the store)
    status: HealthStatus  # degraded: Redis is configured and does not answer
    store: StoreStatus
    redis: RedisStatus
    detail: str | None = None  # what the store said; only for an authenticated caller


class ConversationService:
    """The tools' logic. With a ``compactor``, a thread whose history grew past its
    policy's share of ``history_tokens`` is compacted after the reply (off the request's
    path; see ``convmem.compaction``)."""

    def __init__(
        self,
        memory: Memory,
        provider: Provider,
        *,
        history_tokens: int = HISTORY_TOKENS,
        compactor: Compactor | None = None,
    ) -> None:
        self.memory = memory
        self.provider = provider
        self.history_tokens = history_tokens
        self.compactor = compactor

    @classmethod
    def from_settings(
        cls, memory: Memory, provider: Provider, settings: Settings
    ) -> ConversationService:
        """The service as ``settings`` configure it: its history budget, and compaction
        (``CONVMEM_COMPACTION``) by ``CONVMEM_COMPACTION_MODEL`` or the provider's model."""
        compactor = None
        if settings.compaction.enabled:
            compactor = Compactor(
                memory,
                summariser_for(provider, settings.compaction.model),
                max_tokens=settings.server.history_tokens,
                policy=settings.compaction.policy,
            )
        return cls(
            memory, provider, history_tokens=settings.server.history_tokens, compactor=compactor
        )

    async def chat(
        self,
        owner: str | None,
        prompt: str,
        continuation_id: str | None = None,
        model: str | None = None,
        files: list[str] | None = None,
        system_prompt: str | None = None,
        on_text: TextSink | None = None,
    ) -> ChatResult:
        """Resume (or start) a thread, call the model with its history, save both turns.

        With ``on_text``, the model's reply is streamed to it piece by piece as well.
        """
        if not prompt.strip():
            raise ToolCallError("prompt is empty: say something to the model")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ToolCallError(
                f"prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}"
            )
        thread: Thread | None = None
        source: Literal["new", "l1", "l2", "store"] = "new"
        history: list[ChatMessage] = []
        ancestors: tuple[Thread, ...] = ()
        earlier = summarised = 0
        with _as_tool_error():
            if continuation_id is not None:
                thread, source = await self.memory.lookup_thread(continuation_id, owner=owner)
                if thread is None:
                    raise ToolCallError(_gone(continuation_id, self.memory))
                ancestors = await self.memory.get_ancestors(thread, owner=owner)
                history = self.memory.history_messages(
                    thread, max_tokens=self.history_tokens, ancestors=ancestors
                )
                earlier = len(thread.turns) + sum(len(a.turns) for a in ancestors)
                summarised = unsummarised(thread, ancestors).summarised
            completion = await self.provider.complete(
                prompt=prompt,
                history=history,
                history_turns=earlier,
                system_prompt=system_prompt,
                model=model,
                on_text=on_text,
            )
            request = uuid.uuid4().hex  # keys make a retried save idempotent
            turns = [
                Turn(
                    role="user",
                    content=prompt,
                    tool_name="chat",
                    files=tuple(files or ()),
                    key=f"{request}:user",
                ),
                Turn(
                    role="assistant",
                    content=completion.text,
                    tool_name="chat",
                    model_provider=completion.provider,
                    model_name=completion.model,
                    key=f"{request}:assistant",
                ),
            ]
            if thread is None:
                saved = await self.memory.create_thread(tool_name="chat", turns=turns, owner=owner)
            else:
                saved = await self.memory.add_turns(thread.id, turns, owner=owner)
        if self.compactor is not None:  # after the reply is saved; returns at once
            self.compactor.schedule(saved, ancestors, owner)
        remaining = max(self.memory.max_turns - len(saved.turns), 0)
        offer = None
        if remaining:
            offer = ContinuationOffer(
                continuation_id=saved.id,
                remaining_turns=remaining,
                note=(
                    f"Pass continuation_id {saved.id} to chat to continue this conversation "
                    f"({remaining} turns left)."
                ),
            )
        return ChatResult(
            content=completion.text,
            continuation_id=saved.id,
            remaining_turns=remaining,
            provider=completion.provider,
            model=completion.model,
            thread_source=source,
            status="continuation_available" if offer else "success",
            continuation_offer=offer,
            history_turns=earlier,
            summarised_turns=summarised,
            summarised_share=round(summarised / earlier, 4) if earlier else 0.0,
        )

    async def aclose(self) -> None:
        """Stop background compactions (a stopped one leaves its thread as it was)."""
        if self.compactor is not None:
            await self.compactor.aclose()

    async def thread_fork(
        self, owner: str | None, continuation_id: str, at_seq: int | None
    ) -> ForkResult:
        with _as_tool_error():
            fork = await self.memory.fork_thread(continuation_id, at_seq=at_seq, owner=owner)
        parent_seq = fork.parent_seq or 0
        return ForkResult(
            continuation_id=fork.id,
            parent_id=continuation_id,
            parent_seq=parent_seq,
            remaining_turns=self.memory.max_turns,
            note=(
                f"Pass continuation_id {fork.id} to chat to continue from turn {parent_seq} of"
                f" {continuation_id}; that conversation is unchanged."
            ),
        )

    async def thread_rewind(
        self, owner: str | None, continuation_id: str, turns: int
    ) -> RewindResult:
        with _as_tool_error():
            thread, removed = await self.memory.rewind_thread(continuation_id, turns, owner=owner)
        return RewindResult(
            continuation_id=thread.id,
            removed=len(removed),
            turns=len(thread.turns),
            remaining_turns=max(self.memory.max_turns - len(thread.turns), 0),
        )

    async def thread_get(self, owner: str | None, continuation_id: str) -> dict[str, Any]:
        with _as_tool_error():
            thread = await self.memory.get_thread(continuation_id, owner=owner)
        if thread is None:
            raise ToolCallError(_gone(continuation_id, self.memory))
        return thread_to_dict(thread)

    async def thread_list(
        self, owner: str | None, limit: int = 20, cursor: str | None = None
    ) -> ThreadPageView:
        with _as_tool_error():
            page = await self.memory.list_threads(owner=owner, limit=limit, cursor=cursor)
        return ThreadPageView(
            threads=[
                ThreadSummaryView(
                    continuation_id=t.id,
                    tool_name=t.tool_name,
                    turns=t.turns,
                    updated_at=t.updated_at.isoformat(),
                    expires_at=t.expires_at.isoformat(),
                )
                for t in page.threads
            ],
            next_cursor=page.next_cursor,
        )

    async def thread_export(
        self, owner: str | None, continuation_id: str, format: Literal["markdown", "json"]
    ) -> str:
        with _as_tool_error():
            return await self.memory.export_thread(continuation_id, owner=owner, format=format)

    async def thread_update(
        self,
        owner: str | None,
        continuation_id: str,
        title: str | None,
        metadata: dict[str, Any] | None,
    ) -> UpdateResult:
        with _as_tool_error():
            thread = await self.memory.update_thread(
                continuation_id, metadata=metadata, title=title, owner=owner
            )
        return UpdateResult(
            continuation_id=thread.id, metadata=dict(thread.metadata), version=thread.version
        )

    async def thread_delete(self, owner: str | None, continuation_id: str) -> bool:
        with _as_tool_error():
            return await self.memory.delete_thread(continuation_id, owner=owner)

    def stats(self) -> dict[str, Any]:
        return self.memory.stats.as_dict()

    async def health(self, *, detailed: bool = True) -> Health:
        """Within about a second whatever the store and Redis do: a status word for each,
        and, when ``detailed`` (an authenticated caller), what the store said."""
        store: StoreStatus = "ok"
        detail: str | None = None
        try:
            async with asyncio.timeout(HEALTH_STORE_SECONDS):
                await self.memory.ping()
        except TimeoutError:
            store, detail = "timeout", f"no answer within {HEALTH_STORE_SECONDS:g} s"
        except StoreUnavailableError as exc:
            store, detail = "unavailable", str(exc)
        except ConvMemError as exc:  # a refused key, a missing schema
            store, detail = "error", str(exc)
        try:
            async with asyncio.timeout(HEALTH_REDIS_SECONDS):
                answered = await self.memory.ping_cache()
        except TimeoutError:
            answered = False
        redis: RedisStatus = "disabled" if answered is None else "ok" if answered else "down"
        status: HealthStatus = (
            "unavailable" if store != "ok" else "degraded" if redis == "down" else "ok"
        )
        return Health(
            ok=store == "ok",
            status=status,
            store=store,
            redis=redis,
            detail=detail if detailed else None,
        )


def _gone(continuation_id: str, memory: Memory) -> str:
    hours = memory.thread_ttl.total_seconds() / 3600
    return (
        f"continuation_id {continuation_id} is unknown or has expired (threads expire "
        f"{hours:g} h after their last turn): call chat without continuation_id to start "
        "a new conversation"
    )


@contextlib.contextmanager
def _as_tool_error() -> Iterator[None]:
    """Turn convmem's errors into tool failures with messages that say what to do."""
    try:
        yield
    except ThreadFullError as exc:  # the store's advice is for Python callers: say it once
        raise ToolCallError(
            f"conversation {exc.thread_id} is full (it holds at most {exc.max_turns} turns):"
            " start a new conversation by calling chat without continuation_id"
        ) from exc
    except (ThreadExpiredError, ThreadNotFoundError) as exc:
        raise ToolCallError(f"{exc}: call chat without continuation_id to start over") from exc
    except (InvalidInputError, ProviderError) as exc:
        raise ToolCallError(str(exc)) from exc
    except DecryptionError as exc:  # the detail (which key, what failed) is in the log
        raise ToolCallError(
            f"conversation {exc.thread_id} cannot be decrypted with this server's keys; call"
            " chat without continuation_id to start a new one"
        ) from exc
    except StoreUnavailableError as exc:  # the driver's words stay in the server's log
        log.warning("the store is unavailable: %s", exc)
        raise ToolCallError(
            "the conversation store cannot be reached right now; try again in a moment"
        ) from exc
    except (StoreError, ConfigurationError) as exc:
        log.error("a tool call failed in the store: %s", exc)
        raise ToolCallError(
            "the conversation store could not carry out this call (the server's log says why)"
        ) from exc
    except ConvMemError as exc:  # convmem's own words about the caller's request
        raise ToolCallError(str(exc)) from exc
