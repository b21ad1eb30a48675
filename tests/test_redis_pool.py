"""An instance's Redis connections are bounded (CONVMEM_REDIS_MAX_CONNECTIONS): a burst
of concurrent calls waits for one of them, and a pool that stays full fails like any
Redis call, with a message that names the setting."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from convmem.cache.protocol import L2Error
from convmem.cache.redis import RedisCache
from convmem_bench.redis_server import RedisServer
from tests.support.services import RedisClusterServers


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


async def _connected(admin: aioredis.Redis) -> int:
    return int((await admin.info("clients"))["connected_clients"])


async def test_a_burst_waits_for_the_bounded_connections(redis_server: RedisServer) -> None:
    admin = aioredis.Redis.from_url(redis_server.url)
    cache = RedisCache.from_url(redis_server.url, max_connections=3, socket_timeout=2.0)
    try:
        before = await _connected(admin)
        # Every call from here is held 0.3 s in the server, so all 40 are in flight at once.
        await admin.client_pause(300)
        versions = await asyncio.gather(*(cache.version(f"thread-{i}") for i in range(40)))
        assert versions == [0] * 40
        assert await _connected(admin) - before == 3
    finally:
        await cache.aclose()
        await admin.aclose()


async def test_a_pool_that_stays_full_fails_with_a_clear_error_then_recovers(
    redis_server: RedisServer,
) -> None:
    admin = aioredis.Redis.from_url(redis_server.url)
    cache = RedisCache.from_url(redis_server.url, max_connections=2, socket_timeout=0.25)
    try:
        await admin.client_pause(1000)
        outcomes = await asyncio.gather(
            *(cache.version(f"thread-{i}") for i in range(10)), return_exceptions=True
        )
        assert all(isinstance(o, L2Error) for o in outcomes), outcomes
        full = [o for o in outcomes if "CONVMEM_REDIS_MAX_CONNECTIONS" in str(o)]
        assert len(full) == 8  # two calls held the connections (and timed out in them)
        await asyncio.sleep(1.0)
        assert await cache.version("thread-0") == 0
    finally:
        await cache.aclose()
        await admin.aclose()


async def test_a_cluster_node_refuses_calls_past_its_bound(
    redis_cluster: RedisClusterServers,
) -> None:
    cache = RedisCache.from_url(redis_cluster.url, max_connections=2, socket_timeout=2.0)
    try:
        await cache.version("warm-up")  # the slot map
        outcomes = await asyncio.gather(
            *(cache.version("one-thread") for _ in range(30)), return_exceptions=True
        )
        refused = [o for o in outcomes if isinstance(o, L2Error)]
        assert refused, "30 concurrent calls to one node fitted in 2 connections"
        assert all("CONVMEM_REDIS_MAX_CONNECTIONS" in str(o) for o in refused), refused
        assert [o for o in outcomes if not isinstance(o, L2Error)] == [0] * (30 - len(refused))
    finally:
        await cache.aclose()
