"""A PostgreSQL of the test's own, stopped, hung and restarted under a Memory.

Calls fail within the configured deadline with a retriable ``StoreUnavailableError``;
while the store is down they fail at once (the store circuit is open), not each after
the deadline; ``/health`` answers within a second; after a restart the pool's dead
connections are dropped without failing a call, and calls succeed again as soon as the
circuit lets one probe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from convmem import Memory, StoreUnavailableError
from convmem.server.service import ConversationService
from convmem.stores.postgres import PostgresStore
from tests.support.flows import exchange
from tests.support.services import PostgresServer

DEADLINE = 1.0
RESET = 0.5


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.remove()


@pytest.fixture
async def memory(postgres: PostgresServer) -> AsyncIterator[Memory]:
    async with Memory.from_url(
        postgres.url,
        store_timeout_seconds=DEADLINE,
        store_breaker_reset_seconds=RESET,
        pg_pool_timeout_seconds=DEADLINE,
        pg_connect_timeout_seconds=1,
        pg_pool_min_size=2,
    ) as opened:
        yield opened


async def cold_read(memory: Memory, thread_id: str) -> object:
    await memory.evict(thread_id)
    return await memory.get_thread(thread_id)


async def test_a_stopped_postgres_fails_calls_fast_then_serves_again_after_a_restart(
    postgres: PostgresServer, memory: Memory
) -> None:
    thread = await memory.create_thread(turns=exchange(0))
    postgres.stop()
    # Bounded: the call gives up within the deadline (asyncio.wait_for only guards the test).
    with pytest.raises(StoreUnavailableError, match="retry"):
        await asyncio.wait_for(cold_read(memory, thread.id), DEADLINE + 5)
    # The circuit is open: the next calls are refused at once, without touching the store.
    refused = memory.stats.store_refused
    for n in range(5):
        with pytest.raises(StoreUnavailableError, match="retry"):
            await memory.add_turns(thread.id, exchange(n + 1))
    assert memory.stats.store_refused == refused + 5
    assert memory.stats.store_circuit_state == "open"

    postgres.start()
    back = time.monotonic()
    store = memory.store
    assert isinstance(store, PostgresStore)
    while True:  # as a client would: retry what says to retry
        try:
            saved = await memory.add_turns(thread.id, exchange(9))
            break
        except StoreUnavailableError:
            await asyncio.sleep(0.05)
    served_again_after = time.monotonic() - back
    # "About a second": the circuit's probe comes after RESET, then a fresh connection.
    assert served_again_after < RESET + DEADLINE + 1.5, served_again_after
    assert saved.version == 4
    assert store.dropped_connections >= 1  # dead pooled connections, found without a call
    assert (await cold_read(memory, thread.id)) == saved
    assert memory.stats.store_circuit_state == "closed"


async def test_a_hung_postgres_costs_one_deadline_and_health_still_answers(
    postgres: PostgresServer, memory: Memory
) -> None:
    thread = await memory.create_thread(turns=exchange(0))
    service = ConversationService(memory, provider=None)  # type: ignore[arg-type]
    postgres.pause()
    try:
        with pytest.raises(StoreUnavailableError, match="did not answer within"):
            await asyncio.wait_for(memory.add_turns(thread.id, exchange(1)), DEADLINE + 5)
        assert memory.stats.store_timeouts == 1
        # /health: within a second, a status word, not a hang.
        report = await asyncio.wait_for(service.health(detailed=False), 1.0)
        assert not report.ok
        assert report.store in ("timeout", "unavailable")
        assert report.detail is None
        # Other calls do not queue behind the hung one: they are refused at once.
        with pytest.raises(StoreUnavailableError):
            await asyncio.wait_for(cold_read(memory, thread.id), 0.5)
    finally:
        postgres.resume()
    deadline = time.monotonic() + 10
    while True:  # the circuit probes again after its reset period; then calls succeed
        try:
            seen = await cold_read(memory, thread.id)
            break
        except StoreUnavailableError:
            assert time.monotonic() < deadline, "PostgreSQL never served again"
            await asyncio.sleep(0.05)
    assert seen is not None
    assert (await service.health()).ok
