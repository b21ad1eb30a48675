"""``build_history``: a thread (and its parent chain) as prompt-ready text within a token budget.

It follows the established behaviour of MCP conversation memory:

- the parent chain's turns come first, then the thread's own, numbered as one run;
- files referenced by turns are listed (and embedded, with ``read_file``) once each,
  the newest reference winning: a file is placed by the most recent turn that named
  it, and newer files get the budget first;
- turns are taken newest-first until the budget is spent, then shown oldest-first,
  with a note saying how many older turns were left out;
- a compaction summary (``Thread.summary``) is shown in place of the turns it covers.

Tokens are estimated as ~4 characters each: no tokenizer, nothing downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from convmem.errors import InvalidInputError
from convmem.limits import HISTORY_TOKENS
from convmem.summaries import unsummarised

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from convmem.models import Thread, Turn

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """A conservative token estimate (~4 characters per token), rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class _Numbered:
    number: int
    thread_id: str
    turn: Turn


def build_history(
    thread: Thread,
    *,
    max_tokens: int = HISTORY_TOKENS,
    ancestors: Sequence[Thread] = (),
    read_file: Callable[[str], str] | None = None,
    max_turns: int | None = None,
) -> str:
    """Render the conversation so a model can continue it.

    Args:
        thread: the thread being continued.
        max_tokens: the budget for the whole text (estimated tokens).
        ancestors: the parent chain, oldest first (``Memory.get_ancestors``).
        read_file: embeds each file's content once when given; without it files
            are listed by path only.
        max_turns: shown as ``Turn n/max`` so the model knows the room left.
    """
    if max_tokens <= 0:
        raise InvalidInputError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    chain = [*ancestors, thread]
    numbered = [
        _Numbered(i, owner.id, turn)
        for i, (owner, turn) in enumerate(((t, turn) for t in chain for turn in t.turns), 1)
    ]
    if not numbered:
        return ""
    # A compaction summary stands for the turns it covers: it is shown, they are not.
    view = unsummarised(thread, ancestors)
    summary_block: list[str] = []
    if view.summary is not None:
        summary_block = [
            f"--- Summary of turns 1 to {view.summarised} (compacted) ---",
            view.summary.content,
            "",
        ]
        shown = {id(turn) for turn in view.turns}
        files_from = numbered
        numbered = [item for item in numbered if id(item.turn) in shown]
    else:
        files_from = numbered

    limit = f"/{max_turns}" if max_turns else ""
    head = [
        "=== CONVERSATION HISTORY (CONTINUATION) ===",
        f"Thread: {thread.id}",
        f"Tool: {thread.tool_name or 'unknown'}",
        f"Turn {len(thread.turns)}{limit}",
    ]
    if ancestors:
        head.append(f"Parent threads: {' -> '.join(t.id for t in ancestors)}")
    head += ["You are continuing this conversation thread from where it left off.", ""]
    tail = ["", "=== END CONVERSATION HISTORY ==="]
    budget = max_tokens - estimate_tokens("\n".join(head + tail + summary_block))

    files_block, budget = _files_block(files_from, read_file, budget)
    turn_blocks: list[str] = []
    for item in reversed(numbered):
        block = _render_turn(item, thread.id)
        cost = estimate_tokens(block) + 1
        if cost > budget:
            break
        turn_blocks.append(block)
        budget -= cost
    turn_blocks.reverse()

    omitted = len(numbered) - len(turn_blocks)
    body: list[str] = [*files_block, *summary_block]
    if omitted:
        body.append(
            f"[NOTE: showing the {len(turn_blocks)} most recent of {len(numbered)} turns"
            f"{' after the summary' if summary_block else ''}; {omitted} older"
            f" turn{'s' if omitted != 1 else ''} left out to fit the token budget]"
        )
        body.append("")
    body.append("\n\n".join(turn_blocks))
    return "\n".join(head + body + tail)


def _files_block(
    numbered: Sequence[_Numbered], read_file: Callable[[str], str] | None, budget: int
) -> tuple[list[str], int]:
    """Each file once, newest reference first; embedded while the budget allows."""
    newest: dict[str, int] = {}
    for item in reversed(numbered):
        for path in item.turn.files:
            newest.setdefault(path, item.number)
    if not newest:
        return [], budget
    lines = [
        "=== FILES REFERENCED IN THIS CONVERSATION ===",
        "Each file appears once, as of its most recent reference (newest first).",
        "",
    ]
    budget -= estimate_tokens("\n".join(lines)) + 2
    left_out: list[str] = []
    for path, number in newest.items():
        entry = f"--- {path} (last referenced in turn {number}) ---"
        if read_file is not None:
            try:
                content = read_file(path)
            except OSError as exc:
                content = f"[could not read this file: {exc.strerror or exc}]"
            entry += "\n" + content
        cost = estimate_tokens(entry) + 1
        if cost > budget:
            left_out.append(path)
            continue
        lines.append(entry)
        budget -= cost
    if left_out:
        note = (
            f"[NOTE: {len(left_out)} older file(s) left out to fit the token budget: "
            f"{', '.join(left_out)}]"
        )
        lines.append(note)
        budget -= estimate_tokens(note) + 1
    lines += ["=== END FILES ===", ""]
    return lines, budget


def _render_turn(item: _Numbered, thread_id: str) -> str:
    turn = item.turn
    source: list[str] = [turn.role]
    if turn.tool_name:
        source.append(f"via {turn.tool_name}")
    if turn.model_name:
        model = (
            f"{turn.model_provider}/{turn.model_name}" if turn.model_provider else turn.model_name
        )
        source.append(f"model {model}")
    if item.thread_id != thread_id:
        source.append(f"from parent thread {item.thread_id}")
    lines = [f"--- Turn {item.number} ({', '.join(source)}) ---"]
    if turn.files:
        lines.append(f"Files used in this turn: {', '.join(turn.files)}")
    if turn.images:
        lines.append(f"Images in this turn: {', '.join(turn.images)}")
    lines.append(turn.content)
    return "\n".join(lines)
