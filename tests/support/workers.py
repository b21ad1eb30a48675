"""Code that runs in child processes of the multi-process tests."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

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
    continuations: int,
    side: int,
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
                    thread_id, version, contents = _received(pipe, step)
                    others_writes += 1
                    await _heard(memory, others_writes, step)
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


def _received(pipe: Connection, step: int) -> Any:
    """The other side's message; if it died, fail instead of hanging."""
    if not pipe.poll(60):
        raise AssertionError(f"step {step}: the other side stopped")
    return pipe.recv()


async def _heard(memory: Memory, invalidations: int, step: int) -> None:
    """Wait until ``memory`` has heard of ``invalidations`` writes of the other side."""
    deadline = time.monotonic() + 30
    while memory.stats.invalidations_received < invalidations:
        if time.monotonic() > deadline:
            raise AssertionError(f"step {step}: the invalidation never came")
        await asyncio.sleep(0.001)


def _thread_of(step: int, thread_ids: list[str]) -> str:
    """Both sides continue every thread: steps 0 and 1 the first, 2 and 3 the next, ..."""
    return thread_ids[(step // 2) % len(thread_ids)]


def alternate_rewrites(
    store_url: str,
    redis_url: str,
    prefix: str,
    thread_id: str,
    steps: int,
    side: int,
    pipe: Connection,
    start: Barrier,
) -> None:
    """One side of the two-process rewrite test; raises (exit code 1) on a violation.

    The sides take turns on one thread with every kind of write: appends, pops, rewinds,
    clears and forks. Each receives the other's acknowledged state (version and turn
    texts), waits until the invalidation of that write arrived, then reads three times
    (as servers do) and must see exactly that state: no removed turn, no missing one,
    no version going backwards. A fork must read back with its parent cut at the fork
    point.
    """

    async def main() -> None:
        settings = Settings.of(
            store_url=store_url, cache_url=redis_url, cache_prefix=prefix, max_turns=1000
        )
        async with Memory.from_settings(settings) as memory:
            assert memory.stats.subscribed, "no invalidation subscription after open"
            start.wait(30)
            newest_seen = 0
            announced = 0  # the other side's writes that published an invalidation
            for step in range(side, steps, 2):
                if step > 0:
                    version, texts, published, fork = _received(pipe, step)
                    announced += published
                    await _heard(memory, announced, step)
                    for _ in range(3):
                        thread = await memory.get_thread(thread_id)
                        assert thread is not None, f"step {step}: thread vanished"
                        assert thread.version >= newest_seen, f"step {step}: version went back"
                        newest_seen = thread.version
                        assert (thread.version, [t.content for t in thread.turns]) == (
                            version,
                            texts,
                        ), f"step {step}: read {thread.version}, acknowledged {version}"
                    if fork is not None:
                        fork_id, cut, parent_texts = fork
                        forked = await memory.get_thread(fork_id)
                        assert forked is not None, f"step {step}: the fork is missing"
                        assert forked.parent_seq == cut
                        (parent,) = await memory.get_ancestors(forked)
                        assert [t.content for t in parent.turns] == parent_texts
                published, fork = await _rewrite(memory, thread_id, step)
                thread = await memory.get_thread(thread_id)
                assert thread is not None
                assert thread.version >= newest_seen
                newest_seen = thread.version
                if step + 1 < steps:
                    texts = [t.content for t in thread.turns]
                    pipe.send((thread.version, texts, published, fork))

    asyncio.run(main())


async def _rewrite(
    memory: Memory, thread_id: str, step: int
) -> tuple[int, tuple[str, int, list[str]] | None]:
    """Step ``step``'s write; returns whether it published an invalidation (1 or 0) and,
    for a fork, what the other side must find."""
    kind = step % 6
    if kind in (0, 2, 4):
        turns = [
            Turn(role="user", content=f"{step}:user", key=f"{step}:user"),
            Turn(role="assistant", content=f"{step}:assistant", key=f"{step}:a"),
        ]
        await memory.add_turns(thread_id, turns)
        return 1, None
    if kind == 1:
        return int(await memory.pop_turn(thread_id) is not None), None
    if kind == 3 and step % 4 == 3:
        cleared = await memory.clear_thread(thread_id)
        return int(cleared.turns == ()), None
    if kind == 3:
        _, removed = await memory.rewind_thread(thread_id, 2)
        return int(bool(removed)), None
    parent = await memory.get_thread(thread_id)
    assert parent is not None
    cut = parent.turns[len(parent.turns) // 2].seq if parent.turns else 0
    fork = await memory.fork_thread(thread_id, at_seq=cut)
    return 0, (fork.id, cut, [t.content for t in parent.turns if t.seq <= cut])


def share_agents_session(
    store_url: str,
    redis_url: str,
    prefix: str,
    session_id: str,
    steps: int,
    side: int,
    pipe: Connection,
    start: Barrier,
) -> None:
    """One side of the shared Agents SDK session test: the sides take turns adding one
    item; each must see the other's item, through Redis, once its invalidation came."""
    from convmem.integrations.openai_agents import ConvmemSession

    async def main() -> None:
        settings = Settings.of(
            store_url=store_url, cache_url=redis_url, cache_prefix=prefix, max_turns=1000
        )
        async with Memory.from_settings(settings) as memory:
            session = ConvmemSession(session_id, memory)
            start.wait(30)
            heard = 0
            for step in range(side, steps, 2):
                if step > 0:
                    _received(pipe, step)
                    heard += 1
                    # Side 0's first items created the thread: a create announces nothing.
                    await _heard(memory, heard - (side == 1), step)
                    items: list[Any] = await session.get_items()
                    expected = [f"step {s}" for s in range(step)]
                    assert [i["content"] for i in items] == expected, f"step {step}: {items}"
                await session.add_items([{"role": "user", "content": f"step {step}"}])
                if step + 1 < steps:
                    pipe.send(step)

    asyncio.run(main())
