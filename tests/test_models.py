"""``turn_from_storage``: the fast constructor stores and caches use must build real Turns."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from types import MappingProxyType

import pytest

from convmem.errors import InvalidTurnError
from convmem.models import Turn, _TurnLayout, turn_from_storage

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def stored(**changes: object) -> Turn:
    values: dict[str, object] = {
        "seq": 3,
        "role": "assistant",
        "content": "hello",
        "tool_name": "chat",
        "model_provider": "openai",
        "model_name": "gpt",
        "files": ["a.py"],
        "images": [],
        "metadata": {"k": 1},
        "key": "k-1",
        "created_at": NOW,
    }
    values.update(changes)
    return turn_from_storage(*values.values())


def test_the_layout_is_turns_own() -> None:
    # Re-classing is only allowed, and only correct, while the slots are the same.
    assert _TurnLayout.__slots__ == Turn.__slots__


def test_builds_a_turn_equal_to_one_built_by_init() -> None:
    turn = stored()
    assert type(turn) is Turn
    assert turn == Turn(
        role="assistant",
        content="hello",
        tool_name="chat",
        model_provider="openai",
        model_name="gpt",
        files=("a.py",),
        metadata={"k": 1},
        key="k-1",
        seq=3,
        created_at=NOW,
    )
    assert turn.files == ("a.py",)
    assert type(turn.files) is tuple
    assert type(turn.metadata) is MappingProxyType


def test_the_turn_is_frozen_and_owns_its_metadata() -> None:
    metadata = {"k": 1}
    turn = stored(metadata=metadata)
    metadata["k"] = 2
    assert turn.metadata == {"k": 1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        turn.content = "changed"  # type: ignore[misc]
    assert dataclasses.replace(turn, seq=4).seq == 4


@pytest.mark.parametrize(
    "changes",
    [
        {"role": "bot"},
        {"content": 5},
        {"seq": "3"},
        {"tool_name": 1},
        {"model_provider": b"x"},
        {"model_name": 2.0},
        {"key": ["k"]},
        {"files": "a.py"},
        {"files": ["a.py", 3]},
        {"images": {"a": 1}},
        {"metadata": ["not", "a", "mapping"]},
        {"created_at": "2026-11-24"},
    ],
)
def test_a_foreign_shape_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidTurnError, match="unexpected shape"):
        stored(**changes)
