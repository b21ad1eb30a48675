"""Memory on every store: the request budget, L1, single-flight, validation, errors."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from convmem import (
    ConfigurationError,
    InvalidMetadataError,
    InvalidOwnerError,
    InvalidThreadIdError,
    InvalidTurnError,
    LimitExceededError,
    Memory,
    StoreUnavailableError,
    ThreadExistsError,
    ThreadExpiredError,
    ThreadFullError,
    ThreadNotFoundError,
    Turn,
)
from convmem.limits import InputLimits
from convmem.stores.postgres import PostgresStore
from tests.conftest import LIMITS, Backend
from tests.contract.test_store_contract import Trips
from tests.support.clock import FakeTimer
from tests.support.flows import exchange, request

INPUT_LIMITS = InputLimits(max_content_bytes=1000, max_metadata_bytes=200)


def memory_on(backend: Backend, timer: FakeTimer | None = None) -> Memory:
    """A Memory with a cold L1 over the backend's (open) store: a new process."""
    return Memory(backend.store, input_limits=INPUT_LIMITS, timer=timer or FakeTimer())


async def test_request_budget_new_cold_and_warm(backend: Backend) -> None:
    writer = memory_on(backend)
    trips = Trips(backend)
    thread = await writer.create_thread(tool_name="chat", turns=exchange(1))
    assert trips.count == 1

    memory = memory_on(backend)  # cold: another process
    trips = Trips(backend)
    await request(memory, thread.id, 2)
    assert trips.count == 2  # 1 read + 1 write, on the wire
    assert (memory.stats.store_reads, memory.stats.store_writes) == (1, 1)

    for n in (3, 4, 5):
        trips = Trips(backend)
        await request(memory, thread.id, n)
        assert trips.count == 1  # 0 reads + 1 write
    stats = memory.stats
    assert (stats.store_reads, stats.store_writes, stats.misses) == (1, 4, 1)
    assert stats.l1_hits == 3 * 4 - 1
    final = await memory.get_thread(thread.id)
    assert final is not None
    assert final.version == 10
    assert final == await backend.store.load(thread.id, owner=None)


async def test_concurrent_readers_of_one_thread_share_one_load(backend: Backend) -> None:
    thread = await memory_on(backend).create_thread(turns=exchange(1))
    memory = memory_on(backend)
    trips = Trips(backend)
    results = await asyncio.gather(*(memory.get_thread(thread.id) for _ in range(10)))
    assert trips.count == 1
    assert all(r == results[0] for r in results)
    assert memory.stats.single_flight_joins == 9


BAD_IDS = [
    "not-a-uuid",
    "",
    "0F8C2A4E-6B1D-4C3A-9E2F-5A7B8C9D0E1F",
    "{0f8c2a4e-6b1d-4c3a-9e2f-5a7b8c9d0e1f}",
    "urn:uuid:0f8c2a4e-6b1d-4c3a-9e2f-5a7b8c9d0e1f",
    "0f8c2a4e6b1d4c3a9e2f5a7b8c9d0e1f",
    "' OR 1=1 --",
    123,
    None,
]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_a_malformed_thread_id_is_a_clear_error_before_any_io(
    backend: Backend, bad: object
) -> None:
    memory = memory_on(backend)
    trips = Trips(backend)
    with pytest.raises(InvalidThreadIdError, match=r"UUID|canonical"):
        await memory.get_thread(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidThreadIdError):
        await memory.add_turns(bad, exchange(1))  # type: ignore[arg-type]
    assert trips.count == 0


def test_the_canonical_form_is_suggested_for_an_upper_case_id() -> None:
    from convmem.validation import validate_thread_id

    with pytest.raises(InvalidThreadIdError, match="'0f8c2a4e-6b1d-4c3a-9e2f-5a7b8c9d0e1f'"):
        validate_thread_id("0F8C2A4E-6B1D-4C3A-9E2F-5A7B8C9D0E1F")


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"role": "bot", "content": "x"}, "role must be one of"),
        ({"role": ["user"], "content": "x"}, "role must be one of"),
        ({"role": "user", "content": 5}, "content must be a string"),
        ({"role": "user", "content": "x", "files": "a.py"}, "not a single string"),
        ({"role": "user", "content": "x", "files": ["a.py", 3]}, "only strings"),
        ({"role": "user", "content": "x", "images": ("a.png", None)}, "only strings"),
        ({"role": "user", "content": "x", "seq": -1}, "non-negative"),
        ({"role": "user", "content": "x", "model_name": 3}, "model_name must be a string"),
        ({"role": "user", "content": "x", "key": ""}, "non-empty"),
    ],
)
def test_a_malformed_turn_cannot_be_built(fields: dict[str, object], error: str) -> None:
    with pytest.raises(InvalidTurnError, match=error):
        Turn(**fields)  # type: ignore[arg-type]


