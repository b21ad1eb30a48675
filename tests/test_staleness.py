"""The staleness bound under Redis faults, forced deterministically and measured.

DESIGN.md: under any Redis fault, no read returns a version older than one acknowledged
more than the lease before the read began. Each test makes one fault happen at a chosen
moment, on a Redis of the test's own, lets a writer acknowledge a turn and go idle, and
polls a reader that held the old copy in its L1: the time from the acknowledgement to the
reader's first read of the new version (the stale window) must be within the lease.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from convmem import Memory, Thread
from convmem_bench.redis_server import RedisServer
from tests.conftest import MemoryFactory
from tests.support.flows import exchange, until

LEASE = 1.0


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


async def warm_pair(memories: MemoryFactory, url: str) -> tuple[Memory, Memory, Thread]:
    """A writer whose circuit, once open, stays open (so only the background replay can
    reach Redis), a reader, both on the test's Redis, and a thread of version 2 that the
    reader holds in its L1."""
    writer = await memories(
        cache_url=url, cache_lease_seconds=LEASE, redis_breaker_reset_seconds=3600
    )
    reader = await memories(cache_url=url, cache_lease_seconds=LEASE)
    thread = await writer.create_thread(turns=exchange(0))
    await until(lambda: reader.stats.cache_trusted, "the reader to trust its tiers")
    assert (await reader.get_thread(thread.id)) == thread
    return writer, reader, thread


def assert_within_lease(window: float) -> None:
    assert window <= LEASE, f"stale for {window:.3f} s, beyond the {LEASE} s lease"


async def stale_window(reader: Memory, thread_id: str, version: int, acknowledged: float) -> float:
    """How long after the acknowledgement a read could still begin and return the old
    version: the largest (start - acknowledgement) over reads that returned it (0 if none).
    Polls until a read returns ``version``; no read may return anything else."""
    window = 0.0
    while True:
        began = time.monotonic()
        seen = await reader.get_thread(thread_id)
        assert seen is not None
        assert seen.version in (version - 2, version)  # never older, never anything else
        if seen.version == version:
            return window
        window = max(window, began - acknowledged)
        assert began - acknowledged < 30, "the reader never caught up"
        await _tick()


async def _tick() -> None:
    await asyncio.sleep(0.005)


async def test_an_idle_writer_whose_write_missed_redis_is_heard_within_the_lease(
    redis_server: RedisServer, memories: MemoryFactory
) -> None:
    writer, reader, thread = await warm_pair(memories, redis_server.url)
    redis_server.pause()  # a short hang: the writer's L2 step and announcement time out
    try:
        await writer.add_turns(thread.id, exchange(1))
        acknowledged = time.monotonic()
    finally:
        redis_server.resume()  # back before the reader's lease lapses; the writer goes idle
    assert writer.stats.circuit_state == "open"  # and stays open: only the replay reaches Redis
    window = await stale_window(reader, thread.id, 4, acknowledged)
    assert_within_lease(window)
    await until(lambda: writer.stats.pending_fences == 0, "the replay")
    assert reader.stats.invalidations_received >= 1  # heard from the idle writer


async def test_after_redis_restarts_empty_nothing_older_is_served(
    redis_server: RedisServer, memories: MemoryFactory
) -> None:
    writer, reader, thread = await warm_pair(memories, redis_server.url)
    redis_server.kill()
    await writer.add_turns(thread.id, exchange(1))  # acknowledged while Redis is down
    acknowledged = time.monotonic()
    redis_server.start()  # back, empty: every fence is gone
    window = await stale_window(reader, thread.id, 4, acknowledged)
    assert_within_lease(window)
    await until(lambda: reader.stats.redis_restarts == 1, "the reader to see the restart")
    await until(lambda: reader.stats.cache_trusted, "the reader to trust its tiers again")
    for _ in range(20):  # from L2 (refilled) or the store: never version 2 again
        seen = await reader.get_thread(thread.id)
        assert seen is not None
        assert seen.version == 4
        await _tick()


async def test_a_hung_redis_bounds_a_readers_stale_window_by_the_lease(
    redis_server: RedisServer, memories: MemoryFactory
) -> None:
    writer, reader, thread = await warm_pair(memories, redis_server.url)
    redis_server.pause()
    try:
        await writer.add_turns(thread.id, exchange(1))  # L2 step times out; committed
        acknowledged = time.monotonic()
        window = await stale_window(reader, thread.id, 4, acknowledged)
        assert_within_lease(window)
        assert reader.stats.misses >= 1  # the store served while the lease had lapsed
    finally:
        redis_server.resume()
    # Redis answers again: the writer's missed write is replayed, the reader's lease comes
    # back after a whole lease of contact, and nothing older is served meanwhile.
    await until(lambda: writer.stats.pending_fences == 0, "the replay", within=10)
    await until(lambda: reader.stats.cache_trusted, "the reader to trust its tiers again")
    seen = await reader.get_thread(thread.id)
    assert seen is not None
    assert seen.version == 4
    assert reader.stats.lease_lapses + (not reader.stats.subscribed) >= 1


async def test_a_killed_redis_bounds_the_stale_window_and_l2_resumes(
    redis_server: RedisServer, memories: MemoryFactory
) -> None:
    writer, reader, thread = await warm_pair(memories, redis_server.url)
    redis_server.kill()
    await writer.add_turns(thread.id, exchange(1))
    acknowledged = time.monotonic()
    window = await stale_window(reader, thread.id, 4, acknowledged)
    assert_within_lease(window)
    redis_server.start()
    await until(lambda: writer.stats.pending_fences == 0, "the replay", within=10)
    await until(lambda: reader.stats.cache_trusted, "the reader to trust its tiers again")
    seen = await reader.get_thread(thread.id)
    assert seen is not None
    assert seen.version == 4
