"""The store contract of revisions: pop, clear, fork, and ``load_since`` after them.

Run on every store, plain and sealed (``conftest.py``), round trips counted on the wire.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest

from convmem.errors import (
    InvalidInputError,
    ThreadExistsError,
    ThreadExpiredError,
    ThreadNotFoundError,
    TurnNotFoundError,
)
from convmem.models import Turn
from tests.conftest import LIMITS, Backend
from tests.contract.test_store_contract import Trips, make_thread, spec, user


async def test_pop_removes_the_newest_turn_in_one_round_trip(backend: Backend) -> None:
    thread = await make_thread(backend, 3)
    trips = Trips(backend)
    removal = await backend.store.pop(thread.id, owner=None)
    assert trips.count == 1
    assert (removal.base_version, removal.version, removal.seqs) == (3, 4, (3,))
    assert [(t.seq, t.content) for t in removal.turns] == [(3, "turn 3")]
    loaded = await backend.store.load(thread.id, owner=None)
    assert loaded is not None
    assert (loaded.version, [t.seq for t in loaded.turns]) == (4, [1, 2])
    assert removal.applied_to(thread) == loaded


async def test_pop_of_several_returns_them_oldest_first(backend: Backend) -> None:
    thread = await make_thread(backend, 4)
    removal = await backend.store.pop(thread.id, owner=None, count=3)
    assert [t.content for t in removal.turns] == ["turn 2", "turn 3", "turn 4"]
    assert (removal.version, removal.seqs) == (5, (2, 3, 4))
    more = await backend.store.pop(thread.id, owner=None, count=10)  # only one is left
    assert (more.version, more.seqs) == (6, (1,))


async def test_pop_of_an_empty_thread_changes_nothing(backend: Backend) -> None:
    thread = await make_thread(backend)
    trips = Trips(backend)
    removal = await backend.store.pop(thread.id, owner=None)
    assert trips.count == 1
    assert (removal.version, removal.seqs, removal.turns) == (0, (), ())
    assert removal.applied_to(thread) == thread


async def test_seqs_are_never_reused_after_a_pop(backend: Backend) -> None:
    thread = await make_thread(backend, 2)
    await backend.store.pop(thread.id, owner=None)  # version 3
    result = await backend.store.append(thread.id, [user("again"), user("more")], owner=None)
    assert (result.base_version, result.version) == (3, 5)
    assert [t.seq for t in result.new_turns] == [4, 5]
    loaded = await backend.store.load(thread.id, owner=None)
    assert loaded is not None
    assert [(t.seq, t.content) for t in loaded.turns] == [(1, "turn 1"), (4, "again"), (5, "more")]


async def test_clear_removes_every_turn_and_keeps_the_thread(backend: Backend) -> None:
    thread = await make_thread(backend, 3, owner="alice")
    trips = Trips(backend)
    removal = await backend.store.clear(thread.id, owner="alice")
    assert trips.count == 1
    assert (removal.version, removal.seqs, removal.turns) == (4, (1, 2, 3), ())
    loaded = await backend.store.load(thread.id, owner="alice")
    assert loaded is not None
    assert (loaded.version, loaded.turns, loaded.metadata) == (4, (), thread.metadata)
    assert removal.applied_to(thread) == loaded
    appended = await backend.store.append(thread.id, [user("fresh start")], owner="alice")
    assert [t.seq for t in appended.new_turns] == [5]


async def test_load_since_sends_the_whole_thread_after_a_pop(backend: Backend) -> None:
    thread = await make_thread(backend, 3)
    await backend.store.append(thread.id, [user("four")], owner=None)  # version 4
    await backend.store.pop(thread.id, owner=None)  # version 5, rewritten at 5
    await backend.store.append(thread.id, [user("six")], owner=None)  # version 6
    trips = Trips(backend)
    old = await backend.store.load_since(thread.id, 4, owner=None)  # before the pop
    assert trips.count == 1
    assert old is not None
    assert old.whole
    assert (old.version, [t.seq for t in old.turns]) == (6, [1, 2, 3, 6])
    recent = await backend.store.load_since(thread.id, 5, owner=None)  # after it
    assert recent is not None
    assert not recent.whole
    assert [t.seq for t in recent.turns] == [6]
    cached = await backend.store.load(thread.id, owner=None)
    assert cached is not None
    assert old.applied_to(thread) == cached


async def test_a_popped_key_may_be_appended_again(backend: Backend) -> None:
    thread = await make_thread(backend)
    first = await backend.store.append(thread.id, [user("q", key="req-1")], owner=None)
    await backend.store.pop(thread.id, owner=None)
    again = await backend.store.append(thread.id, [user("q", key="req-1")], owner=None)
    assert again.inserted == 1
    assert again.turns[0].seq == first.turns[0].seq + 2
    retried = await backend.store.append(thread.id, [user("q", key="req-1")], owner=None)
    assert retried.inserted == 0
    assert retried.turns == again.turns


async def test_pop_and_clear_are_owner_scoped_and_refuse_expired_threads(
    backend: Backend,
) -> None:
    thread = await make_thread(backend, 2, owner="alice")
    with pytest.raises(ThreadNotFoundError):
        await backend.store.pop(thread.id, owner="bob")
    with pytest.raises(ThreadNotFoundError):
        await backend.store.clear(thread.id, owner=None)
    with pytest.raises(ThreadNotFoundError):
        await backend.store.pop(str(uuid.uuid4()), owner="alice")
    backend.clock.advance(LIMITS.ttl + timedelta(seconds=1))
    with pytest.raises(ThreadExpiredError):
        await backend.store.pop(thread.id, owner="alice")
    with pytest.raises(ThreadExpiredError):
        await backend.store.clear(thread.id, owner="alice")
    backend.clock.advance(-LIMITS.ttl)
    loaded = await backend.store.load(thread.id, owner="alice")
    assert loaded is not None
    assert loaded.version == 2


async def test_a_pop_slides_the_expiry_forward(backend: Backend) -> None:
    thread = await make_thread(backend, 2)
    backend.clock.advance(timedelta(hours=2))
    removal = await backend.store.pop(thread.id, owner=None)
    assert removal.expires_at == backend.clock.now + LIMITS.ttl
    assert removal.updated_at == backend.clock.now


async def test_pop_refuses_a_count_below_one(backend: Backend) -> None:
    thread = await make_thread(backend, 1)
    for count in (0, -1, True):
        with pytest.raises(InvalidInputError, match="count"):
            await backend.store.pop(thread.id, owner=None, count=count)


async def test_a_full_thread_takes_turns_again_after_a_pop(backend: Backend) -> None:
    thread = await make_thread(backend, LIMITS.max_turns)
    await backend.store.pop(thread.id, owner=None)
    result = await backend.store.append(thread.id, [user("fits")], owner=None)
    assert result.inserted == 1


async def test_fork_cuts_the_parent_at_a_turn_in_one_round_trip(backend: Backend) -> None:
    parent = await make_thread(backend, 4, owner="alice")
    trips = Trips(backend)
    fork = (
        await backend.store.fork(
            replace(spec("alice", metadata={"branch": "b"}), parent_id=parent.id), at_seq=2
        )
    ).thread
    assert trips.count == 1
    assert (fork.parent_id, fork.parent_seq, fork.version, fork.turns) == (parent.id, 2, 0, ())
    assert dict(fork.metadata) == {"branch": "b"}
    assert await backend.store.load(fork.id, owner="alice") == fork
    result = await backend.store.append(fork.id, [user("another answer")], owner="alice")
    assert [t.seq for t in result.new_turns] == [1]
    newest = (await backend.store.fork(replace(spec("alice"), parent_id=parent.id))).thread
    assert newest.parent_seq == 4
    none_of_it = (
        await backend.store.fork(replace(spec("alice"), parent_id=parent.id), at_seq=0)
    ).thread
    assert none_of_it.parent_seq == 0


async def test_fork_refuses_a_missing_turn_another_owner_and_a_taken_id(
    backend: Backend,
) -> None:
    parent = await make_thread(backend, 3, owner="alice")
    await backend.store.pop(parent.id, owner="alice")
    with pytest.raises(TurnNotFoundError, match="no turn 3"):
        await backend.store.fork(replace(spec("alice"), parent_id=parent.id), at_seq=3)
    with pytest.raises(TurnNotFoundError, match="no turn 9"):
        await backend.store.fork(replace(spec("alice"), parent_id=parent.id), at_seq=9)
    with pytest.raises(InvalidInputError, match="at_seq"):
        await backend.store.fork(replace(spec("alice"), parent_id=parent.id), at_seq=-1)
    with pytest.raises(ThreadNotFoundError) as caught:
        await backend.store.fork(replace(spec("bob"), parent_id=parent.id))
    assert caught.value.thread_id == parent.id
    taken = await make_thread(backend, owner="alice")
    with pytest.raises(ThreadExistsError) as exists:
        await backend.store.fork(replace(spec("alice"), id=taken.id, parent_id=parent.id))
    assert exists.value.thread_id == taken.id
    backend.clock.advance(LIMITS.ttl + timedelta(seconds=1))
    with pytest.raises(ThreadExpiredError):
        await backend.store.fork(replace(spec("alice"), parent_id=parent.id))


@pytest.mark.parametrize("at_seq", [2**31, 2**63, 2**64, True, "3", 1.0])
async def test_fork_refuses_a_point_no_store_keeps_before_any_io(
    backend: Backend, at_seq: object
) -> None:
    """Numbers past PostgreSQL's integer are refused in words, before the driver (which
    answered with a missing function of a bigger integer type, or SQLite's OverflowError)."""
    parent = await make_thread(backend, 2)
    trips = Trips(backend)
    with pytest.raises(InvalidInputError, match=r"at_seq must be a turn's seq \(1 to 2147483647\)"):
        await backend.store.fork(replace(spec(), parent_id=parent.id), at_seq=at_seq)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="from 1 to 2147483647"):
        await backend.store.pop(parent.id, owner=None, count=2**63)
    assert trips.count == 0


async def test_concurrent_pops_each_remove_a_different_turn(backend: Backend) -> None:
    thread = await make_thread(backend, 6)
    removals = await asyncio.gather(*(backend.store.pop(thread.id, owner=None) for _ in range(4)))
    assert sorted(r.seqs for r in removals) == [(3,), (4,), (5,), (6,)]
    assert sorted(r.version for r in removals) == [7, 8, 9, 10]
    loaded = await backend.store.load(thread.id, owner=None)
    assert loaded is not None
    assert (loaded.version, [t.seq for t in loaded.turns]) == (10, [1, 2])


async def test_pops_and_appends_interleaved_keep_versions_rising(backend: Backend) -> None:
    thread = await make_thread(backend, 2)
    versions = [thread.version]
    for step in range(6):
        if step % 2:
            versions.append((await backend.store.pop(thread.id, owner=None)).version)
        else:
            turn = Turn(role="assistant", content=f"step {step}")
            versions.append((await backend.store.append(thread.id, [turn], owner=None)).version)
    assert versions == sorted(set(versions))
    loaded = await backend.store.load(thread.id, owner=None)
    assert loaded is not None
    assert loaded.version == versions[-1]
    assert [t.content for t in loaded.turns] == ["turn 1", "turn 2"]
