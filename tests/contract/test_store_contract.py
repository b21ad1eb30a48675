"""The Store contract, run against every store set-up (SQLite, Postgres, PgBouncer).

Round trips are counted where they happen (on the wire for Postgres, at the
worker-thread boundary for SQLite), never taken from our own counters.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import timedelta

import pytest

from convmem.errors import (
    IdempotencyConflictError,
    InvalidInputError,
    ThreadExistsError,
    ThreadExpiredError,
    ThreadFullError,
    ThreadNotFoundError,
)
from convmem.models import Thread, Turn
from convmem.stores.base import NewThread, Resealed
from tests.conftest import LIMITS, Backend


class Trips:
    """Round trips made since this object was created."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._start = backend.round_trips()

    @property
    def count(self) -> int:
        return self._backend.round_trips() - self._start


def spec(owner: str | None = None, **fields: object) -> NewThread:
    return NewThread(
        id=str(uuid.uuid4()),
        tool_name=str(fields.get("tool_name", "chat")),
        parent_id=fields.get("parent_id"),  # type: ignore[arg-type]
        owner=owner,
        metadata=fields.get("metadata", {}),  # type: ignore[arg-type]
    )


def user(content: str, **fields: object) -> Turn:
    return Turn(role="user", content=content, **fields)  # type: ignore[arg-type]


async def make_thread(backend: Backend, n: int = 0, owner: str | None = None) -> Thread:
    return (
        await backend.store.create(spec(owner), [user(f"turn {i}") for i in range(1, n + 1)])
    ).thread


async def test_create_then_load_returns_every_field_in_one_round_trip_each(
    backend: Backend,
) -> None:
    rich = Turn(
        role="assistant",
        content="hello",
        tool_name="chat",
        model_provider="openai",
        model_name="gpt-5",
        files=("src/a.py", "docs/b.md"),
        images=("img/c.png",),
        metadata={"tokens": 12, "nested": {"ok": [1, 2.5, None, True]}},
        key="req-1:a",
    )
    trips = Trips(backend)
    created = (
        await backend.store.create(spec("alice", metadata={"project": "x"}), [user("hi"), rich])
    ).thread
    assert trips.count == 1
    trips = Trips(backend)
    loaded = await backend.store.load(created.id, owner="alice")
    assert trips.count == 1
    assert loaded == created
    assert loaded.version == 2
    assert [t.seq for t in loaded.turns] == [1, 2]
    assert loaded.turns[1].files == ("src/a.py", "docs/b.md")
    assert loaded.turns[1].metadata == {"tokens": 12, "nested": {"ok": [1, 2.5, None, True]}}
    assert loaded.metadata == {"project": "x"}
    assert loaded.expires_at == created.created_at + LIMITS.ttl
    assert loaded.turns[0].created_at == created.created_at


async def test_create_without_turns_gives_an_empty_thread(backend: Backend) -> None:
    created = await make_thread(backend)
    loaded = await backend.store.load(created.id, owner=None)
    assert loaded is not None
    assert loaded.version == 0
    assert loaded.turns == ()


async def test_load_of_an_unknown_thread_is_none_in_one_round_trip(backend: Backend) -> None:
    trips = Trips(backend)
    assert await backend.store.load(str(uuid.uuid4()), owner=None) is None
    assert await backend.store.load_since(str(uuid.uuid4()), 0, owner=None) is None
    assert trips.count == 2


async def test_append_assigns_contiguous_seq_in_one_round_trip(backend: Backend) -> None:
    thread = await make_thread(backend, 2)
    trips = Trips(backend)
    result = await backend.store.append(
        thread.id, [user("three"), Turn(role="assistant", content="four")], owner=None
    )
    assert trips.count == 1
    assert (result.version, result.inserted, result.base_version) == (4, 2, 2)
    assert [t.seq for t in result.turns] == [3, 4]
    assert [t.content for t in result.turns] == ["three", "four"]
    loaded = await backend.store.load(thread.id, owner=None)
    assert loaded is not None
    assert [t.content for t in loaded.turns] == ["turn 1", "turn 2", "three", "four"]
    assert result.applied_to(thread) == loaded


