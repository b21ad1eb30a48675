"""Redis faults: a Redis of the test's own is killed and restarted, or cut off by a proxy.

No call may fail because Redis failed, no acknowledged turn may be lost, a call
during the outage may not wait for a timeout (the breaker skips L2 at once), and
L2 must serve again once Redis is back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from convmem import Memory, Turn
from convmem.cache.redis import RedisCache
from convmem_bench.net import TcpProxy
from convmem_bench.redis_server import RedisServer
from tests.conftest import Backend, MemoryFactory
from tests.contract.test_store_contract import Trips
from tests.support.clock import FakeTimer
from tests.support.flows import exchange, until

Factory = Callable[..., Awaitable[Memory]]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def make_memory(memories: MemoryFactory) -> Factory:
    """Instances on a Redis of the test's choosing, with a breaker clock it controls."""

    async def make(url: str, breaker: FakeTimer, **overrides: Any) -> Memory:
        return await memories(cache_url=url, breaker_clock=breaker, **overrides)

    return make


async def test_redis_killed_and_restarted_mid_run(
    redis_server: RedisServer, make_memory: Factory, cache_backend: Backend
) -> None:
    breaker = FakeTimer()
    writer = await make_memory(redis_server.url, breaker)
    reader = await make_memory(redis_server.url, breaker)
    thread = await writer.create_thread(turns=exchange(0))
    acknowledged = ["question 0", "answer 0"]
    for n in range(1, 4):
        await writer.add_turns(thread.id, exchange(n))
        acknowledged += [f"question {n}", f"answer {n}"]
        assert await reader.get_thread(thread.id) is not None

    redis_server.kill()
    # Reads that start once the reader knows it can no longer hear of writes bypass its L1.
    await until(lambda: not reader.stats.subscribed, "the reader to notice")
    for n in range(4, 12):  # every call succeeds, from the store
        seen = await reader.get_thread(thread.id)
        assert seen is not None
        assert [t.content for t in seen.turns] == acknowledged
        await writer.add_turns(thread.id, exchange(n))
        acknowledged += [f"question {n}", f"answer {n}"]
    assert writer.stats.circuit_state == "open"
    # One failed Redis call opened the circuit; every later one was skipped, not timed out.
    assert writer.stats.l2_errors == 1
    assert writer.stats.l2_skipped >= 7  # one call per write (it carries the announcement)
    assert not reader.stats.subscribed  # so its L1 is bypassed: the store served

    redis_server.start()  # the same port, empty (no persistence)
    breaker.now += 60  # past the breaker's reset period
    # Resubscribing probes Redis (and replays the writer's missed writes): circuits close.
    await until(lambda: writer.stats.subscribed and reader.stats.subscribed, "resubscription")
    for memory in (writer, reader):
        assert await memory.get_thread(thread.id) is not None
    await until(
        lambda: writer.stats.circuit_state == reader.stats.circuit_state == "closed",
        "the circuits to close",
    )
    assert writer.stats.pending_fences == 0

    newcomer = await make_memory(redis_server.url, FakeTimer())
    trips = Trips(cache_backend)
    seen = await newcomer.get_thread(thread.id)
    assert trips.count == 0  # L2 hits resumed
    assert newcomer.stats.l2_hits == 1
    assert seen is not None
    assert [t.content for t in seen.turns] == acknowledged  # nothing acknowledged was lost


async def test_a_single_instance_keeps_its_l1_while_redis_is_down(
    redis_server: RedisServer, make_memory: Factory, cache_backend: Backend
) -> None:
    memory = await make_memory(redis_server.url, FakeTimer(), single_instance=True)
    thread = await memory.create_thread(turns=exchange(0))
    redis_server.kill()
    for n in range(1, 4):
        trips = Trips(cache_backend)
        assert await memory.get_thread(thread.id) is not None
        await memory.add_turns(thread.id, exchange(n))
        assert trips.count == 1  # warm: 0 reads + 1 write, Redis or not
    assert memory.stats.circuit_state == "open"


async def test_writes_missed_during_a_partition_are_fenced_and_announced_after_it(
    make_memory: Factory, redis_url: str, redis_prefix: str
) -> None:
    host, port = "127.0.0.1", int(redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy(host, port).start()
    try:
        breaker = FakeTimer()
        cut_off = await make_memory(f"redis://127.0.0.1:{proxy.port}/0", breaker)
        other = await make_memory(redis_url, FakeTimer())
        thread = await cut_off.create_thread(turns=exchange(1))
        assert await other.get_thread(thread.id) == thread

        proxy.cut()  # Redis and its data live on; only cut_off cannot reach it
        await until(lambda: not cut_off.stats.subscribed, "cut_off to notice")
        updated = await cut_off.add_turns(thread.id, exchange(2))  # committed in the store
        assert updated.version == 4
        assert cut_off.stats.circuit_state == "open"
        stale = await other.get_thread(thread.id)  # nobody could tell other: the window
        assert stale is not None
        assert stale.version == 2

        proxy.restore()
        breaker.now += 60
        received = other.stats.invalidations_received
        assert (
            await cut_off.get_thread(thread.id) == updated
        )  # probe or resubscription replays the fence
        await until(lambda: other.stats.invalidations_received > received, "the replayed write")
        seen = await other.get_thread(thread.id)
        assert seen is not None
        assert seen.version == 4
        probe = RedisCache.from_url(redis_url, prefix=redis_prefix)
        assert await probe.version(thread.id) >= 4
        await probe.aclose()
    finally:
        proxy.stop()


async def test_redis_down_at_start_does_not_stop_memory(
    make_memory: Factory, cache_backend: Backend
) -> None:
    from convmem_bench.pgbouncer import free_port

    memory = await make_memory(f"redis://127.0.0.1:{free_port()}/0", FakeTimer())
    thread = await memory.create_thread(turns=[Turn(role="user", content="hello")])
    assert await memory.get_thread(thread.id) == thread
    assert await memory.ping_cache() is False
    assert memory.stats.circuit_state == "open"


async def test_a_hung_redis_costs_one_timeout_then_nothing(
    redis_server: RedisServer, make_memory: Factory, cache_backend: Backend
) -> None:
    breaker = FakeTimer()
    writer = await make_memory(redis_server.url, breaker)
    reader = await make_memory(redis_server.url, FakeTimer())
    thread = await writer.create_thread(turns=exchange(0))
    assert await reader.get_thread(thread.id) == thread
    redis_server.pause()
    try:
        # The reader's heartbeat finds the silence: it stops trusting its L1.
        await until(lambda: not reader.stats.subscribed, "the reader to notice", within=15)
        for n in range(1, 6):
            await writer.add_turns(thread.id, exchange(n))
            seen = await reader.get_thread(thread.id)
            assert seen is not None
            assert seen.version == 2 + 2 * n  # from the store: nothing stale, nothing lost
        assert writer.stats.l2_errors == 1  # one timed-out call opened the circuit ...
        assert writer.stats.l2_skipped >= 4  # ... and every later write skipped Redis at once
    finally:
        redis_server.resume()
    breaker.now += 60
    await until(lambda: reader.stats.subscribed, "the reader to resubscribe", within=15)
    # The writer resubscribes on its own schedule; until it has, it reads from the store
    # and leaves Redis alone. Once it has, a probe (its replay, or this read) closes the
    # circuit.
    await until(lambda: writer.stats.subscribed, "the writer to resubscribe", within=15)
    assert await writer.get_thread(thread.id) is not None
    await until(lambda: writer.stats.circuit_state == "closed", "the circuit to close", within=5)
