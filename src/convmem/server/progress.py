"""What a client hears while a tool runs: the model's reply as it streams.

Transports differ in how they carry it. The WebSocket daemon sets ``reply_listener``
for the call it runs (its listener sends ``stream_chunk`` frames); an MCP client asks
with a ``progressToken`` and gets progress notifications carrying the text so far.
The chat tool streams from the model only when somebody listens.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from mcp.shared.jsonrpc_dispatcher import progress_token_from_params

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from convmem.providers.base import TextSink

# Set by a transport around one tool call; inherited by the call's task.
reply_listener: ContextVar[TextSink | None] = ContextVar("convmem_reply_listener", default=None)

ProgressReport = Callable[[float, float | None, str | None], Awaitable[None]]

PROGRESS_INTERVAL_SECONDS = 0.25


class ProgressNotifier:
    """The streamed reply as MCP progress notifications: ``progress`` counts the
    characters so far and ``message`` holds the text so far.

    Notifications are coalesced to one per ``interval`` (and one at the end), because
    each carries the whole text so far: one per token would send a long reply's text
    quadratically often.
    """

    def __init__(
        self,
        report: ProgressReport,
        *,
        interval: float = PROGRESS_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._report = report
        self._interval = interval
        self._clock = clock
        self._pieces: list[str] = []
        self._chars = 0
        self._sent_chars = 0
        self._last_sent = float("-inf")

    async def on_text(self, piece: str) -> None:
        self._pieces.append(piece)
        self._chars += len(piece)
        if self._clock() - self._last_sent >= self._interval:
            await self._send()

    async def finish(self) -> None:
        """Send what the last notification did not carry yet."""
        if self._chars != self._sent_chars:
            await self._send()

    async def _send(self) -> None:
        self._last_sent = self._clock()
        self._sent_chars = self._chars
        await self._report(float(self._chars), None, "".join(self._pieces))


def progress_notifier(ctx: Context[Any, Any]) -> ProgressNotifier | None:
    """A notifier for this MCP request, or None when the client sent no progressToken
    (or the tool is called outside an MCP request, as the WebSocket daemon does)."""
    try:
        params = ctx.request_context.params
    except ValueError:  # no request context: not an MCP request
        return None
    if progress_token_from_params(params) is None:
        return None
    return ProgressNotifier(ctx.report_progress)


def fan_out(sinks: list[TextSink]) -> TextSink | None:
    """One sink feeding every listener, or None when nobody listens."""
    if not sinks:
        return None
    if len(sinks) == 1:
        return sinks[0]

    async def each(piece: str) -> None:
        for sink in sinks:
            await sink(piece)

    return each
