"""``history_messages``: a thread (and its parent chain) as native chat messages within a
token budget, shaped so that providers can cache the prompt's prefix.

- Each turn is one message in its own role, oldest first; an assistant turn that calls
  tools (``metadata["tool_calls"]``) and the tool turns answering it
  (``metadata["tool_call_id"]``) form one block, kept or dropped together, so a
  provider never sees a tool result without its call or a call without its results.
- Nothing that changes from one request to the next sits before the turns: no counters,
  no timestamps. The files the conversation referenced are listed once, in a system
  message *after* the turns.
- When the history outgrows the budget, old turns go in whole chunks (each about
  ``chunk_fraction`` of the budget, fixed from the start of the conversation), not one
  turn per request: the first message shown stays the same for many requests in a row,
  so their prompts share everything but their newest turns.
- A compaction summary (``Thread.summary``, see ``convmem.compaction``) stands for every
  turn it covers: it comes first, as one system message, then the turns after it. It
  changes only when the thread is compacted again, so it is part of the stable prefix.

Tokens are estimated as in ``history``: ~4 characters each, no tokenizer.
"""

from __future__ import annotations

from itertools import accumulate
from typing import TYPE_CHECKING, Any, Literal, Required, TypedDict

from convmem.errors import InvalidInputError
from convmem.history import estimate_tokens
from convmem.limits import HISTORY_TOKENS
from convmem.summaries import unsummarised

if TYPE_CHECKING:
    from collections.abc import Sequence

    from convmem.models import Thread, Turn

MESSAGE_OVERHEAD_TOKENS = 4  # role and framing, per message
CHUNK_FRACTION = 0.5
NOTE_TOKENS = 24  # kept for the note that says how many messages are not shown
SUMMARY_HEADING = "Summary of the earlier conversation (its messages are not shown):"


class ChatMessage(TypedDict, total=False):
    """A chat-completions message."""

    role: Required[Literal["system", "user", "assistant", "tool"]]
    content: Required[str]
    tool_calls: list[dict[str, Any]]
    tool_call_id: str


def summary_message(summary: Turn) -> ChatMessage:
    return {"role": "system", "content": f"{SUMMARY_HEADING}\n{summary.content}"}


def history_messages(
    thread: Thread,
    *,
    max_tokens: int = HISTORY_TOKENS,
    ancestors: Sequence[Thread] = (),
    chunk_fraction: float = CHUNK_FRACTION,
) -> list[ChatMessage]:
    """The conversation as chat messages, oldest first, within ``max_tokens``.

    Args:
        thread: the thread being continued.
        max_tokens: the budget for every message returned (estimated tokens).
        ancestors: the parent chain, oldest first (``Memory.get_ancestors``).
        chunk_fraction: how much of the budget old turns are dropped by at once when the
            history no longer fits (between 0 and 1; larger keeps prefixes stable longer
            and shows fewer old turns right after a drop).
    """
    if max_tokens <= 0:
        raise InvalidInputError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if not 0 < chunk_fraction <= 1:
        raise InvalidInputError(f"chunk_fraction must be in (0, 1], got {chunk_fraction!r}")
    view = unsummarised(thread, ancestors)
    if not view.turns and view.summary is None:
        return []
    head = [] if view.summary is None else [summary_message(view.summary)]
    blocks = [[turn_message(turn) for turn in block] for block in turn_blocks(view.turns)]
    costs = [sum(message_cost(m) for m in block) for block in blocks]
    every_turn = [turn for owner in (*ancestors, thread) for turn in owner.turns]
    files = _files_message(every_turn, max_tokens // 4)
    budget = max_tokens - (message_cost(files) if files else 0)
    budget -= sum(message_cost(m) for m in head)
    start = 0
    if sum(costs) > budget:
        chunk = max(1, int(max_tokens * chunk_fraction))
        start = _stable_start(costs, budget - NOTE_TOKENS, chunk)
    shown = [message for block in blocks[start:] for message in block]
    if start:
        left_out = sum(len(block) for block in blocks[:start])
        note = f"[The {left_out} earliest messages of this conversation are not shown.]"
        shown.insert(0, {"role": "system", "content": note})
    if files:
        shown.append(files)
    return head + shown


def turn_message(turn: Turn) -> ChatMessage:
    """A turn as the chat message a provider is sent."""
    message: ChatMessage = {"role": turn.role, "content": turn.content}
    calls = turn.metadata.get("tool_calls")
    if turn.role == "assistant" and isinstance(calls, list | tuple) and calls:
        message["tool_calls"] = [dict(call) for call in calls]
    call_id = turn.metadata.get("tool_call_id")
    if turn.role == "tool" and isinstance(call_id, str):
        message["tool_call_id"] = call_id
    return message


def turn_blocks(turns: Sequence[Turn]) -> list[list[Turn]]:
    """A block per turn, with tool results joining the call before them: what is kept,
    dropped or summarised together."""
    blocks: list[list[Turn]] = []
    for turn in turns:
        if turn.role == "tool" and blocks:
            blocks[-1].append(turn)
        else:
            blocks.append([turn])
    return blocks


def message_cost(message: ChatMessage) -> int:
    """A message's estimated tokens, framing included."""
    calls = message.get("tool_calls")
    extra = estimate_tokens(repr(calls)) if calls else 0
    return estimate_tokens(message["content"]) + extra + MESSAGE_OVERHEAD_TOKENS


def _stable_start(costs: list[int], budget: int, chunk: int) -> int:
    """The first block shown: the earliest chunk boundary whose suffix fits.

    Boundaries are fixed from the conversation's start (a new boundary after every
    ``chunk`` tokens), so appending turns never moves them: the start stays put until
    the suffix outgrows the budget, then jumps a whole chunk. If even the last boundary's
    suffix does not fit (one huge turn), the newest blocks that fit are shown.
    """
    suffix = [*reversed(list(accumulate(reversed(costs)))), 0]  # suffix[i] = sum(costs[i:])
    boundaries: list[int] = []
    filled = 0
    for index, cost in enumerate(costs):
        filled += cost
        if filled >= chunk:
            boundaries.append(index + 1)
            filled = 0
    for boundary in boundaries:
        if suffix[boundary] <= budget:
            return boundary
    return next(i for i in range(len(costs) + 1) if suffix[i] <= budget)


def _files_message(turns: Sequence[Turn], budget: int) -> ChatMessage | None:
    """Each referenced file once, newest first, within ``budget`` tokens (the newest
    files first; a count of the rest when they do not all fit)."""
    newest: dict[str, None] = {}
    for turn in reversed(turns):
        for path in turn.files:
            newest.setdefault(path, None)
    if not newest:
        return None
    head = "Files referenced in this conversation (each once, newest first):"
    lines: list[str] = []
    used = estimate_tokens(head) + MESSAGE_OVERHEAD_TOKENS + NOTE_TOKENS
    for path in newest:
        cost = estimate_tokens(path) + 1
        if used + cost > budget:
            break
        lines.append(f"- {path}")
        used += cost
    if not lines:
        return None
    if len(lines) < len(newest):
        lines.append(f"(and {len(newest) - len(lines)} older files)")
    return {"role": "system", "content": "\n".join([head, *lines])}
