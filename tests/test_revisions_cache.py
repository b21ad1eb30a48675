"""Pop, clear and fork through every cache tier: in place where the copy is the writer's
base, fenced otherwise; no instance serves a removed turn once it heard of the write.

Each ``Memory`` stands for one server process (its own L1, watermarks, subscription),
sharing the store and Redis (single and Cluster) with the others; with encryption at
rest off and on, as the rest of the cache suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from convmem import Memory, Thread, Turn
from convmem.cache.redis import RedisCache
from convmem.errors import ThreadNotFoundError, TurnNotFoundError
from tests.conftest import Backend, MemoryFactory
from tests.contract.test_store_contract import Trips
from tests.support.flows import exchange, until
from tests.support.gated import GatedStore
from tests.test_tiered_cache import l2, memories, opened, redis_url

__all__ = ["l2", "memories", "redis_url"]  # the cache suite's fixtures, used here too


def contents(turns: Thread | Sequence[Turn] | None) -> list[str]:
    """The texts of a thread's turns, or of some turns."""
    if turns is None:
        return []
    return [t.content for t in (turns.turns if isinstance(turns, Thread) else turns)]


async def stored(memory: Memory, backend: Backend, thread_id: str) -> Thread | None:
    return opened(memory, await backend.store.load(thread_id, owner=None))


async def test_a_pop_changes_l2_in_place_and_the_next_read_is_a_hit(
    memories: MemoryFactory, cache_backend: Backend, l2: RedisCache
) -> None:
    memory = await memories()
    thread = await memory.create_thread(turns=exchange(1) + exchange(2))
    fields_before = await l2.client.hlen(l2.key(thread.id))
    trips = Trips(cache_backend)
    popped = await memory.pop_turn(thread.id)
    assert trips.count == 1
    assert popped is not None
    assert (popped.content, popped.seq) == ("answer 2", 4)
    assert await l2.client.hlen(l2.key(thread.id)) == fields_before - 1
    assert await l2.version(thread.id) == 5
    expected = await stored(memory, cache_backend, thread.id)
    assert opened(memory, await l2.get(thread.id)) == expected
    newcomer = await memories()  # opening checks the store's sealing keys: a round trip
    trips = Trips(cache_backend)
    assert await memory.get_thread(thread.id) == expected
    assert await newcomer.get_thread(thread.id) == expected
    assert trips.count == 0  # an L1 hit here, an L2 hit there
    assert newcomer.stats.l2_hits == 1


async def test_a_pop_on_one_instance_is_seen_by_another_without_a_store_read(
    memories: MemoryFactory, cache_backend: Backend
) -> None:
    a, b = await memories(), await memories()
    thread = await a.create_thread(turns=exchange(1) + exchange(2))
    assert await b.get_thread(thread.id) == thread  # b holds version 4 in L1
    thread_now, removed = await a.rewind_thread(thread.id, 2)
    assert contents(removed) == ["question 2", "answer 2"]
    assert (thread_now.version, contents(thread_now)) == (5, ["question 1", "answer 1"])
    await until(lambda: b.stats.invalidations_received >= 1, "b to hear of the pop")
    trips = Trips(cache_backend)
    seen = await b.get_thread(thread.id)
    assert trips.count == 0  # a changed L2 in place: an L2 hit
    assert seen == thread_now
    assert b.stats.stale_rejections == 1


async def test_a_copy_from_before_a_pop_is_replaced_whole_from_the_store(
    memories: MemoryFactory, cache_backend: Backend, l2: RedisCache
) -> None:
    a, b = await memories(), await memories()
    thread = await a.create_thread(turns=exchange(1) + exchange(2))
    await b.get_thread(thread.id)
    await a.pop_turn(thread.id)
    await a.add_turns(thread.id, [Turn(role="assistant", content="a better answer 2")])
    await until(lambda: b.stats.invalidations_received >= 2, "both writes")
    await l2.client.delete(l2.key(thread.id))  # L2 lost it: b goes to the store
    trips = Trips(cache_backend)
    seen = await b.get_thread(thread.id)
    assert trips.count == 1
    assert b.stats.delta_refreshes == 1  # one load_since, answered with the whole thread
    assert contents(seen) == ["question 1", "answer 1", "question 2", "a better answer 2"]
    assert seen == await stored(b, cache_backend, thread.id)


async def test_clear_empties_every_tier_and_the_thread_goes_on(
    memories: MemoryFactory, cache_backend: Backend, l2: RedisCache
) -> None:
    a, b = await memories(), await memories()
    thread = await a.create_thread(turns=exchange(1), metadata={"project": "x"})
    await b.get_thread(thread.id)
    cleared = await a.clear_thread(thread.id)
    assert (cleared.version, cleared.turns, dict(cleared.metadata)) == (3, (), {"project": "x"})
    await until(lambda: b.stats.invalidations_received >= 1, "the clear")
    assert await b.get_thread(thread.id) == cleared
    again = await b.add_turns(thread.id, exchange(2))
    assert [(t.seq, t.content) for t in again.turns] == [(4, "question 2"), (5, "answer 2")]
    await until(lambda: a.stats.invalidations_received >= 1, "the append")
    assert await a.get_thread(thread.id) == again
    assert opened(a, await l2.get(thread.id)) == again


