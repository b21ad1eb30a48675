"""Code that runs in child processes of the multi-process tests."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from convmem import Memory, Settings
from convmem.models import Turn
from convmem.stores import store_from_url
from convmem_bench.postgrest_standin import SERVICE_KEY

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.synchronize import Barrier

    from convmem.limits import ThreadLimits


def store_options(url: str) -> dict[str, str]:
    return {"service_key": SERVICE_KEY} if url.startswith("supabase") else {}


def append_concurrently(
    url: str, limits: ThreadLimits, thread_id: str, name: str, count: int, start: Barrier
) -> None:
    """Append ``count`` one-turn batches at once, after every process is ready."""

    async def main() -> None:
        # The Supabase stand-in's key is the test's: a store reads no environment itself.
        async with store_from_url(url, limits=limits, **store_options(url)) as store:
            start.wait(30)  # every process connected: now they race
            await asyncio.gather(
                *(
                    store.append(
                        thread_id,
                        [Turn(role="user", content=f"{name}-{i}", key=f"{name}-{i}")],
                        owner=None,
                    )
                    for i in range(count)
                )
            )

    asyncio.run(main())


def alternate(
    store_url: str,
    redis_url: str,
    prefix: str,
    thread_ids: list[str],
    side: int,
    continuations: int,
    pipe: Connection,
    start: Barrier,
) -> None:
    """One side of the alternating-continuations test; raises (exit code 1) on a violation.

    The sides take turns: each receives the other's last acknowledged write, waits
    for its invalidation to arrive, reads (several times, as servers do), checks it
    sees every acknowledged turn and that no version went backwards, then continues
    the thread and passes its own acknowledgement on.
    """

    async def main() -> None:
        settings = Settings.of(
            store_url=store_url, cache_url=redis_url, cache_prefix=prefix, max_turns=1000
        )
        async with Memory.from_settings(settings) as memory:
            assert memory.stats.subscribed, "no invalidation subscription after open"
            start.wait(30)  # both sides listen before either writes
            newest_seen: dict[str, int] = dict.fromkeys(thread_ids, 0)
            others_writes = 0
            for step in range(side, continuations, 2):
                if step > 0:
                    if not pipe.poll(60):  # the other side died: fail, do not hang
                        raise AssertionError(f"step {step}: the other side stopped")
                    thread_id, version, contents = pipe.recv()
                    others_writes += 1
                    deadline = time.monotonic() + 30
                    while memory.stats.invalidations_received < others_writes:
                        if time.monotonic() > deadline:
                            raise AssertionError(f"step {step}: the invalidation never came")
                        await asyncio.sleep(0.001)
                thread_id = _thread_of(step, thread_ids)
                for _ in range(3):
                    thread = await memory.get_thread(thread_id)
                    assert thread is not None, f"step {step}: thread vanished"
                    assert thread.version >= newest_seen[thread_id], (
                        f"step {step}: version went back from {newest_seen[thread_id]} "
                        f"to {thread.version}"
                    )
                    newest_seen[thread_id] = thread.version
                if step > 0:
                    other_id = _thread_of(step - 1, thread_ids)
                    other = await memory.get_thread(other_id)
                    assert other is not None
                    assert other.version >= version, f"step {step}: missed the other side's write"
                    assert [t.content for t in other.turns[: len(contents)]] == contents
                    newest_seen[other_id] = max(newest_seen[other_id], other.version)
                updated = await memory.add_turns(
                    thread_id,
                    [
                        Turn(role="user", content=f"{step}:user", key=f"{step}:user"),
                        Turn(role="assistant", content=f"{step}:assistant", key=f"{step}:a"),
                    ],
                )
                assert updated.version >= newest_seen[thread_id] + 2
                newest_seen[thread_id] = updated.version
                if step + 1 < continuations:
                    pipe.send((thread_id, updated.version, [t.content for t in updated.turns]))

    asyncio.run(main())


def _thread_of(step: int, thread_ids: list[str]) -> str:
    """Both sides continue every thread: steps 0 and 1 the first, 2 and 3 the next, ..."""
    return thread_ids[(step // 2) % len(thread_ids)]
