"""The tiered cache against a real Redis: budgets, coherence across instances, races, repair.

Each ``Memory`` here stands for one server process: its own L1, watermarks and
subscription, sharing the store and Redis with the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from convmem import Memory, Thread, Turn
from convmem.cache.redis import RedisCache
from convmem.changes import DELETED
from convmem.encryption import Encryption, new_key
from tests.conftest import LIMITS, Backend, MemoryFactory
from tests.contract.test_store_contract import Trips
from tests.support.flows import exchange, request, until
from tests.support.gated import GatedStore
from tests.support.tiers import WatchedTier

KEY = new_key()


@pytest.fixture
def redis_url(redis_or_cluster_url: str) -> str:
    """Every test here runs on a single Redis and on a 3-primary, 3-replica cluster."""
    return redis_or_cluster_url


@pytest.fixture(params=["plain", "encrypted"])
def memories(request: pytest.FixtureRequest, memories: MemoryFactory) -> MemoryFactory:
    """Every test here runs with encryption at rest off and on: the cache protocol must
    not depend on what the copies it moves hold."""
    if request.param == "plain":
        return memories

    async def encrypted(store: Any = None, *, cache: Any = None, **overrides: Any) -> Memory:
        if cache is not None:
            overrides.setdefault("encryption", Encryption([KEY]))
        else:
            overrides.setdefault("encryption_keys", [KEY])
        return await memories(store, cache=cache, **overrides)

    return encrypted


@pytest.fixture
async def l2(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisCache]:
    """The test's own view of L2, to inspect and tamper with what the instances share."""
    cache = RedisCache.from_url(redis_url, prefix=redis_prefix)
    yield cache
    await cache.aclose()


def opened(memory: Memory, copy: Thread | None) -> Thread | None:
    """A copy read straight from the store or Redis, as the instance's L1 would hold it."""
    return None if copy is None else memory.sealing.open_thread(copy)


# -- the request budget ---------------------------------------------------------


async def test_budget_with_redis_cold_l2_cold_l2_warm_and_warm(
    memories: MemoryFactory, cache_backend: Backend, l2: RedisCache
) -> None:
    creator = await memories()
    trips = Trips(cache_backend)
    thread = await creator.create_thread(tool_name="chat", turns=exchange(1))
    assert trips.count == 1

    await l2.client.delete(l2.key(thread.id))  # Redis lost it: fully cold
    cold = await memories()
    trips = Trips(cache_backend)
    await request(cold, thread.id, 2)
    assert trips.count == 2  # 1 read + 1 write
    assert (cold.stats.store_reads, cold.stats.store_writes) == (1, 1)

    warm_l2 = await memories()  # a new process: L1 cold, L2 warm after the write
    trips = Trips(cache_backend)
    await request(warm_l2, thread.id, 3)
    assert trips.count == 1  # 0 reads + 1 write
    assert warm_l2.stats.l2_hits == 1
    assert warm_l2.stats.store_reads == 0

    for n in (4, 5):
        trips = Trips(cache_backend)
        await request(warm_l2, thread.id, n)
        assert trips.count == 1
    assert warm_l2.stats.store_reads == 0
    final = await warm_l2.get_thread(thread.id)
    assert final == opened(warm_l2, await cache_backend.store.load(thread.id, owner=None))
    assert final is not None
    assert final.version == 10


async def test_the_l2_copy_is_extended_in_place_by_an_append(
    memories: MemoryFactory, l2: RedisCache, redis_url: str, redis_prefix: str
) -> None:
    tier = WatchedTier(RedisCache.from_url(redis_url, prefix=redis_prefix))
    memory = await memories(cache=tier)
    thread = await memory.create_thread(
        turns=[Turn(role="user", content=str(i)) for i in range(40)]
    )
    await memory.add_turns(thread.id, exchange(1))
    assert tier.appended == [2]  # only the new turns travel to Redis, not the 40 before them
    assert await l2.client.hlen(l2.key(thread.id)) == 42 + 7  # turns, v, n, h, u, e, a, t
    cached = await l2.get(thread.id)
    assert cached is not None
    assert opened(memory, cached) == await memory.get_thread(thread.id)
    await tier.aclose()


async def test_concurrent_cold_readers_share_one_load(
    memories: MemoryFactory, cache_backend: Backend, l2: RedisCache
) -> None:
    thread = await (await memories()).create_thread(turns=exchange(1))
    await l2.client.delete(l2.key(thread.id))
    reader = await memories()
    trips = Trips(cache_backend)
    results = await asyncio.gather(*(reader.get_thread(thread.id) for _ in range(10)))
    assert trips.count == 1
    assert all(r == results[0] for r in results)
    assert reader.stats.single_flight_joins == 9
    assert reader.stats.l2_misses == 1


# -- coherence across instances ---------------------------------------------------


