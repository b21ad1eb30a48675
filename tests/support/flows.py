"""The seed's request flow and small helpers the Memory and cache tests share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from convmem import Memory, Turn


def exchange(n: int) -> list[Turn]:
    """The user and assistant turns of request ``n``, keyed so a retry is idempotent."""
    return [
        Turn(role="user", content=f"question {n}", key=f"req-{n}:user"),
        Turn(role="assistant", content=f"answer {n}", key=f"req-{n}:assistant"),
    ]


async def request(memory: Memory, thread_id: str, n: int) -> None:
    """The seed's request: resume three times, build the history, save both turns."""
    threads = [await memory.get_thread(thread_id) for _ in range(3)]
    thread = threads[-1]
    assert thread is not None
    memory.build_history(thread, ancestors=await memory.get_ancestors(thread))
    await memory.add_turns(thread_id, exchange(n))


async def until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Wait for something that happens asynchronously (a pub/sub message)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