async def test_load_since_returns_only_newer_turns_in_one_round_trip(backend: Backend) -> None:
    thread = await make_thread(backend, 5)
    trips = Trips(backend)
    delta = await backend.store.load_since(thread.id, 3, owner=None)
    assert trips.count == 1
    assert delta is not None
    assert delta.version == 5
    assert [t.seq for t in delta.turns] == [4, 5]
    current = await backend.store.load_since(thread.id, 5, owner=None)
    assert current is not None
    assert current.turns == ()


async def test_a_retried_append_inserts_nothing_and_returns_the_same_turns(
    backend: Backend,
) -> None:
    thread = await make_thread(backend, 1)
    batch = [user("q", key="r1:u"), Turn(role="assistant", content="a", key="r1:a")]
    first = await backend.store.append(thread.id, batch, owner=None)
    trips = Trips(backend)
    again = await backend.store.append(thread.id, batch, owner=None)
    assert trips.count == 1
    assert again.inserted == 0
    assert again.version == first.version == 3
    assert again.turns == first.turns
    loaded = await backend.store.load(thread.id, owner=None)
    assert loaded is not None
    assert loaded.version == 3


async def test_a_partly_retried_append_inserts_only_the_new_turns(backend: Backend) -> None:
    thread = await make_thread(backend)
    await backend.store.append(thread.id, [user("one", key="k1")], owner=None)
    result = await backend.store.append(
        thread.id, [user("one", key="k1"), user("two", key="k2"), user("three")], owner=None
    )
    assert result.inserted == 2
    assert [(t.seq, t.content) for t in result.turns] == [(1, "one"), (2, "two"), (3, "three")]
    assert [t.seq for t in result.new_turns] == [2, 3]


async def test_a_key_reused_for_another_turn_is_a_conflict_and_writes_nothing(
    backend: Backend,
) -> None:
    thread = await make_thread(backend)
    await backend.store.append(thread.id, [user("original", key="k1")], owner=None)
    with pytest.raises(IdempotencyConflictError, match="k1"):
        await backend.store.append(
            thread.id, [user("fresh"), user("changed", key="k1")], owner=None
        )
    loaded = await backend.store.load(thread.id, owner=None)
    assert loaded is not None
    assert [t.content for t in loaded.turns] == ["original"]


async def test_append_to_an_unknown_thread_is_not_found(backend: Backend) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(ThreadNotFoundError) as caught:
        await backend.store.append(missing, [user("x")], owner=None)
    assert caught.value.thread_id == missing


async def test_threads_are_invisible_to_other_owners(backend: Backend) -> None:
    thread = await make_thread(backend, 1, owner="alice")
    assert await backend.store.load(thread.id, owner="bob") is None
    assert await backend.store.load(thread.id, owner=None) is None
    assert await backend.store.load_since(thread.id, 0, owner="bob") is None
    with pytest.raises(ThreadNotFoundError):
        await backend.store.append(thread.id, [user("intrusion")], owner="bob")
    assert not await backend.store.delete(thread.id, owner="bob")
    assert (await backend.store.list(owner="bob")).threads == ()
    loaded = await backend.store.load(thread.id, owner="alice")
    assert loaded is not None
    assert loaded.version == 1
    unowned = await make_thread(backend, 1)
    assert await backend.store.load(unowned.id, owner="alice") is None


async def test_an_expired_thread_is_not_served_listed_or_continued(backend: Backend) -> None:
    thread = await make_thread(backend, 1, owner="eve")
    backend.clock.advance(LIMITS.ttl + timedelta(seconds=1))
    assert await backend.store.load(thread.id, owner="eve") is None
    assert await backend.store.load_since(thread.id, 0, owner="eve") is None
    assert (await backend.store.list(owner="eve")).threads == ()
    with pytest.raises(ThreadExpiredError):
        await backend.store.append(thread.id, [user("late")], owner="eve")


