"""``Memory.update_thread`` through every tier: one store round trip, versioned like every
write, coherent across instances (single Redis and Cluster), owner-scoped, and sealed
when encryption is on (the cache suite's ``memories`` run it plain and encrypted)."""

from __future__ import annotations

import pytest

from convmem.cache.redis import RedisCache
from convmem.errors import InvalidInputError, ThreadNotFoundError
from tests.conftest import Backend, MemoryFactory
from tests.contract.test_store_contract import Trips
from tests.support.flows import exchange, until
from tests.test_tiered_cache import l2, memories, redis_url

__all__ = ["l2", "memories", "redis_url"]  # the cache suite's fixtures, used here too


async def test_a_title_is_set_in_one_round_trip_and_every_instance_serves_it(
    memories: MemoryFactory, cache_backend: Backend, l2: RedisCache
) -> None:
    a, b = await memories(), await memories()
    thread = await a.create_thread(turns=exchange(1), metadata={"tags": ["x"]}, owner="alice")
    assert await b.get_thread(thread.id, owner="alice") == thread  # b holds version 2
    trips = Trips(cache_backend)
    renamed = await a.update_thread(thread.id, title="Trip to Lisbon", owner="alice")
    assert trips.count == 1  # the metadata came from L1; the write is the round trip
    assert (renamed.version, dict(renamed.metadata)) == (
        3,
        {"tags": ["x"], "title": "Trip to Lisbon"},
    )
    assert renamed.turns == thread.turns
    assert await a.get_thread(thread.id, owner="alice") == renamed  # an L1 hit
    assert trips.count == 1
    assert await l2.version(thread.id) == 3  # L2 fenced at the new version
    await until(lambda: b.stats.invalidations_received >= 1, "b to hear of the update")
    assert await b.get_thread(thread.id, owner="alice") == renamed
    stored = await cache_backend.store.load(thread.id, owner="alice")
    assert stored is not None
    if a.sealing.encrypts:  # the store holds the metadata sealed, never the title in clear
        assert "Lisbon" not in str(dict(stored.metadata))
    assert a.sealing.open_thread(stored) == renamed


async def test_metadata_replaces_the_whole_mapping_and_a_title_goes_on_top(
    memories: MemoryFactory,
) -> None:
    memory = await memories()
    thread = await memory.create_thread(metadata={"a": 1, "title": "old"})
    replaced = await memory.update_thread(thread.id, metadata={"b": 2})
    assert dict(replaced.metadata) == {"b": 2}
    both = await memory.update_thread(thread.id, metadata={"c": 3}, title="new")
    assert (both.version, dict(both.metadata)) == (2, {"c": 3, "title": "new"})
    page = await memory.list_threads()
    assert dict(page.threads[0].metadata) == {"c": 3, "title": "new"}


async def test_a_title_set_on_a_copy_another_instance_moved_past_is_set_on_the_newer_one(
    memories: MemoryFactory, cache_backend: Backend
) -> None:
    """Without Redis, b cannot hear of a's append: its write, made on the version it holds,
    is refused; b reads the thread again and sets the title on what it holds now."""
    a, b = await memories(cache_url=None), await memories(cache_url=None)
    thread = await a.create_thread(turns=exchange(1))
    assert await b.get_thread(thread.id) == thread  # b holds version 2
    grown = await a.add_turns(thread.id, exchange(2))
    trips = Trips(cache_backend)
    renamed = await b.update_thread(thread.id, title="kept")
    assert trips.count == 3  # refused, read again (the turns after version 2), written
    assert renamed.turns == grown.turns  # a's turns are not lost
    assert (renamed.version, dict(renamed.metadata)) == (grown.version + 1, {"title": "kept"})
    stored = await cache_backend.store.load(thread.id, owner=None)
    assert b.sealing.open_thread(stored) == renamed  # type: ignore[arg-type]


async def test_update_thread_is_owner_scoped_and_refuses_bad_input(
    memories: MemoryFactory,
) -> None:
    memory = await memories()
    thread = await memory.create_thread(owner="alice", metadata={"title": "mine"})
    with pytest.raises(ThreadNotFoundError):
        await memory.update_thread(thread.id, title="theirs", owner="bob")
    with pytest.raises(ThreadNotFoundError):
        await memory.update_thread(thread.id, metadata={"title": "theirs"}, owner="bob")
    for bad in ({}, {"title": 7}, {"title": "x" * 100_000}, {"metadata": {1: "x"}}):
        with pytest.raises(InvalidInputError):
            await memory.update_thread(thread.id, owner="alice", **bad)
    kept = await memory.get_thread(thread.id, owner="alice")
    assert kept is not None
    assert (kept.version, dict(kept.metadata)) == (thread.version, {"title": "mine"})
