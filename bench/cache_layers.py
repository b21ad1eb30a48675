"""What a get_thread costs from each layer, and an add_turns, measured side by side.

Run: .venv/bin/python bench/cache_layers.py [--store URL] [--cache URL] [--turns N]
Prints medians (and p90) over many repetitions; no assertion, nothing timed in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

from convmem import Memory, Settings, Turn


async def measure(label: str, call: Callable[[], Awaitable[object]], n: int) -> tuple[str, float, float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        await call()
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return label, statistics.median(samples), samples[int(len(samples) * 0.9)]


async def main(store: str, cache: str, turns: int, n: int) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    settings = Settings.load(store_url=store, cache_url=cache, cache_prefix=prefix, max_turns=10_000)
    async with Memory(settings=settings) as memory, Memory(settings=settings) as other:
        body = "x" * 400
        thread = await memory.create_thread(
            turns=[Turn(role="user" if i % 2 else "assistant", content=f"{i} {body}") for i in range(turns)]
        )
        l2 = memory._cache.l2
        assert l2 is not None
        rows = [await measure("get_thread, L1 hit", lambda: memory.get_thread(thread.id), n)]

        async def l2_hit() -> None:
            other._cache.l1.clear()
            await other.get_thread(thread.id)

        rows.append(await measure("get_thread, L2 hit (Redis)", l2_hit, n))

        async def store_read() -> None:
            other._cache.l1.clear()
            await l2.client.delete(l2.key(thread.id))
            await other.get_thread(thread.id)

        rows.append(await measure("get_thread, store read (+ L2 install)", store_read, n))
        await memory.get_thread(thread.id)
        rows.append(
            await measure(
                "add_turns (1 store write, L2 in place, publish)",
                lambda: memory.add_turns(thread.id, [Turn(role="user", content=body)]),
                n,
            )
        )
        await memory.delete_thread(thread.id)
    print(f"store {store} · cache {cache} · thread of {turns} turns of ~400 B · {n} runs each")
    print(f"{'operation':48} {'median µs':>10} {'p90 µs':>10}")
    for label, median, p90 in rows:
        print(f"{label:48} {median:10.1f} {p90:10.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--cache", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.store, args.cache, args.turns, args.runs))
