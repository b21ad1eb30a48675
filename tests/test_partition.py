"""A writer cut off from a Redis the others still reach (a partition, not a Redis fault):
its write is recorded in the store before it is acknowledged, another instance reads the
record within a quarter lease, fences and announces it, and no read anywhere that begins
a lease after the acknowledgement returns the older version. Without the watch (the
control) the others stay stale for as long as the partition lasts."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from convmem import Memory, StoreUnavailableError
from convmem.cache import redis as redis_module
from convmem.cache import redis_bus as redis_bus_module
from convmem.cache.redis import RedisCache
from convmem.cache.redis_connection import Client, connect
from convmem.stores.postgres import PostgresStore
from convmem_bench.net import TcpProxy
from tests.conftest import LIMITS, Backend
from tests.support.clock import FakeTimer
from tests.support.flows import exchange, until
from tests.support.services import PG_HOST, PG_PORT, RedisClusterServers, pg_url

Factory = Callable[..., Awaitable[Memory]]
LEASE = 1.0


async def _reads_until(memory: Memory, thread_id: str, seconds: float) -> list[tuple[float, int]]:
    """Read the thread every 20 ms for ``seconds``: (when each read began, its version)."""
    seen: list[tuple[float, int]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        began = time.monotonic()
        thread = await memory.get_thread(thread_id)
        assert thread is not None
        seen.append((began, thread.version))
        await asyncio.sleep(0.02)
    return seen


async def test_a_writer_cut_off_from_redis_leaves_no_reader_stale_past_the_lease(
    memories: Factory, redis_url: str, redis_prefix: str
) -> None:
    host, port = "127.0.0.1", int(redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy(host, port).start()
    try:
        await _partitioned_writer(
            memories, f"redis://127.0.0.1:{proxy.port}/0", proxy.cut, redis_url, redis_prefix
        )
    finally:
        proxy.stop()


async def test_a_writer_cut_off_from_the_cluster_leaves_no_reader_stale_past_the_lease(
    memories: Factory,
    redis_cluster: RedisClusterServers,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same on a Redis Cluster: the cut-off instance reaches every node through a
    proxy of its own (its client maps each node's address to its proxy), and all of them
    are cut."""
    proxies = {port: TcpProxy("127.0.0.1", port).start() for port in redis_cluster.ports}
    first = proxies[redis_cluster.ports[0]].port
    cut_url = f"redis+cluster://127.0.0.1:{first}"

    def through_proxies(url: str, **options: Any) -> Client:
        client = connect(url, **options)
        if url == cut_url and isinstance(client, RedisCluster):
            client.nodes_manager.address_remap = lambda a: (a[0], proxies[a[1]].port)
        return client

    monkeypatch.setattr(redis_module, "connect", through_proxies)
    monkeypatch.setattr(redis_bus_module, "connect", through_proxies)

    def cut() -> None:
        for proxy in proxies.values():
            proxy.cut()

    try:
        await _partitioned_writer(memories, cut_url, cut, redis_cluster.url, redis_prefix)
    finally:
        for proxy in proxies.values():
            proxy.stop()
        gc.collect()  # (redis-py's cluster leaves sockets for the collector: CLUSTER_LEAKS)


async def _partitioned_writer(
    memories: Factory, cut_url: str, cut: Callable[[], None], redis_url: str, prefix: str
) -> None:
    watched = {"watch_unannounced": True, "cache_lease_seconds": LEASE}
    cut_off = await memories(cache_url=cut_url, breaker_clock=FakeTimer(), **watched)
    other = await memories(cache_url=redis_url, **watched)
    thread = await cut_off.create_thread(turns=exchange(1))
    assert await other.get_thread(thread.id) == thread  # in other's L1 and in L2
    assert (await other.lookup_thread(thread.id))[1] == "l1"

    cut()  # Redis and the store live on; only cut_off cannot reach Redis
    await until(lambda: not cut_off.stats.subscribed, "cut_off to notice")
    updated = await cut_off.add_turns(thread.id, exchange(2))
    acknowledged = time.monotonic()
    assert updated.version == 4
    assert cut_off.stats.unannounced_recorded == 1

    reads = await _reads_until(other, thread.id, LEASE + 0.5)
    late = [version for began, version in reads if began >= acknowledged + LEASE]
    assert late, "no read began a lease after the write"
    assert set(late) == {4}
    stale_for = max((began - acknowledged for began, v in reads if v < 4), default=0.0)
    assert stale_for < LEASE
    assert other.stats.unannounced_fenced == 1  # it fenced and announced the write

    # Redis holds the fence: an instance that starts now reads the store, not the stale
    # copy (cut_off is still cut off and has replayed nothing).
    assert cut_off.stats.pending_fences == 1
    probe = RedisCache.from_url(redis_url, prefix=prefix)
    assert await probe.version(thread.id) >= 4
    await probe.aclose()
    newcomer = await memories(cache_url=redis_url, **watched)
    seen = await newcomer.get_thread(thread.id)
    assert seen is not None
    assert seen.version == 4


