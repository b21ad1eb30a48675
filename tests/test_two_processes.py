"""Two Memory instances in two processes sharing Redis and Postgres stay coherent."""

from __future__ import annotations

import pytest

from convmem import Memory, Turn
from tests.support.services import pg_url
from tests.support.sides import run_two_sides
from tests.support.workers import alternate, alternate_rewrites

CONTINUATIONS = 200


@pytest.fixture
def redis_url(redis_or_cluster_url: str) -> str:
    """On a single Redis and on a 3-primary, 3-replica cluster."""
    return redis_or_cluster_url


async def test_alternating_continuations_from_two_processes(
    clean_pg: str, redis_url: str, redis_prefix: str
) -> None:
    store_url = pg_url(clean_pg)
    async with Memory.from_url(store_url, max_turns=1000) as memory:
        threads = [
            await memory.create_thread(turns=[Turn(role="user", content=f"thread {i}")])
            for i in range(2)
        ]
    ids = [t.id for t in threads]

    exits = await run_two_sides(alternate, store_url, redis_url, redis_prefix, ids, CONTINUATIONS)
    assert exits == [0, 0]

    async with Memory.from_url(store_url, max_turns=1000) as memory:
        for i, thread_id in enumerate(ids):
            final = await memory.get_thread(thread_id)
            assert final is not None
            steps = [s for s in range(CONTINUATIONS) if (s // 2) % 2 == i]
            expected = [f"thread {i}"]
            for step in steps:
                expected += [f"{step}:user", f"{step}:assistant"]
            assert [t.content for t in final.turns] == expected


REWRITE_STEPS = 60


async def test_pops_clears_and_forks_from_two_processes_are_seen_exactly(
    clean_pg: str, redis_url: str, redis_prefix: str
) -> None:
    """Each side acknowledges a write (an append, a pop, a rewind, a clear or a fork) and
    the other, once its invalidation arrived, must read exactly that state."""
    store_url = pg_url(clean_pg)
    async with Memory.from_url(store_url, max_turns=1000) as memory:
        thread = await memory.create_thread(turns=[Turn(role="user", content="start")])

    exits = await run_two_sides(
        alternate_rewrites, store_url, redis_url, redis_prefix, thread.id, REWRITE_STEPS
    )
    assert exits == [0, 0]

    async with Memory.from_url(store_url, max_turns=1000) as memory:
        final = await memory.get_thread(thread.id)
        assert final is not None
        forks = [t for t in (await memory.list_threads(limit=100)).threads if t.parent_id]
    assert final.version > REWRITE_STEPS  # every write raised it
    assert len(forks) == REWRITE_STEPS // 6