async def test_an_append_slides_the_expiry_forward(backend: Backend) -> None:
    thread = await make_thread(backend, 1)
    backend.clock.advance(timedelta(hours=2))
    result = await backend.store.append(thread.id, [user("still here")], owner=None)
    assert result.expires_at == backend.clock.now + LIMITS.ttl
    backend.clock.advance(timedelta(hours=2))  # past the first expiry, within the new one
    loaded = await backend.store.load(thread.id, owner=None)
    assert loaded is not None
    assert loaded.expires_at == result.expires_at
    assert loaded.updated_at == result.updated_at


async def test_purge_deletes_expired_threads_only(backend: Backend) -> None:
    old = [await make_thread(backend, 2) for _ in range(3)]
    backend.clock.advance(timedelta(hours=2))
    live = await make_thread(backend, 1)
    backend.clock.advance(timedelta(hours=1, seconds=1))
    trips = Trips(backend)
    assert await backend.store.purge_expired() == 3
    assert trips.count == 1
    assert await backend.store.load(live.id, owner=None) is not None
    backend.clock.advance(-LIMITS.ttl)  # even seen from the past, the purged ones are gone
    for thread in old:
        assert await backend.store.load(thread.id, owner=None) is None


async def test_scan_pages_through_every_thread_of_every_owner_in_id_order(
    raw_backend: Backend,
) -> None:
    made = [await make_thread(raw_backend, 0, owner=owner) for owner in ("ann", "bob", None)]
    raw_backend.clock.advance(LIMITS.ttl + timedelta(seconds=1))
    made.append(await make_thread(raw_backend, 0, owner="ann"))  # the first three expired
    expected = sorted((t.id, t.owner) for t in made)
    seen: list[tuple[str, str | None]] = []
    after: str | None = None
    while True:
        trips = Trips(raw_backend)
        page = await raw_backend.store.scan(after=after, limit=3)
        assert trips.count == 1
        seen.extend(page)
        if len(page) < 3:
            break
        after = page[-1][0]
    assert seen == expected
    with pytest.raises(InvalidInputError):
        await raw_backend.store.scan(after=None, limit=0)


async def test_reseal_rewrites_payloads_that_still_hold_the_expected_content(
    raw_backend: Backend,
) -> None:
    thread = (
        await raw_backend.store.create(
            spec("ann", metadata={"m": 1}),
            [user("one", key="k1", files=("a.py",)), user("two"), user("three")],
        )
    ).thread
    replaced = [
        Resealed("one", Turn(role="user", content="ONE", seq=1, model_name="m", files=("b",))),
        Resealed("stale", Turn(role="user", content="TWO", seq=2)),  # moved on: untouched
    ]
    trips = Trips(raw_backend)
    changed = await raw_backend.store.reseal(thread.id, replaced, ({"m": 1}, {"sealed": "x"}))
    assert trips.count == 1
    assert changed == 2  # one turn and the metadata
    loaded = await raw_backend.store.load(thread.id, owner="ann")
    assert loaded is not None
    assert [t.content for t in loaded.turns] == ["ONE", "two", "three"]
    first = loaded.turns[0]
    assert (first.seq, first.key, first.model_name, first.files) == (1, "k1", "m", ("b",))
    assert first.created_at == thread.turns[0].created_at
    assert loaded.version == 3
    assert dict(loaded.metadata) == {"sealed": "x"}
    # Metadata that moved on is left alone too; a retried append still finds its key.
    assert await raw_backend.store.reseal(thread.id, [], ({"m": 1}, {"other": 1})) == 0
    retried = await raw_backend.store.append(thread.id, [user("ONE", key="k1")], owner="ann")
    assert (retried.inserted, retried.version) == (0, 3)


