"""``history_messages``: native chat messages within the budget, tool calls never split
from their results, and prompts whose prefix holds from one request to the next."""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convmem.errors import InvalidInputError
from convmem.history import estimate_tokens
from convmem.messages import MESSAGE_OVERHEAD_TOKENS, ChatMessage, history_messages
from convmem.models import Thread, Turn

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def make(turns: list[Turn], parent: Thread | None = None) -> Thread:
    numbered = tuple(replace(t, seq=n) for n, t in enumerate(turns, 1))
    parent_id = parent.id if parent else None
    return Thread(str(uuid.uuid4()), numbered, "chat", parent_id, None, {}, NOW, NOW, NOW)


def cost(messages: list[ChatMessage]) -> int:
    total = 0
    for m in messages:
        calls = m.get("tool_calls")
        total += estimate_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS
        total += estimate_tokens(repr(calls)) if calls else 0
    return total


def call(call_id: str) -> dict[str, object]:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}


def tool_exchange(n: int, size: int = 40) -> list[Turn]:
    """A user turn, an assistant turn calling two tools, their two results, a reply."""
    calls = [call(f"c{n}a"), call(f"c{n}b")]
    return [
        Turn(role="user", content=f"ask {n} " + "u" * size),
        Turn(role="assistant", content="", metadata={"tool_calls": calls}),
        Turn(role="tool", content=f"result {n}a", metadata={"tool_call_id": f"c{n}a"}),
        Turn(role="tool", content=f"result {n}b", metadata={"tool_call_id": f"c{n}b"}),
        Turn(role="assistant", content=f"answer {n} " + "a" * size),
    ]


def test_turns_become_messages_in_their_own_roles_parents_first() -> None:
    parent = make([Turn(role="user", content="p1"), Turn(role="assistant", content="p2")])
    child = make([Turn(role="user", content="c1"), Turn(role="assistant", content="c2")], parent)
    assert history_messages(child, ancestors=[parent]) == [
        {"role": "user", "content": "p1"},
        {"role": "assistant", "content": "p2"},
        {"role": "user", "content": "c1"},
        {"role": "assistant", "content": "c2"},
    ]


def test_tool_calls_and_results_are_native_and_paired() -> None:
    messages = history_messages(make(tool_exchange(1)))
    assert messages[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [call("c1a"), call("c1b")],
    }
    assert messages[2] == {"role": "tool", "content": "result 1a", "tool_call_id": "c1a"}


def test_files_are_listed_once_after_the_turns_newest_first() -> None:
    thread = make(
        [
            Turn(role="user", content="one", files=("/a.py", "/b.py")),
            Turn(role="assistant", content="two"),
            Turn(role="user", content="three", files=("/a.py",)),
        ]
    )
    messages = history_messages(thread)
    assert [m["content"] for m in messages[:3]] == ["one", "two", "three"]
    assert messages[-1]["role"] == "system"
    assert messages[-1]["content"].endswith("- /a.py\n- /b.py")


def test_a_long_file_list_takes_at_most_a_quarter_of_the_budget() -> None:
    paths = tuple(f"/src/module_{n:04}.py" for n in range(2000))
    thread = make([Turn(role="user", content="look", files=paths)])
    messages = history_messages(thread, max_tokens=1000)
    listing = messages[-1]["content"]
    assert cost(messages) <= 1000
    assert estimate_tokens(listing) <= 250
    assert listing.endswith("older files)")
    assert messages[0] == {"role": "user", "content": "look"}


@settings(max_examples=150, deadline=None)
@given(
    exchanges=st.integers(min_value=1, max_value=40),
    size=st.integers(min_value=1, max_value=400),
    budget=st.integers(min_value=60, max_value=6000),
    chunk=st.sampled_from([0.1, 0.25, 0.5, 1.0]),
)
def test_the_budget_holds_and_no_tool_result_is_cut_from_its_call(
    exchanges: int, size: int, budget: int, chunk: float
) -> None:
    turns = [t for n in range(exchanges) for t in tool_exchange(n, size)]
    messages = history_messages(make(turns), max_tokens=budget, chunk_fraction=chunk)
    assert cost(messages) <= budget
    for index, message in enumerate(messages):
        if message["role"] == "tool":  # its call is right before it (or before its sibling)
            before = [m for m in messages[:index] if m["role"] != "tool"]
            assert before, "a tool result without its call"
            assert message["tool_call_id"] in json.dumps(before[-1].get("tool_calls"))
        if message.get("tool_calls"):  # every result follows it
            ids = [c["id"] for c in message["tool_calls"]]
            assert [
                m.get("tool_call_id") for m in messages[index + 1 : index + 1 + len(ids)]
            ] == ids


def test_old_turns_go_in_whole_chunks_and_the_first_message_holds_between() -> None:
    """Appending exchanges one by one: the first turn shown changes rarely, and each
    change drops at least a chunk of the budget."""
    budget, turns, firsts = 2000, [], []
    for n in range(120):
        turns += [
            Turn(role="user", content=f"question {n} " + "q" * 200),
            Turn(role="assistant", content=f"answer {n} " + "a" * 800),
        ]
        messages = history_messages(make(turns), max_tokens=budget, chunk_fraction=0.5)
        shown = [m for m in messages if m["role"] != "system"]
        firsts.append(shown[0]["content"])
    changes = sum(1 for a, b in itertools.pairwise(firsts) if a != b)
    # ~260 tokens an exchange, a chunk of 1000 tokens: one change per ~4 exchanges at most.
    assert 0 < changes <= 120 / 3


def prompt_shares(budget: int, question: int, answer: int, exchanges: int = 200) -> float:
    """The mean share of each request's prompt (bytes) that equals a prefix of the
    previous request's, over a conversation (the metric BENCHMARKS.md reports)."""
    turns: list[Turn] = []
    previous: bytes | None = None
    shares = []
    for n in range(exchanges):
        prompt = f"question {n} " + "q" * question
        sent = [
            {"role": "system", "content": "be helpful"},
            *history_messages(make(turns), max_tokens=budget),
            {"role": "user", "content": prompt},
        ]
        body = json.dumps(sent).encode()
        if previous is not None:
            common = next(
                (i for i, (a, b) in enumerate(zip(previous, body, strict=False)) if a != b),
                min(len(previous), len(body)),
            )
            shares.append(common / len(body))
        previous = body
        turns += [
            Turn(role="user", content=prompt),
            Turn(role="assistant", content=f"answer {n} " + "a" * answer),
        ]
    return sum(shares) / len(shares)


def test_prompts_share_their_prefix_over_a_long_conversation() -> None:
    # 32k tokens of history, ~600-token exchanges: most of each prompt is the last one's.
    assert prompt_shares(32_000, question=400, answer=2000) >= 0.9


@pytest.mark.parametrize(("budget", "chunk"), [(0, 0.5), (100, 0.0), (100, 1.5)])
def test_bad_budgets_are_refused(budget: int, chunk: float) -> None:
    with pytest.raises(InvalidInputError):
        history_messages(
            make([Turn(role="user", content="x")]), max_tokens=budget, chunk_fraction=chunk
        )
