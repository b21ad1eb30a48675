"""build_history: parents first, newest turns win the budget, files once (newest wins)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from convmem.errors import InvalidInputError
from convmem.history import build_history, estimate_tokens
from convmem.models import Thread, Turn

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def make(turns: list[Turn], parent: Thread | None = None) -> Thread:
    numbered = tuple(
        Turn(
            role=t.role,
            content=t.content,
            files=t.files,
            tool_name=t.tool_name,
            model_name=t.model_name,
            model_provider=t.model_provider,
            seq=i,
            created_at=NOW,
        )
        for i, t in enumerate(turns, 1)
    )
    parent_id = parent.id if parent else None
    return Thread(str(uuid.uuid4()), numbered, "chat", parent_id, None, {}, NOW, NOW, NOW)


def test_all_turns_appear_oldest_first_within_a_large_budget() -> None:
    thread = make([Turn(role="user", content=f"message {i}") for i in range(1, 6)])
    text = build_history(thread, max_tokens=10_000, max_turns=50)
    positions = [text.index(f"message {i}") for i in range(1, 6)]
    assert positions == sorted(positions)
    assert "Turn 5/50" in text
    assert "NOTE" not in text


def test_the_newest_turns_fill_the_budget_and_a_note_counts_the_rest() -> None:
    thread = make([Turn(role="user", content=f"message {i} " + "x" * 400) for i in range(1, 21)])
    text = build_history(thread, max_tokens=1000)
    assert estimate_tokens(text) <= 1000
    assert "message 20 " in text
    assert "message 1 " not in text
    shown = sum(f"message {i} " in text for i in range(1, 21))
    assert f"showing the {shown} most recent of 20 turns; {20 - shown} older turns left out" in text


def test_each_file_is_embedded_once_as_of_its_newest_reference() -> None:
    thread = make(
        [
            Turn(role="user", content="look", files=("a.py", "b.py")),
            Turn(role="assistant", content="ok"),
            Turn(role="user", content="again", files=("a.py",)),
        ]
    )
    reads: list[str] = []

    def read(path: str) -> str:
        reads.append(path)
        return f"<contents of {path}>"

    text = build_history(thread, max_tokens=10_000, read_file=read)
    assert reads == ["a.py", "b.py"]  # newest reference first, each once
    assert text.count("<contents of a.py>") == 1
    assert "--- a.py (last referenced in turn 3) ---" in text
    assert "--- b.py (last referenced in turn 1) ---" in text


def test_files_that_do_not_fit_are_named_in_a_note() -> None:
    thread = make([Turn(role="user", content="x", files=("huge.log", "small.txt"))])
    text = build_history(
        thread, max_tokens=600, read_file=lambda p: "y" * 5000 if p == "huge.log" else "small"
    )
    assert "left out to fit the token budget: huge.log" in text
    assert "small" in text


def test_unreadable_files_are_reported_not_raised() -> None:
    thread = make([Turn(role="user", content="x", files=("missing.txt",))])

    def read(path: str) -> str:
        raise FileNotFoundError(2, "No such file or directory", path)

    assert "could not read this file" in build_history(thread, read_file=read)


def test_parent_turns_come_first_and_are_labelled() -> None:
    root = make([Turn(role="user", content="root question")])
    child = make([Turn(role="user", content="child question")], parent=root)
    text = build_history(child, ancestors=[root])
    assert text.index("root question") < text.index("child question")
    assert f"from parent thread {root.id}" in text
    assert "--- Turn 2 (user) ---" in text


def test_model_and_tool_are_shown_per_turn() -> None:
    thread = make(
        [
            Turn(
                role="assistant",
                content="hi",
                tool_name="chat",
                model_provider="kimi",
                model_name="k2",
            )
        ]
    )
    assert "--- Turn 1 (assistant, via chat, model kimi/k2) ---" in build_history(thread)


def test_an_empty_thread_has_no_history() -> None:
    assert build_history(make([])) == ""


def test_the_budget_must_be_positive() -> None:
    with pytest.raises(InvalidInputError, match="max_tokens"):
        build_history(make([Turn(role="user", content="x")]), max_tokens=0)