async def test_a_full_thread_refuses_appends_and_writes_nothing(backend: Backend) -> None:
    thread = await make_thread(backend, LIMITS.max_turns - 1)
    with pytest.raises(ThreadFullError) as caught:
        await backend.store.append(thread.id, [user("a"), user("b")], owner=None)
    assert caught.value.max_turns == LIMITS.max_turns
    loaded = await backend.store.load(thread.id, owner=None)
    assert loaded is not None
    assert loaded.version == LIMITS.max_turns - 1
    result = await backend.store.append(thread.id, [user("last", key="last")], owner=None)
    assert result.version == LIMITS.max_turns
    with pytest.raises(ThreadFullError):
        await backend.store.append(thread.id, [user("one too many")], owner=None)
    # A retry of the append that filled it still answers: it inserts nothing.
    retry = await backend.store.append(thread.id, [user("last", key="last")], owner=None)
    assert retry.inserted == 0


async def test_create_refuses_more_turns_than_the_limit(backend: Backend) -> None:
    new = spec()
    with pytest.raises(ThreadFullError):
        await backend.store.create(new, [user(str(i)) for i in range(LIMITS.max_turns + 1)])
    assert await backend.store.load(new.id, owner=None) is None


async def test_create_refuses_an_existing_id(backend: Backend) -> None:
    new = spec()
    await backend.store.create(new, [user("first")])
    with pytest.raises(ThreadExistsError, match="already exists"):
        await backend.store.create(new, [user("second")])
    loaded = await backend.store.load(new.id, owner=None)
    assert loaded is not None
    assert [t.content for t in loaded.turns] == ["first"]


async def test_list_pages_through_an_owners_threads_newest_first(backend: Backend) -> None:
    made = []
    for _ in range(7):
        made.append(await make_thread(backend, 1, owner="lister"))
        backend.clock.advance(timedelta(seconds=1))
    await make_thread(backend, 1, owner="someone-else")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        trips = Trips(backend)
        page = await backend.store.list(owner="lister", limit=3, cursor=cursor)
        assert trips.count == 1
        pages += 1
        seen += [t.id for t in page.threads]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 3
    assert seen == [t.id for t in reversed(made)]
    summary = (await backend.store.list(owner="lister", limit=1)).threads[0]
    assert (summary.version, summary.owner, summary.tool_name) == (1, "lister", "chat")


async def test_an_operator_lists_every_owners_live_threads_newest_first(
    backend: Backend,
) -> None:
    gone = await make_thread(backend, 1, owner="dee")
    backend.clock.advance(LIMITS.ttl - timedelta(seconds=10))
    made = []
    for owner in ("ann", None, "bob", "ann", "cy"):
        made.append(await make_thread(backend, 1, owner=owner))
        backend.clock.advance(timedelta(seconds=1))
    backend.clock.advance(timedelta(seconds=6))  # `gone` has expired, not the others
    assert await backend.store.load(gone.id, owner="dee") is None
    seen: list[tuple[str, str | None]] = []
    cursor = None
    while True:
        trips = Trips(backend)
        page = await backend.store.list_every_owner(limit=2, cursor=cursor)
        assert trips.count == 1
        seen += [(t.id, t.owner) for t in page.threads]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [(t.id, t.owner) for t in reversed(made)]


FORGED_CURSORS = [
    b"99999999999999999999999:0f8c2a4e-6b1d-4c3a-9e2f-5a7b8c9d0e1f",  # past any datetime
    b"1796168886670346:not-a-uuid",  # PostgreSQL's uuid parser said so, in its words
    b"1796168886670346",
]


async def test_list_rejects_a_forged_cursor_and_a_bad_limit(backend: Backend) -> None:
    with pytest.raises(InvalidInputError, match="cursor"):
        await backend.store.list(owner=None, cursor="not-a-cursor")
    for raw in FORGED_CURSORS:
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        for listing in (
            backend.store.list(owner=None, cursor=cursor),
            backend.store.list_every_owner(cursor=cursor),
        ):
            with pytest.raises(InvalidInputError, match="invalid listing cursor"):
                await listing
    with pytest.raises(InvalidInputError, match="limit"):
        await backend.store.list(owner=None, limit=0)


