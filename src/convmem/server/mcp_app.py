"""The MCP face: tools and the ``thread://{id}`` resource on the official SDK's MCPServer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server import MCPServer
from mcp.server.mcpserver import Context  # noqa: TC002 - the SDK finds the ctx parameter by it
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import Resource
from pydantic import Field, ValidationError

from convmem.errors import ToolCallError
from convmem.server.auth import current_owner
from convmem.server.progress import fan_out, progress_notifier, reply_listener

# The tools' annotations are read at run time by the MCP SDK (their schemas).
from convmem.server.service import (
    ChatResult,  # noqa: TC001
    ConversationService,  # noqa: TC001
    ForkResult,  # noqa: TC001
    Health,  # noqa: TC001
    RewindResult,  # noqa: TC001
    ThreadPageView,  # noqa: TC001
    UpdateResult,  # noqa: TC001
)
from convmem.validation import MAX_SEQ

if TYPE_CHECKING:
    from convmem.server.metrics import Metrics

RECENT_THREADS = 20  # conversations listed as resources

INSTRUCTIONS = (
    "Conversation memory. Call `chat` with a prompt; pass the returned continuation_id "
    "back to continue the same conversation with its history. Threads expire after a "
    "few hours without turns and hold a limited number of turns."
)

# Every argument a client sends is bounded here, before any work, with a message that
# names the argument and its limit (the service and Memory check what is left).
MAX_MODEL_CHARS = 200
MAX_FILES = 100
MAX_PATH_CHARS = 1024
MAX_SYSTEM_PROMPT_CHARS = 100_000
MAX_CURSOR_CHARS = 512

ContinuationId = Annotated[
    str,
    Field(description="The continuation_id a previous chat returned (a UUID)", max_length=64),
]
Path = Annotated[str, Field(max_length=MAX_PATH_CHARS)]


class _ConversationsMCP(MCPServer):
    """MCPServer whose resource listing includes the caller's recent conversations."""

    def __init__(self, service: ConversationService) -> None:
        super().__init__(
            name="convmem", instructions=INSTRUCTIONS, version="0.1.0", log_level="WARNING"
        )
        self._service = service

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        """As the SDK's, but arguments that fail validation are refused in plain words:
        each argument and what is wrong with it, not the validator's report."""
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(_plain(name, exc.__cause__)) from None
            raise

    async def list_resources(self) -> list[Resource]:
        static = await super().list_resources()
        try:
            page = await self._service.thread_list(current_owner.get(), RECENT_THREADS)
        except ToolCallError:
            return static
        recent = [
            Resource(
                uri=f"thread://{t.continuation_id}",
                name=f"{t.tool_name or 'thread'} · {t.turns} turns · {t.updated_at[:16]}",
                description="A conversation, as Markdown",
                mime_type="text/markdown",
            )
            for t in page.threads
        ]
        return static + recent