async def test_without_the_watch_the_others_stay_stale_while_the_partition_lasts(
    memories: Factory, redis_url: str
) -> None:
    """The control: the same partition with the watch off."""
    host, port = "127.0.0.1", int(redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy(host, port).start()
    try:
        unwatched = {"watch_unannounced": False, "cache_lease_seconds": LEASE}
        cut_off = await memories(
            cache_url=f"redis://127.0.0.1:{proxy.port}/0", breaker_clock=FakeTimer(), **unwatched
        )
        other = await memories(**unwatched)
        thread = await cut_off.create_thread(turns=exchange(1))
        assert await other.get_thread(thread.id) == thread
        proxy.cut()
        await until(lambda: not cut_off.stats.subscribed, "cut_off to notice")
        await cut_off.add_turns(thread.id, exchange(2))
        assert cut_off.stats.unannounced_recorded == 0
        reads = await _reads_until(other, thread.id, LEASE + 0.5)
        assert {version for _, version in reads} == {2}  # stale all along
    finally:
        proxy.stop()


async def test_the_watch_costs_a_continued_request_no_round_trip(
    memories: Factory, cache_backend: Backend
) -> None:
    """Healthy, the watch reads the store in the background only: on the wire, a warm
    continued request is still 1 write (0 reads), beside the watch's own reads (1 round
    trip each, a quarter lease apart), and nothing is recorded."""
    instance = await memories(watch_unannounced=True, cache_lease_seconds=LEASE)
    thread = await instance.create_thread(turns=exchange(1))
    # Warm: psycopg prepares a statement on its sixth use on a connection, which costs
    # one more round trip then, once; the watch reads the store 8 times meanwhile.
    for n in range(2, 14):  # (the store keeps 50 turns: 46 in all here)
        await instance.add_turns(thread.id, exchange(n))
    await asyncio.sleep(2 * LEASE)
    await _watch_read_done(instance)  # (none in flight: its round trip is counted or not)
    before, wire = instance.stats, cache_backend.round_trips()
    for n in range(14, 24):
        assert await instance.get_thread(thread.id) is not None
        await instance.add_turns(thread.id, exchange(n))
        await asyncio.sleep(0.05)  # (so that some of the watch's reads fall in between)
    await _watch_read_done(instance)
    wire_after, after = cache_backend.round_trips(), instance.stats
    watch = after.watch_reads - before.watch_reads
    assert watch >= 1
    assert wire_after - wire == 10 + watch
    assert (after.store_reads - before.store_reads, after.store_writes - before.store_writes) == (
        0,
        10,
    )
    assert after.unannounced_recorded == after.watch_failures == 0


async def _watch_read_done(memory: Memory) -> None:
    """Return just after the watch finished a read: the next is a quarter lease away."""
    done = memory.stats.watch_reads
    await until(lambda: memory.stats.watch_reads > done, "a read of the watch", within=5)


async def test_an_instance_cut_off_from_the_store_is_never_stale_either(
    memories: Factory, clean_pg: str
) -> None:
    """The other single partition: one instance cannot reach PostgreSQL while the others
    (and it) reach Redis. The others' writes are announced through Redis, so it serves
    them from L2 or, when only a fence is there, fails fast: never the older version."""
    proxy = TcpProxy(PG_HOST, PG_PORT).start()
    try:
        own = PostgresStore.from_url(pg_url(clean_pg, port=proxy.port), limits=LIMITS)
        await own.open()
        watched = {"watch_unannounced": True, "cache_lease_seconds": LEASE}
        writer = await memories(PostgresStore.from_url(pg_url(clean_pg), limits=LIMITS), **watched)
        cut_off = await memories(own, **watched)
        thread = await writer.create_thread(turns=exchange(1))
        assert await cut_off.get_thread(thread.id) == thread
        proxy.cut()
        for n in range(2, 5):
            written = await writer.add_turns(thread.id, exchange(n))
            heard = n - 1
            await until(
                lambda: cut_off.stats.invalidations_received >= heard,  # noqa: B023 (awaited here)
                "the announcement",
            )
            try:
                seen = await cut_off.get_thread(thread.id)
            except StoreUnavailableError:
                continue  # fenced, and the store out of reach: refused, not stale
            assert seen is not None
            assert seen.version == written.version
        assert cut_off.stats.unannounced_recorded == writer.stats.unannounced_recorded == 0
    finally:
        proxy.stop()
        await own.aclose()