async def test_delete_removes_the_thread_and_its_turns(backend: Backend) -> None:
    thread = await make_thread(backend, 3)
    trips = Trips(backend)
    assert await backend.store.delete(thread.id, owner=None)
    assert trips.count == 1
    assert await backend.store.load(thread.id, owner=None) is None
    assert not await backend.store.delete(thread.id, owner=None)


NASTY = [
    "'; DROP TABLE convmem_turns; --",
    'Robert"); DELETE FROM convmem_threads WHERE ("1"="1',
    "%(id)s %s $1 ? :name \\x00-not-a-nul \\",
    "emoji 🧵 and RTL עברית and combining é",
    "",
    "line\nbreak\ttab\r\n",
]


@pytest.mark.parametrize("text", NASTY)
async def test_text_in_every_field_is_stored_verbatim(backend: Backend, text: str) -> None:
    turn = Turn(
        role="tool",
        content=text,
        tool_name=text,
        model_provider=text,
        model_name=text,
        files=(text, "x"),
        images=(text,),
        metadata={text: text},
        key=text or None,
    )
    created = (
        await backend.store.create(spec(text or None, metadata={text: [text]}), [turn])
    ).thread
    result = await backend.store.append(created.id, [turn], owner=text or None)
    loaded = await backend.store.load(created.id, owner=text or None)
    assert loaded is not None
    stored = loaded.turns[0]
    assert (stored.content, stored.tool_name, stored.model_name, stored.key) == (
        text,
        text,
        text,
        text or None,
    )
    assert stored.files == (text, "x")
    assert stored.metadata == {text: text}
    assert loaded.metadata == {text: [text]}
    assert loaded.owner == (text or None)
    expected_version = 1 if text else 2  # the keyed retry inserted nothing
    assert loaded.version == expected_version == result.version


async def test_concurrent_appends_from_many_tasks_keep_every_turn(backend: Backend) -> None:
    thread = await make_thread(backend)

    async def one(i: int) -> None:
        await backend.store.append(thread.id, [user(f"task {i}", key=f"k{i}")], owner=None)

    await asyncio.gather(*(one(i) for i in range(LIMITS.max_turns)))
    loaded = await backend.store.load(thread.id, owner=None)
    assert loaded is not None
    assert [t.seq for t in loaded.turns] == list(range(1, LIMITS.max_turns + 1))
    assert sorted(t.content for t in loaded.turns) == sorted(
        f"task {i}" for i in range(LIMITS.max_turns)
    )
    # Retrying every one of them inserts nothing.
    await asyncio.gather(*(one(i) for i in range(LIMITS.max_turns)))
    again = await backend.store.load(thread.id, owner=None)
    assert again == loaded


async def test_concurrent_retries_of_the_same_key_insert_it_once(backend: Backend) -> None:
    thread = await make_thread(backend)
    results = await asyncio.gather(
        *(backend.store.append(thread.id, [user("once", key="same")], owner=None) for _ in range(8))
    )
    assert sum(r.inserted for r in results) == 1
    assert {r.turns[0].seq for r in results} == {1}
    loaded = await backend.store.load(thread.id, owner=None)
    assert loaded is not None
    assert loaded.version == 1


async def test_migrate_is_idempotent(backend: Backend) -> None:
    assert await backend.store.migrate() == []
    await backend.store.ping()


async def test_an_operator_finds_a_live_thread_whoever_owns_it(backend: Backend) -> None:
    owned = await make_thread(backend, 2, owner="ann")
    trips = Trips(backend)
    found = await backend.store.find_any_owner(owned.id)
    assert trips.count == 1
    assert found is not None
    assert (found.id, found.owner, found.turns, found.version) == (owned.id, "ann", 2, 2)
    assert await backend.store.find_any_owner(str(uuid.uuid4())) is None
    backend.clock.advance(LIMITS.ttl + timedelta(seconds=1))
    assert await backend.store.find_any_owner(owned.id) is None  # expired: not live