def build_mcp(
    service: ConversationService,
    *,
    metrics: Metrics,
    transport: str,
    is_operator: Callable[[str | None], bool] = lambda owner: True,
) -> MCPServer:
    """The MCP server; ``transport`` labels its calls in the metrics; ``is_operator`` says
    which clients may see the whole server's counters (every client, by default: stdio
    and tests have one)."""
    mcp = _ConversationsMCP(service)

    @contextlib.contextmanager
    def _tool_errors(tool: str) -> Iterator[None]:
        """Count the call; a ``ToolCallError`` becomes the SDK's ``ToolError`` (an error result)."""
        with metrics.observe(tool, transport):
            try:
                yield
            except ToolCallError as exc:
                raise ToolError(str(exc)) from exc

    @mcp.tool(description="Talk to the model; continue a conversation with its continuation_id.")
    async def chat(
        prompt: Annotated[str, Field(description="What to say to the model")],
        continuation_id: Annotated[
            str | None, Field(description="Omit to start a new conversation", max_length=64)
        ] = None,
        model: Annotated[
            str | None,
            Field(
                description="Model name; the provider's default if omitted",
                max_length=MAX_MODEL_CHARS,
            ),
        ] = None,
        files: Annotated[
            list[Path] | None,
            Field(description="File paths this turn refers to", max_length=MAX_FILES),
        ] = None,
        system_prompt: Annotated[str | None, Field(max_length=MAX_SYSTEM_PROMPT_CHARS)] = None,
        ctx: Context[Any, Any] | None = None,
    ) -> ChatResult:
        # The reply streams from the model only when somebody listens: a WebSocket
        # client (stream_chunk frames) or an MCP client that sent a progressToken.
        notifier = progress_notifier(ctx) if ctx is not None else None
        websocket = reply_listener.get()
        listeners = [websocket] if websocket is not None else []
        if notifier is not None:
            listeners.append(notifier.on_text)
        with _tool_errors("chat"):
            result = await service.chat(
                current_owner.get(),
                prompt,
                continuation_id,
                model,
                files,
                system_prompt,
                on_text=fan_out(listeners),
            )
            if notifier is not None:
                await notifier.finish()
            return result

    @mcp.tool(description="A conversation with all its turns.")
    async def thread_get(continuation_id: ContinuationId) -> dict[str, Any]:
        with _tool_errors("thread_get"):
            return await service.thread_get(current_owner.get(), continuation_id)

    @mcp.tool(description="Your live conversations, most recent first; pass next_cursor for more.")
    async def thread_list(
        limit: Annotated[int, Field(ge=1, le=100, strict=True)] = 20,
        cursor: Annotated[str | None, Field(max_length=MAX_CURSOR_CHARS)] = None,
    ) -> ThreadPageView:
        with _tool_errors("thread_list"):
            return await service.thread_list(current_owner.get(), limit, cursor)

    @mcp.tool(description="A conversation as Markdown or JSON text.")
    async def thread_export(
        continuation_id: ContinuationId, format: Literal["markdown", "json"] = "markdown"
    ) -> str:
        with _tool_errors("thread_export"):
            return await service.thread_export(current_owner.get(), continuation_id, format)

    @mcp.tool(
        description="Branch a conversation: a new continuation_id whose history is this"
        " conversation's turns up to at_seq (default: all of them); the original is unchanged."
    )
    async def thread_fork(
        continuation_id: ContinuationId,
        at_seq: Annotated[
            int | None,
            Field(
                ge=0,
                le=MAX_SEQ,
                strict=True,  # true is not seq 1, nor "3" seq 3
                description="The seq of the last turn to keep (see thread_get)",
            ),
        ] = None,
    ) -> ForkResult:
        with _tool_errors("thread_fork"):
            return await service.thread_fork(current_owner.get(), continuation_id, at_seq)

    @mcp.tool(
        description="Drop the newest turns of a conversation (2: the last prompt and reply),"
        " to take a different turn from there."
    )
    async def thread_rewind(
        continuation_id: ContinuationId,
        turns: Annotated[
            int, Field(ge=1, le=10_000, strict=True, description="How many turns to drop")
        ] = 2,
    ) -> RewindResult:
        with _tool_errors("thread_rewind"):
            return await service.thread_rewind(current_owner.get(), continuation_id, turns)

    @mcp.tool(
        description="Rename a conversation (title) or replace its metadata (a JSON object;"
        " a title given too goes on top); its turns stay."
    )
    async def thread_update(
        continuation_id: ContinuationId,
        title: Annotated[str | None, Field(description="The new title")] = None,
        metadata: Annotated[
            dict[str, Any] | None, Field(description="Replaces the conversation's metadata")
        ] = None,
    ) -> UpdateResult:
        with _tool_errors("thread_update"):
            return await service.thread_update(
                current_owner.get(), continuation_id, title, metadata
            )

    @mcp.tool(description="Delete a conversation and its turns.")
    async def thread_delete(continuation_id: ContinuationId) -> dict[str, bool]:
        with _tool_errors("thread_delete"):
            return {"deleted": await service.thread_delete(current_owner.get(), continuation_id)}

    @mcp.tool(
        description="Cache and store counters of the whole server: hits per layer, store round"
        " trips, Redis state (for operators)."
    )
    async def memory_stats() -> dict[str, Any]:
        with _tool_errors("memory_stats"):
            if not is_operator(current_owner.get()):
                raise ToolCallError(
                    "memory_stats reports the whole server's counters (every client's"
                    " traffic), so only an operator may call it: an operator's client name"
                    " goes in CONVMEM_OPERATORS"
                )
            return service.stats()

    @mcp.tool(description="Whether the store and Redis answer.")
    async def health() -> Health:
        with _tool_errors("health"):
            return await service.health()

    @mcp.resource("thread://{thread_id}", mime_type="text/markdown", description="A conversation")
    async def thread_resource(thread_id: str) -> str:
        with _tool_errors("thread_resource"):
            return await service.thread_export(current_owner.get(), thread_id, "markdown")

    return mcp


def _plain(tool: str, error: ValidationError) -> str:
    """``invalid arguments for chat: files: List should have at most 100 items; …``"""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'arguments'}: {item['msg']}"
        for item in error.errors(include_url=False, include_input=False)
    )
    return f"invalid arguments for {tool}: {problems}"