async def test_a_write_on_one_instance_is_seen_by_another_without_a_store_read(
    memories: MemoryFactory, cache_backend: Backend
) -> None:
    a, b = await memories(), await memories()
    thread = await a.create_thread(turns=exchange(1))
    assert await b.get_thread(thread.id) == thread  # b caches v2 in L1
    await a.add_turns(thread.id, exchange(2))
    await until(lambda: b.stats.invalidations_received >= 1, "b to hear of a's write")
    trips = Trips(cache_backend)
    seen = await b.get_thread(thread.id)
    assert seen is not None
    assert seen.version == 4  # not the stale L1 copy
    assert trips.count == 0  # a extended L2 in place: b's read is an L2 hit
    assert b.stats.stale_rejections == 1


async def test_a_copy_behind_is_refreshed_with_a_delta(
    memories: MemoryFactory, cache_backend: Backend, l2: RedisCache
) -> None:
    a, b = await memories(), await memories()
    thread = await a.create_thread(turns=exchange(1))
    await b.get_thread(thread.id)
    await a.add_turns(thread.id, exchange(2))
    await until(lambda: b.stats.invalidations_received >= 1, "the invalidation")
    await l2.client.delete(l2.key(thread.id))  # L2 lost it too: b must go to the store
    seen = await b.get_thread(thread.id)
    assert seen is not None
    assert [t.content for t in seen.turns][-1] == "answer 2"
    assert b.stats.delta_refreshes == 1


async def test_deleting_on_one_instance_hides_the_thread_everywhere(
    memories: MemoryFactory, l2: RedisCache
) -> None:
    a, b = await memories(), await memories()
    thread = await a.create_thread(turns=exchange(1))
    await b.get_thread(thread.id)
    assert await a.delete_thread(thread.id)
    await until(lambda: b.stats.invalidations_received >= 1, "the delete")
    assert await b.get_thread(thread.id) is None
    assert await l2.version(thread.id) == DELETED
    fresh = await l2.install(thread, thread.created_at)
    assert not fresh  # a slow reader cannot bring it back into L2


async def test_owners_are_isolated_through_l2(memories: MemoryFactory) -> None:
    a, b = await memories(), await memories()
    thread = await a.create_thread(turns=exchange(1), owner="alice")
    assert await b.get_thread(thread.id, owner="bob") is None
    assert await b.get_thread(thread.id) is None
    assert await b.get_thread(thread.id, owner="alice") == thread


async def test_no_tier_serves_an_expired_thread(
    memories: MemoryFactory, cache_backend: Backend, l2: RedisCache
) -> None:
    a = await memories()
    thread = await a.create_thread(turns=exchange(1))
    b = await memories()
    cache_backend.clock.advance(LIMITS.ttl)
    assert await l2.get(thread.id) is not None  # still in Redis ...
    assert await b.get_thread(thread.id) is None  # ... but never served
    assert await a.get_thread(thread.id) is None


# -- the stale-set races, forced ----------------------------------------------------


async def test_a_slow_reader_cannot_install_an_older_copy(
    memories: MemoryFactory, cache_backend: Backend, l2: RedisCache
) -> None:
    writer = await memories()
    thread = await writer.create_thread(turns=exchange(1))
    await l2.client.delete(l2.key(thread.id))
    gated = GatedStore(cache_backend.store)
    reader = await memories(gated)
    gated.armed = True
    slow = asyncio.create_task(reader.get_thread(thread.id))
    await gated.loaded.wait()  # the reader holds version 2 from the store ...
    await writer.add_turns(thread.id, exchange(2))  # ... the writer commits 4 and fences L2
    assert await l2.version(thread.id) == 4
    await until(lambda: reader.stats.invalidations_received >= 1, "the invalidation")
    gated.release.set()
    stale = await slow
    assert stale is not None
    assert stale.version == 2  # it began before the write: that answer is allowed
    assert await l2.version(thread.id) == 4  # but it did not re-install version 2
    gated.armed = False
    again = await reader.get_thread(thread.id)  # and its own L1 does not serve it either
    assert again is not None
    assert again.version == 4
    newcomer = await memories()
    fresh = await newcomer.get_thread(thread.id)
    assert fresh is not None
    assert fresh.version == 4


async def test_writers_racing_on_a_thread_whose_l2_copy_is_behind(
    memories: MemoryFactory,
    cache_backend: Backend,
    l2: RedisCache,
    redis_url: str,
    redis_prefix: str,
) -> None:
    tier = WatchedTier(RedisCache.from_url(redis_url, prefix=redis_prefix))
    first, second, old = await memories(cache=tier), await memories(), await memories()
    thread = await first.create_thread(turns=exchange(1))
    await old.get_thread(thread.id)  # an instance holding version 2
    missed = first.sealing.seal_turns(thread.id, exchange(2), first_seq=3)
    await cache_backend.store.append(  # L2 missed this write
        thread.id, missed, owner=None, seqs_bound=first.sealing.encrypts
    )
    assert await l2.version(thread.id) == 2  # L2 is behind the store (4)

    # first's L2 step is held back until second's has run: the L2 writes arrive out of order.
    tier.release = hold = asyncio.Event()
    slow_write = asyncio.create_task(first.add_turns(thread.id, exchange(3)))  # commits 6
    await until(lambda: len(tier.appended) == 1, "first's commit, its L2 step held")
    await second.add_turns(thread.id, exchange(4))  # commits 8, fences L2 at 8
    hold.set()
    await slow_write
    assert await l2.version(thread.id) == 8

    acknowledged = {f"answer {n}" for n in (1, 2, 3, 4)}
    await until(lambda: old.stats.invalidations_received >= 2, "both invalidations")
    for instance in (first, second, old, await memories()):
        seen = await instance.get_thread(thread.id)
        assert seen is not None
        assert acknowledged <= {t.content for t in seen.turns}
        assert seen.version == 8
    await tier.aclose()


