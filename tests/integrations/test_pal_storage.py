"""``ConvmemStorage`` under pal-mcp-server's own conversation code (installed from PyPI):
pal's create_thread, add_turn and get_thread, with convmem as their storage."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import utils.conversation_memory as pal  # pal-mcp-server's module
import utils.storage_backend as pal_backend

from convmem import Memory
from convmem.integrations.pal import ConvmemStorage, PalStorageError, install


def open_storage(path: Path) -> ConvmemStorage:
    return ConvmemStorage(Memory.from_url(f"sqlite:///{path}"), timeout_seconds=10)


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[ConvmemStorage]:
    opened = open_storage(tmp_path / "pal.db")
    previous = pal_backend._storage_instance
    install(opened)
    yield opened
    pal_backend._storage_instance = previous
    opened.shutdown()


class Recording:
    """The last value pal wrote, to compare with what it reads back."""

    def __init__(self, storage: ConvmemStorage) -> None:
        self.values: dict[str, str] = {}
        original = storage.setex

        def setex(key: str, ttl_seconds: int, value: str) -> None:
            original(key, ttl_seconds, value)
            self.values[key] = value

        storage.setex = setex  # type: ignore[method-assign]


def converse(turns: int) -> str:
    thread_id: str = pal.create_thread(
        "chat", {"prompt": "hello", "absolute_file_paths": ["/a.py"]}
    )
    for n in range(turns):
        role = "user" if n % 2 == 0 else "assistant"
        assert pal.add_turn(
            thread_id,
            role,
            f"turn {n} ünïcode '; DROP TABLE x; --",
            files=["/a.py"] if n == 0 else None,
            tool_name="chat",
            model_provider="custom" if role == "assistant" else None,
            model_name="standin" if role == "assistant" else None,
            model_metadata={"usage": {"input_tokens": n}} if role == "assistant" else None,
        )
    return thread_id


def test_pal_reads_back_exactly_what_it_wrote(storage: ConvmemStorage) -> None:
    recording = Recording(storage)
    thread_id = converse(3)
    key = f"thread:{thread_id}"
    assert storage.get(key) == recording.values[key]  # byte for byte
    context = pal.get_thread(thread_id)
    assert context is not None
    assert [t.content for t in context.turns] == [
        f"turn {n} ünïcode '; DROP TABLE x; --" for n in range(3)
    ]
    assert context.turns[0].files == ["/a.py"]
    assert context.turns[1].files is None  # null stays null, not []
    assert context.turns[1].model_metadata == {"usage": {"input_tokens": 1}}
    assert context.initial_context == {"prompt": "hello", "absolute_file_paths": ["/a.py"]}


def test_a_continued_turn_costs_one_store_call_and_a_warm_read_none(
    storage: ConvmemStorage,
) -> None:
    thread_id = converse(2)
    before = storage._memory.stats
    assert pal.get_thread(thread_id) is not None  # warm: from convmem's cache
    assert pal.add_turn(thread_id, "user", "one more", tool_name="chat")  # get + set
    after = storage._memory.stats
    assert (after.store_reads - before.store_reads, after.store_writes - before.store_writes) == (
        0,
        1,
    )


def test_a_repeated_set_of_the_same_thread_writes_nothing(storage: ConvmemStorage) -> None:
    thread_id = converse(2)
    key = f"thread:{thread_id}"
    value = storage.get(key)
    assert value is not None
    writes = storage._memory.stats.store_writes
    storage.setex(key, 10800, value)
    assert storage._memory.stats.store_writes == writes


def test_threads_outlive_the_process(tmp_path: Path, storage: ConvmemStorage) -> None:
    thread_id = converse(2)
    before = storage.get(f"thread:{thread_id}")
    storage.shutdown()
    again = open_storage(tmp_path / "pal.db")
    try:
        assert again.get(f"thread:{thread_id}") == before
    finally:
        again.shutdown()
    with pytest.raises(PalStorageError, match="shut down"):
        storage.get(f"thread:{thread_id}")


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("session:abc", "{}", "not pal's thread"),
        ("thread:{id}", "{not json", "not JSON"),
        ("thread:{id}", "[1]", "not a JSON object"),
        ("thread:{id}", "{other}", "not for the key's thread"),
        ("thread:{id}", "{huge}", "limit"),
        ("thread:{id}", "{other tool}", "names another tool or parent"),
    ],
)
def test_bad_sets_are_refused_and_leave_the_thread_unchanged(
    storage: ConvmemStorage, key: str, value: str, error: str
) -> None:
    thread_id = converse(2)
    stored = storage.get(f"thread:{thread_id}")
    assert stored is not None
    context = json.loads(stored)
    if value == "{other}":
        value = json.dumps(context | {"thread_id": str(uuid.uuid4())})
    elif value == "{huge}":
        turn = context["turns"][-1] | {"content": "x" * 2_000_000}
        value = json.dumps(context | {"turns": [*context["turns"], turn]})
    elif value == "{other tool}":
        value = json.dumps(context | {"tool_name": "codereview"})
    with pytest.raises(PalStorageError, match=error):
        storage.setex(key.format(id=thread_id), 10800, value)
    assert storage.get(f"thread:{thread_id}") == stored


@pytest.mark.parametrize(
    "edit",
    ["an earlier turn", "the last turn dropped", "the initial context", "everything"],
)
def test_a_set_that_rewrites_the_thread_replaces_it_atomically_in_one_write(
    storage: ConvmemStorage, edit: str
) -> None:
    thread_id = converse(4)
    key = f"thread:{thread_id}"
    stored = storage.get(key)
    assert stored is not None
    context = json.loads(stored)
    turns = context["turns"]
    if edit == "an earlier turn":
        turns = [turns[0], turns[1] | {"content": "an edited answer"}, *turns[2:]]
        context |= {"turns": [*turns, turns[0] | {"content": "and a new turn"}]}
    elif edit == "the last turn dropped":
        context |= {"turns": turns[:-1], "last_updated_at": "2026-11-30T12:00:00+00:00"}
    elif edit == "the initial context":
        context |= {"initial_context": {"prompt": "edited"}}
    else:
        context |= {"turns": [], "initial_context": {}, "created_at": "2026-01-01T00:00:00Z"}
    value = json.dumps(context)
    writes = storage._memory.stats.store_writes
    storage.setex(key, 10800, value)
    assert storage._memory.stats.store_writes == writes + 1  # one atomic write
    assert json.loads(storage.get(key) or "null") == context  # pal reads back what it wrote
    again = storage._memory.stats.store_writes
    storage.setex(key, 10800, value)  # the same value again writes nothing
    assert storage._memory.stats.store_writes == again
    # pal goes on with it as with any thread
    assert pal.add_turn(thread_id, "user", "after the rewrite", tool_name="chat")
    thread = pal.get_thread(thread_id)
    assert thread is not None
    assert thread.turns[-1].content == "after the rewrite"
    assert len(thread.turns) == len(context["turns"]) + 1


def test_pal_may_call_it_from_inside_its_own_event_loop(storage: ConvmemStorage) -> None:
    thread_id = converse(1)

    async def inside_pal() -> str | None:
        return storage.get(f"thread:{thread_id}")

    assert asyncio.run(inside_pal()) is not None


def test_a_thread_not_written_through_pal_is_unknown_to_pal(storage: ConvmemStorage) -> None:
    """convmem's own chat threads share the store; pal cannot continue them."""

    async def native() -> str:
        thread = await storage._memory.create_thread(tool_name="chat")
        return thread.id

    thread_id = storage._loop.run(native(), timeout=10, what="create")
    assert storage.get(f"thread:{thread_id}") is None
    assert pal.get_thread(thread_id) is None
