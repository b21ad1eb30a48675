"""A thread as Markdown (for people) or JSON (for programs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import orjson

from convmem.errors import InvalidInputError

if TYPE_CHECKING:
    from convmem.models import Thread, ThreadSummary, Turn
from convmem.records import turn_params


def listed_thread_to_dict(summary: ThreadSummary) -> dict[str, Any]:
    """A JSON-ready dict of a listed thread (its header and turn count), as listings show it."""
    return {
        "id": summary.id,
        "owner": summary.owner,
        "tool_name": summary.tool_name,
        "turns": summary.turns,
        "version": summary.version,
        "parent_id": summary.parent_id,
        "metadata": dict(summary.metadata),
        "created_at": summary.created_at.isoformat(),
        "updated_at": summary.updated_at.isoformat(),
        "expires_at": summary.expires_at.isoformat(),
    }


def thread_to_dict(thread: Thread) -> dict[str, Any]:
    """A JSON-ready dict of the whole thread; timestamps as ISO 8601 strings."""
    return {
        "id": thread.id,
        "version": thread.version,
        "tool_name": thread.tool_name,
        "parent_id": thread.parent_id,
        "parent_seq": thread.parent_seq,
        "owner": thread.owner,
        "metadata": dict(thread.metadata),
        "created_at": thread.created_at.isoformat(),
        "updated_at": thread.updated_at.isoformat(),
        "expires_at": thread.expires_at.isoformat(),
        "turns": [turn_to_dict(t) for t in thread.turns],
        "summary": None if thread.summary is None else summary_to_dict(thread.summary),
    }


def summary_to_dict(summary: Turn) -> dict[str, Any]:
    """A compaction summary: what it says, the turns it stands for, who wrote it."""
    return {
        "covers_to_seq": summary.seq,
        "content": summary.content,
        "model_provider": summary.model_provider,
        "model_name": summary.model_name,
        "metadata": dict(summary.metadata),
        "created_at": summary.created_at.isoformat() if summary.created_at else None,
    }


def turn_to_dict(turn: Turn) -> dict[str, Any]:
    return {
        "seq": turn.seq,
        **turn_params(turn),
        "created_at": turn.created_at.isoformat() if turn.created_at else None,
    }


def export_thread(thread: Thread, format: Literal["markdown", "json"]) -> str:
    if format == "json":
        return orjson.dumps(thread_to_dict(thread), option=orjson.OPT_INDENT_2).decode()
    if format == "markdown":
        return _markdown(thread)
    raise InvalidInputError(f"unknown export format {format!r}: use 'markdown' or 'json'")


def _markdown(thread: Thread) -> str:
    lines = [
        f"# Thread {thread.id}",
        "",
        f"- tool: {thread.tool_name or '-'}",
        f"- turns: {len(thread.turns)}",
        f"- created: {thread.created_at.isoformat()}",
        f"- updated: {thread.updated_at.isoformat()}",
        f"- expires: {thread.expires_at.isoformat()}",
    ]
    if thread.parent_id:
        lines.append(f"- parent: {thread.parent_id}")
    summary = thread.summary
    if summary is not None:
        by = f"{summary.model_provider or ''}/{summary.model_name or ''}"
        lines += [
            "",
            f"## Summary of turns 1–{summary.seq} (compaction, by {by})",
            "",
            "> " + summary.content.replace("\n", "\n> "),
            "",
            "Models are sent this summary in place of those turns; they are all kept below.",
        ]
    for turn in thread.turns:
        model = f" · {turn.model_provider or ''}/{turn.model_name}" if turn.model_name else ""
        lines += ["", f"## {turn.seq}. {turn.role}{model}", ""]
        if turn.files:
            lines += [f"Files: {', '.join(f'`{p}`' for p in turn.files)}", ""]
        lines.append(turn.content)
    return "\n".join(lines) + "\n"