# -- faults and repair ---------------------------------------------------------------


@pytest.mark.parametrize(
    "plant",
    [
        "string",  # a foreign value of another type (WRONGTYPE)
        "garbage",  # a hash with undecodable fields
        "missing-turn",  # a version that promises more turns than are there
        "foreign",  # a well-formed payload of another thread
    ],
)
async def test_a_corrupt_l2_value_is_a_counted_miss_and_is_repaired(
    memories: MemoryFactory, l2: RedisCache, plant: str
) -> None:
    writer = await memories()
    thread = await writer.create_thread(turns=exchange(1))
    other = await writer.create_thread(turns=exchange(9))
    key = l2.key(thread.id)
    raw = l2.client
    await raw.delete(key)
    if plant == "string":
        await raw.set(key, b"\x80\x04pickled?")
    elif plant == "garbage":
        await raw.hset(
            key, mapping={"v": "2", "h": "{not json", "u": "x", "e": "y", "1": "?", "2": "?"}
        )
    elif plant == "missing-turn":
        await raw.hset(key, mapping={"v": "3", "h": "{}", "u": "1", "e": "1", "1": "{}"})
    else:
        fields = cast("dict[Any, Any]", await raw.hgetall(l2.key(other.id)))
        await raw.hset(key, mapping=fields)
    reader = await memories()
    assert await reader.get_thread(thread.id) == thread
    assert reader.stats.l2_corrupt == 1
    assert opened(reader, await l2.get(thread.id)) == thread  # repaired: a valid copy is back
    newcomer = await memories()
    assert await newcomer.get_thread(thread.id) == thread
    assert newcomer.stats.l2_hits == 1


async def test_strict_mode_checks_l2_on_every_l1_hit(
    memories: MemoryFactory, cache_backend: Backend
) -> None:
    writer = await memories()
    relaxed = await memories()
    strict = await memories(consistency="strict")
    thread = await writer.create_thread(turns=exchange(1))
    for reader in (relaxed, strict):
        await reader.get_thread(thread.id)
        reader._cache._invalidated = lambda thread_id, version: None  # type: ignore[method-assign]
    await writer.add_turns(thread.id, exchange(2))  # the message to both is "delayed" forever
    stale = await relaxed.get_thread(thread.id)
    fresh = await strict.get_thread(thread.id)
    assert stale is not None
    assert stale.version == 2  # the window strict mode exists to close
    assert fresh is not None
    assert fresh.version == 4


async def test_cache_hits_and_misses_are_logged_at_debug(
    memories: MemoryFactory, caplog: pytest.LogCaptureFixture
) -> None:
    a = await memories()
    thread = await a.create_thread(turns=exchange(1))
    b = await memories()
    with caplog.at_level(logging.DEBUG, logger="convmem"):
        await b.get_thread(thread.id)
        await b.get_thread(thread.id)
        await b.get_thread("0f8c2a4e-6b1d-4c3a-9e2f-5a7b8c9d0e1f")
    lines = [r.getMessage() for r in caplog.records]
    assert f"CACHE HIT l2 thread={thread.id} version=2" in lines
    assert f"CACHE HIT l1 thread={thread.id} version=2" in lines
    assert "CACHE MISS thread=0f8c2a4e-6b1d-4c3a-9e2f-5a7b8c9d0e1f version=None" in lines


async def test_stats_report_every_layer(memories: MemoryFactory) -> None:
    memory = await memories()
    await memory.get_thread((await memory.create_thread(turns=exchange(1))).id)
    stats = memory.stats.as_dict()
    for name in (
        "l1_hits",
        "l2_hits",
        "misses",
        "store_reads",
        "store_writes",
        "l2_errors",
        "circuit_state",
        "invalidations_received",
        "l1_bytes",
        "subscribed",
    ):
        assert name in stats
    assert stats["circuit_state"] == "closed"
    assert stats["subscribed"] is True
    assert stats["l1_bytes"] > 0
    assert await memory.ping_cache() is True


async def test_a_local_eviction_leaves_the_copy_in_l2_and_a_full_one_does_not(
    memories: MemoryFactory, cache_backend: Backend
) -> None:
    memory = await memories()
    thread = await memory.create_thread(tool_name="chat", turns=exchange(1))

    await memory.evict(thread.id, local_only=True)  # as a new instance would start
    trips = Trips(cache_backend)
    assert await memory.get_thread(thread.id) == thread
    assert trips.count == 0
    assert memory.stats.l2_hits == 1

    await memory.evict(thread.id)
    trips = Trips(cache_backend)
    assert await memory.get_thread(thread.id) == thread
    assert trips.count == 1  # gone from both tiers: a store read
    assert memory.stats.l2_hits == 1