def test_metadata_that_is_not_a_json_object_is_a_metadata_error() -> None:
    with pytest.raises(InvalidMetadataError, match="mapping"):
        Turn(role="user", content="x", metadata=["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(InvalidMetadataError, match="keys must be strings"):
        Turn(role="user", content="x", metadata={1: "one"})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("turns", "error", "message"),
    [
        ([Turn(role="user", content="x" * 1001)], LimitExceededError, "1001 bytes"),
        ([Turn(role="user", content="é" * 501)], LimitExceededError, "1002 bytes"),
        ([Turn(role="user", content="x", metadata={"k": "v" * 300})], LimitExceededError, "limit"),
        ([Turn(role="user", content="nul \x00 inside")], InvalidTurnError, "NUL"),
        ([Turn(role="user", content="x", files=("a\x00b",))], InvalidTurnError, "NUL"),
        ([Turn(role="user", content="x", metadata={"k": "\x00"})], InvalidMetadataError, "NUL"),
        ([Turn(role="user", content="lone \ud800 surrogate")], InvalidTurnError, "surrogate"),
        ([Turn(role="user", content="x", metadata={"k": object()})], InvalidMetadataError, "JSON"),
        ([], InvalidTurnError, "at least one"),
        (
            [Turn(role="user", content="a", key="k"), Turn(role="user", content="b", key="k")],
            InvalidTurnError,
            "twice",
        ),
        (Turn(role="user", content="x"), InvalidTurnError, "list of Turn"),
        (["just a string"], InvalidTurnError, "must be a convmem.Turn"),
    ],
)
async def test_bad_turns_are_refused_before_any_io_and_leave_the_thread_unchanged(
    backend: Backend, turns: object, error: type[Exception], message: str
) -> None:
    memory = memory_on(backend)
    thread = await memory.create_thread(turns=exchange(1))
    trips = Trips(backend)
    with pytest.raises(error, match=message):
        await memory.add_turns(thread.id, turns)  # type: ignore[arg-type]
    assert trips.count == 0
    stored = await backend.store.load(thread.id, owner=None)
    assert stored == thread


async def test_bad_thread_fields_are_refused_before_any_io(backend: Backend) -> None:
    memory = memory_on(backend)
    trips = Trips(backend)
    with pytest.raises(LimitExceededError):
        await memory.create_thread(metadata={"big": "x" * 500})
    with pytest.raises(InvalidThreadIdError):
        await memory.create_thread(parent_id="parent")
    with pytest.raises(InvalidOwnerError, match="owner"):
        await memory.create_thread(owner="")
    with pytest.raises(InvalidThreadIdError):
        await memory.create_thread(thread_id="not-a-uuid")
    assert trips.count == 0


async def test_a_thread_may_be_created_under_the_callers_id_once(backend: Backend) -> None:
    """An integration whose host mints its own ids keeps them: one round trip, and a
    second create under the same id is refused with nothing written."""
    memory = memory_on(backend)
    chosen = str(uuid.uuid4())
    trips = Trips(backend)
    thread = await memory.create_thread(thread_id=chosen, turns=exchange(1))
    assert (thread.id, trips.count) == (chosen, 1)
    with pytest.raises(ThreadExistsError):
        await memory.create_thread(thread_id=chosen, turns=exchange(2))
    stored = await backend.store.load(chosen, owner=None)
    assert stored is not None
    assert stored.version == 2


async def test_thread_state_errors_come_through_memory(backend: Backend) -> None:
    memory = memory_on(backend)
    with pytest.raises(ThreadNotFoundError):
        await memory.add_turns(str(uuid.uuid4()), exchange(1))
    full = await memory.create_thread(
        turns=[Turn(role="user", content=str(i)) for i in range(LIMITS.max_turns)]
    )
    with pytest.raises(ThreadFullError, match="do not fit"):
        await memory.add_turns(full.id, exchange(2))
    old = await memory.create_thread(turns=exchange(1))
    backend.clock.advance(LIMITS.ttl)
    with pytest.raises(ThreadExpiredError):
        await memory.add_turns(old.id, exchange(2))


async def test_l1_never_serves_an_expired_thread(backend: Backend) -> None:
    memory = memory_on(backend)
    thread = await memory.create_thread(turns=exchange(1))
    assert await memory.get_thread(thread.id) == thread
    backend.clock.advance(LIMITS.ttl)
    assert await memory.get_thread(thread.id) is None


async def test_l1_entries_live_for_their_ttl(backend: Backend) -> None:
    timer = FakeTimer()
    memory = memory_on(backend, timer)
    thread = await memory.create_thread(turns=exchange(1))
    trips = Trips(backend)
    await memory.get_thread(thread.id)
    assert trips.count == 0
    timer.now += 300 + 1  # the default L1 lifetime
    await memory.get_thread(thread.id)
    assert trips.count == 1


async def test_owners_are_isolated_through_the_cache(backend: Backend) -> None:
    memory = memory_on(backend)
    thread = await memory.create_thread(turns=exchange(1), owner="alice")
    assert await memory.get_thread(thread.id, owner="alice") == thread
    assert await memory.get_thread(thread.id, owner="bob") is None
    assert await memory.get_thread(thread.id) is None
    with pytest.raises(ThreadNotFoundError):
        await memory.add_turns(thread.id, exchange(2), owner="bob")
    assert (await memory.list_threads(owner="bob")).threads == ()
    assert [t.id for t in (await memory.list_threads(owner="alice")).threads] == [thread.id]


async def test_add_turns_without_a_cached_copy_returns_the_whole_thread(backend: Backend) -> None:
    thread = await memory_on(backend).create_thread(turns=exchange(1))
    memory = memory_on(backend)
    trips = Trips(backend)
    updated = await memory.add_turns(thread.id, exchange(2))
    assert trips.count == 2  # the write, then one read for the turns it did not have
    assert [t.content for t in updated.turns] == [
        "question 1",
        "answer 1",
        "question 2",
        "answer 2",
    ]
    trips = Trips(backend)
    assert await memory.get_thread(thread.id) == updated
    assert trips.count == 0


async def test_a_copy_behind_another_writer_catches_up_with_a_delta(backend: Backend) -> None:
    mine, theirs = memory_on(backend), memory_on(backend)
    thread = await mine.create_thread(turns=exchange(1))
    await theirs.add_turns(thread.id, exchange(2))
    trips = Trips(backend)
    updated = await mine.add_turns(thread.id, exchange(3))
    assert trips.count == 2  # the write and one load_since
    assert updated.version == 6
    assert updated == await backend.store.load(thread.id, owner=None)


async def test_a_retried_add_turns_returns_the_same_thread(backend: Backend) -> None:
    memory = memory_on(backend)
    thread = await memory.create_thread(turns=exchange(1))
    first = await memory.add_turns(thread.id, exchange(2))
    again = await memory.add_turns(thread.id, exchange(2))
    assert again.turns == first.turns
    assert again.version == 4


async def test_delete_forgets_the_cached_copy(backend: Backend) -> None:
    memory = memory_on(backend)
    thread = await memory.create_thread(turns=exchange(1))
    assert await memory.delete_thread(thread.id)
    assert await memory.get_thread(thread.id) is None
    assert not await memory.delete_thread(thread.id)


async def test_history_follows_the_parent_chain(backend: Backend) -> None:
    memory = memory_on(backend)
    root = await memory.create_thread(turns=exchange(1))
    child = await memory.create_thread(turns=exchange(2), parent_id=root.id)
    grandchild = await memory.create_thread(turns=exchange(3), parent_id=child.id)
    ancestors = await memory.get_ancestors(grandchild)
    assert [a.id for a in ancestors] == [root.id, child.id]
    text = memory.build_history(grandchild, ancestors=ancestors)
    assert text.index("question 1") < text.index("question 2") < text.index("question 3")
    assert f"from parent thread {root.id}" in text


async def test_export_as_json_and_markdown(backend: Backend) -> None:
    memory = memory_on(backend)
    thread = await memory.create_thread(tool_name="chat", turns=exchange(1))
    as_json = await memory.export_thread(thread.id, format="json")
    assert '"content": "answer 1"' in as_json
    markdown = await memory.export_thread(thread.id)
    assert markdown.startswith(f"# Thread {thread.id}")
    assert "## 2. assistant" in markdown
    with pytest.raises(ThreadNotFoundError):
        await memory.export_thread(str(uuid.uuid4()))


async def test_purge_through_memory(backend: Backend) -> None:
    memory = memory_on(backend)
    await memory.create_thread(turns=exchange(1))
    backend.clock.advance(LIMITS.ttl)
    assert await memory.purge_expired() == 1


def test_the_constructor_does_no_io() -> None:
    memory = Memory.from_url("postgresql://nobody@127.0.0.1:1/none")  # nothing listens there
    assert memory.stats.store_reads == 0


async def test_an_unreachable_store_is_a_typed_error() -> None:
    store = PostgresStore.from_url("postgresql://nobody@127.0.0.1:1/none", connect_timeout=1.0)
    memory = Memory(store)
    with pytest.raises(StoreUnavailableError, match="cannot connect"):
        await memory.open()


def test_a_cache_url_must_be_redis() -> None:
    with pytest.raises(ConfigurationError, match="redis://"):
        Memory.from_url("sqlite:///x.db", cache_url="http://127.0.0.1:6379")
