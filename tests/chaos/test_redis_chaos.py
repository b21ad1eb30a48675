"""Two processes sharing PostgreSQL and a Redis of the test's own, under load, while that
Redis is restarted, killed and brought back empty, or hung. No call may fail, no turn be
lost, no process crash, and no read be staler than the lease allows."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from convmem import Memory, Turn
from convmem.stores.postgres import PostgresStore
from convmem_bench.redis_server import RedisServer
from tests.chaos.harness import FULL, Outcome, analyse, run_workers, scaled, two_workers
from tests.support.services import pg_url

LEASE = 1.0
THREADS = 8


def make_threads(store_url: str) -> list[str]:
    async def create() -> list[str]:
        async with Memory.from_url(store_url, max_turns=1_000_000) as memory:
            return [
                (await memory.create_thread(turns=[Turn(role="user", content=f"t{i}")])).id
                for i in range(THREADS)
            ]

    return asyncio.run(create())


def stored_keys(store_url: str, thread_ids: list[str]) -> set[str]:
    async def load() -> set[str]:
        async with PostgresStore.from_url(store_url) as store:
            keys: set[str] = set()
            for thread_id in thread_ids:
                thread = await store.load(thread_id, owner=None)
                assert thread is not None
                assert [t.seq for t in thread.turns] == list(range(1, thread.version + 1))
                keys |= {t.key for t in thread.turns if t.key is not None}
            return keys

    return asyncio.run(load())


def faults(redis: RedisServer, kind: str, seconds: float) -> Callable[[], None]:
    """The fault schedule: after a quiet start, the fault, then quiet again; repeated."""

    def inject() -> None:
        cycles = 4 if FULL else 1
        period = seconds / (cycles + 1)
        for _ in range(cycles):
            time.sleep(period * 0.5)
            if kind == "restart":
                redis.kill()
                redis.start()  # at once, and empty (no persistence)
            elif kind == "down":
                redis.kill()
                time.sleep(period * 0.3)  # down for a while: every instance stops hearing
                redis.start()  # back, empty
            else:
                redis.pause()
                time.sleep(period * 0.3)  # hung, sockets open
                redis.resume()
            time.sleep(period * 0.2)

    return inject


FAULTS = {
    "restart": "Redis restarted (killed, started at once, empty)",
    "down": "Redis killed, down a while, back empty",
    "hang": "Redis hung (SIGSTOP), then resumed",
}


@pytest.mark.parametrize("kind", list(FAULTS))
def test_two_processes_under_load_through_a_redis_fault(
    kind: str, clean_pg: str, tmp_path: Path
) -> None:
    store_url = pg_url(clean_pg)
    redis = RedisServer().start()
    try:
        threads = make_threads(store_url)
        seconds = scaled(5.0, 40.0)
        prefix = f"chaos-{uuid.uuid4().hex[:8]}:"
        plans = two_workers(
            tmp_path,
            store_url=store_url,
            cache_url=redis.url,
            prefix=prefix,
            thread_ids=threads,
            seconds=seconds,
            lease=LEASE,
        )
        results = run_workers(plans, faults(redis, kind, seconds))
    finally:
        redis.stop()
    outcome = analyse(
        Outcome(
            scenario=f"two instances, {kind}",
            load=f"2 processes × {seconds:g} s, {THREADS} threads, 30% appends",
            faults=FAULTS[kind] + (" ×4" if FULL else ""),
            lease_seconds=LEASE,
        ),
        results,
        stored_keys(store_url, threads),
    )
    outcome.record()
    assert outcome.crashes == 0
    assert outcome.lost_turns == 0
    assert outcome.failed_calls == 0, outcome.failures  # no call fails because Redis failed
    assert outcome.acknowledged_turns > 0
    assert outcome.reads > 0
    assert outcome.worst_stale_seconds <= LEASE, outcome