async def test_an_empty_pop_changes_nothing_and_announces_nothing(
    memories: MemoryFactory, l2: RedisCache
) -> None:
    a = await memories()
    thread = await a.create_thread()
    assert await a.pop_turn(thread.id) is None
    assert a.stats.invalidations_published == 0
    assert await l2.version(thread.id) == 0
    assert await a.get_thread(thread.id) == thread


async def test_a_slow_reader_cannot_install_a_copy_from_before_a_pop(
    memories: MemoryFactory, cache_backend: Backend, l2: RedisCache
) -> None:
    writer = await memories()
    thread = await writer.create_thread(turns=exchange(1) + exchange(2))
    await l2.client.delete(l2.key(thread.id))
    gated = GatedStore(cache_backend.store)
    reader = await memories(gated)
    gated.armed = True
    slow = asyncio.create_task(reader.get_thread(thread.id))
    await gated.loaded.wait()  # the reader holds version 4, with "answer 2" ...
    await writer.pop_turn(thread.id)  # ... the writer commits 5 and fences L2 at 5
    assert await l2.version(thread.id) == 5
    await until(lambda: reader.stats.invalidations_received >= 1, "the invalidation")
    gated.release.set()
    stale = await slow
    assert stale is not None
    assert stale.version == 4  # it began before the pop: that answer is allowed
    assert await l2.get(thread.id) is None  # but it did not re-install version 4
    gated.armed = False
    again = await reader.get_thread(thread.id)
    assert again is not None
    assert (again.version, contents(again)[-1]) == (5, "question 2")


async def test_a_fork_continues_from_its_cut_and_leaves_the_parent_alone(
    memories: MemoryFactory, cache_backend: Backend
) -> None:
    a, b = await memories(), await memories()
    parent = await a.create_thread(
        tool_name="chat", turns=exchange(1) + exchange(2), owner="alice", metadata={"p": 1}
    )
    trips = Trips(cache_backend)
    fork = await a.fork_thread(parent.id, at_seq=2, owner="alice")  # after "answer 1"
    assert trips.count == 1  # the parent was cached: only the fork's create
    assert (fork.parent_id, fork.parent_seq, fork.tool_name, dict(fork.metadata)) == (
        parent.id,
        2,
        "chat",
        {"p": 1},
    )
    fork = await b.add_turns(
        fork.id, [Turn(role="user", content="question 2, asked differently")], owner="alice"
    )
    ancestors = await b.get_ancestors(fork, owner="alice")
    assert [contents(t) for t in ancestors] == [["question 1", "answer 1"]]
    messages = b.history_messages(fork, ancestors=ancestors)
    assert [m["content"] for m in messages if m["role"] != "system"] == [
        "question 1",
        "answer 1",
        "question 2, asked differently",
    ]
    assert await a.get_thread(parent.id, owner="alice") == parent  # untouched
    with pytest.raises(ThreadNotFoundError):
        await b.fork_thread(parent.id, owner="bob")
    with pytest.raises(TurnNotFoundError):
        await b.fork_thread(parent.id, at_seq=9, owner="alice")


async def test_a_rewrite_on_one_instance_is_seen_whole_by_another_from_l2(
    memories: MemoryFactory, cache_backend: Backend
) -> None:
    a, b = await memories(), await memories()
    thread = await a.create_thread(turns=exchange(1) + exchange(2), metadata={"v": 1})
    assert await b.get_thread(thread.id) == thread  # b holds version 4 in L1
    trips = Trips(cache_backend)
    rewritten = await a.rewrite_thread(
        thread.id,
        [Turn(role="assistant", content="answer 1, edited"), *exchange(3)],
        after_seq=1,
        metadata={"v": 2},
    )
    assert trips.count == 1  # the store write; the thread came back with it
    assert contents(rewritten) == ["question 1", "answer 1, edited", "question 3", "answer 3"]
    assert (rewritten.version, dict(rewritten.metadata)) == (4 + 1 + 3, {"v": 2})
    assert await a.get_thread(thread.id) == rewritten  # an L1 hit
    assert trips.count == 1
    await until(lambda: b.stats.invalidations_received >= 1, "b to hear of the rewrite")
    seen = await b.get_thread(thread.id)
    assert trips.count == 1  # an L2 hit: the writer installed the new copy there
    assert seen == rewritten


async def test_a_delta_refresh_after_a_rewrite_brings_the_new_metadata(
    memories: MemoryFactory, cache_backend: Backend
) -> None:
    """An instance whose older copy is refreshed from the store (L2 lost the new one)
    takes the thread's metadata from the store too, not from its stale copy."""
    a, b = await memories(), await memories()
    thread = await a.create_thread(turns=exchange(1), metadata={"v": 1})
    assert await b.get_thread(thread.id) == thread  # b holds version 2 in L1
    rewritten = await a.rewrite_thread(thread.id, exchange(2), after_seq=2, metadata={"v": 2})
    await until(lambda: b.stats.invalidations_received >= 1, "b to hear of the rewrite")
    await a.evict(thread.id)  # L2 loses the copy: b refreshes its own from the store
    seen = await b.get_thread(thread.id)
    assert b.stats.delta_refreshes == 1
    assert seen == rewritten
    assert dict(seen.metadata) == {"v": 2}
