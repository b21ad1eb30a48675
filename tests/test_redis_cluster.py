"""L2 on a Redis Cluster (three primaries, three replicas, of the test's own): the
invalidation channel is sharded, and a failover — manual, or a primary killed — under
load fails no call and loses no turn, and L2 resumes after it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator

import pytest

from convmem import Turn
from tests.conftest import MemoryFactory
from tests.support.flows import exchange, until
from tests.support.services import RedisClusterServers


@pytest.fixture
def redis_url(redis_cluster: RedisClusterServers) -> str:
    return redis_cluster.url


@pytest.fixture
def own_cluster() -> Iterator[RedisClusterServers]:
    """A cluster this test may break."""
    cluster = RedisClusterServers().start()
    yield cluster
    cluster.stop()


async def test_invalidations_travel_on_one_shard_and_are_not_broadcast(
    memories: MemoryFactory, redis_cluster: RedisClusterServers, redis_prefix: str
) -> None:
    writer, reader = await memories(), await memories()
    thread = await writer.create_thread(turns=exchange(1))
    await reader.get_thread(thread.id)
    await writer.add_turns(thread.id, exchange(2))
    await until(lambda: reader.stats.invalidations_received >= 1, "the invalidation")
    seen = await reader.get_thread(thread.id)
    assert seen is not None
    assert seen.version == 4
    channel = f"{redis_prefix}{{invalidations}}"
    sharded = {}
    classic = {}
    for port in redis_cluster.processes:
        reply = redis_cluster.cli_call(port, "pubsub", "shardnumsub", channel).split()
        sharded[port] = int(reply[1]) if len(reply) > 1 else 0
        reply = redis_cluster.cli_call(port, "pubsub", "numsub", channel).split()
        classic[port] = int(reply[1]) if len(reply) > 1 else 0
    holders = {port: n for port, n in sharded.items() if n}
    assert list(holders.values()) == [2], sharded  # both instances, on one node only
    assert set(holders) == {redis_cluster.primary_for(channel)}
    assert not any(classic.values()), classic  # nothing on the broadcast channels


@pytest.fixture
def garbage_collected() -> Iterator[None]:
    """Collect garbage when the test is done, after its instances are closed (request
    this fixture first: it is torn down last)."""
    yield
    gc.collect()


# redis-py's asyncio cluster client leaves connections open on nodes a failover removes
# (redis-py #3572, #4053), and on the extra nodes it queries while it looks for the new
# slot map; `cache/redis_connection.py` closes every node it can see, but those queried
# nodes never reach the client's caches. Their sockets are closed by the garbage
# collector, with a ResourceWarning: collected within this test (see the fixture above)
# and only here not an error.
@pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)
async def test_failovers_under_load_fail_no_call_and_lose_no_turn(
    garbage_collected: None, memories: MemoryFactory, own_cluster: RedisClusterServers
) -> None:
    """A manual failover of the primary holding the invalidation channel, then another
    primary SIGKILLed, while one instance writes and another reads."""
    prefix = "failover:"
    writer = await memories(cache_url=own_cluster.url, cache_prefix=prefix)
    reader = await memories(cache_url=own_cluster.url, cache_prefix=prefix)
    threads = [await writer.create_thread(turns=exchange(1)) for _ in range(40)]
    written: dict[str, list[str]] = {
        t.id: [t.turns[0].content, t.turns[1].content] for t in threads
    }
    failures: list[str] = []
    newest: dict[str, int] = {}
    stop = asyncio.Event()

    async def write() -> None:
        n = 0
        while not stop.is_set():
            thread = threads[n % len(threads)]  # round robin: threads stay under their limit
            content = f"turn {n}"
            turn = Turn(role="user", content=content, key=content)
            try:
                await writer.add_turns(thread.id, [turn])
            except Exception as exc:
                failures.append(f"write: {exc!r}")
            else:
                written[thread.id].append(content)
            n += 1
            await asyncio.sleep(0.01)

    async def read() -> None:
        while not stop.is_set():
            for thread in threads[:8]:
                try:
                    seen = await reader.get_thread(thread.id)
                except Exception as exc:
                    failures.append(f"read: {exc!r}")
                    continue
                assert seen is not None
                assert seen.version >= newest.get(thread.id, 0), "a version went backwards"
                newest[thread.id] = seen.version
            await asyncio.sleep(0.01)

    loops = asyncio.gather(write(), read())
    try:
        await asyncio.sleep(1.0)
        channel_primary = own_cluster.primary_for(f"{prefix}{{invalidations}}")
        replica = own_cluster.replica_of(channel_primary)
        own_cluster.cli_call(replica, "cluster", "failover")
        await asyncio.to_thread(own_cluster.wait_ok)
        await until(lambda: replica in own_cluster.primaries(), "the replica promoted", 20)
        await asyncio.sleep(1.0)
        other = next(p for p in own_cluster.primaries() if p != replica)
        own_cluster.kill(other)
        await asyncio.to_thread(own_cluster.wait_ok)
        # L2 serves again once the breaker lets it and the reader trusts its copies (a
        # whole lease of contact after the resubscription the failover caused).
        await until(
            lambda: reader.stats.subscribed and reader.stats.cache_trusted,
            "the reader to trust its cache again",
            30,
        )
        l2_hits_before = reader.stats.l2_hits
        await until(lambda: reader.stats.l2_hits > l2_hits_before, "an L2 hit after both", 30)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await loops
    assert failures == [], (len(failures), sorted({f[:60] for f in failures}))
    assert writer.stats.redis_restarts + reader.stats.redis_restarts >= 1  # failover seen
    for thread in threads:
        stored = await writer.store.load(thread.id, owner=None)
        assert stored is not None
        assert [t.content for t in stored.turns] == written[thread.id]  # nothing lost
