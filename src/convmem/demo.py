"""The seed's validation scenario, as ``convmem demo`` runs it.

One request: resume the thread (asked for three times, as the seed's separate
code paths did), build the history, call the model (an offline echo here), and
save the user and assistant turns in one ``add_turns``. The first request starts
the thread; the second runs in a fresh ``Memory`` (a new process: cold L1); the
rest reuse it (warm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from convmem.models import Thread, Turn

if TYPE_CHECKING:
    from collections.abc import Callable

    from convmem.memory import Memory

RESUMES_PER_REQUEST = 3


@dataclass(frozen=True, slots=True)
class DemoRequest:
    number: int
    kind: str  # new | cold | warm
    source: str  # where the first resume found the thread
    store_reads: int
    store_writes: int
    turns: int


def echo_model(prompt: str, history_turns: int) -> str:
    """A deterministic stand-in for a model, clearly offline."""
    return f"[offline echo] I was given {history_turns} earlier turns. You said: {prompt}"


async def _continue(memory: Memory, thread_id: str, number: int) -> tuple[Thread, str]:
    before = memory.stats
    thread = await memory.get_thread(thread_id)
    after = memory.stats
    if after.l1_hits > before.l1_hits:
        source = "L1 cache"
    elif after.l2_hits > before.l2_hits:
        source = "L2 cache (Redis)"
    else:
        source = "store"
    for _ in range(RESUMES_PER_REQUEST - 1):
        thread = await memory.get_thread(thread_id)
    if thread is None:
        raise RuntimeError("the demo thread vanished (expired or deleted by someone else)")
    memory.build_history(thread, ancestors=await memory.get_ancestors(thread))
    prompt = f"question {number}"
    reply = echo_model(prompt, len(thread.turns))
    saved = await memory.add_turns(
        thread_id,
        [
            Turn(role="user", content=prompt, key=f"demo-{number}:user"),
            Turn(
                role="assistant",
                content=reply,
                model_provider="echo",
                model_name="echo",
                key=f"demo-{number}:assistant",
            ),
        ],
    )
    return saved, source


async def run_demo(
    make_memory: Callable[[bool], Memory],
    continuations: int,
    *,
    with_l2: bool = False,
    on_request: Callable[[DemoRequest], None] = lambda row: None,
) -> list[DemoRequest]:
    """Run the scenario; ``make_memory(cached)`` builds a fresh Memory (a new process).

    The thread is started by a process without the Redis tier, so the first
    continuation finds no copy anywhere (cold). With ``with_l2``, the next request
    runs in yet another process: its L1 is cold but Redis has the thread.
    """
    rows: list[DemoRequest] = []

    async def request(memory: Memory, thread_id: str, number: int, kind: str) -> Thread:
        stats = memory.stats
        thread, source = await _continue(memory, thread_id, number)
        after = memory.stats
        row = DemoRequest(
            number,
            kind,
            source,
            after.store_reads - stats.store_reads,
            after.store_writes - stats.store_writes,
            len(thread.turns),
        )
        rows.append(row)
        on_request(row)
        return thread

    async with make_memory(False) as first:
        thread = await first.create_thread(
            tool_name="chat",
            turns=[
                Turn(role="user", content="question 1", key="demo-1:user"),
                Turn(
                    role="assistant",
                    content=echo_model("question 1", 0),
                    key="demo-1:assistant",
                    model_provider="echo",
                    model_name="echo",
                ),
            ],
        )
        row = DemoRequest(1, "new", "created", 0, first.stats.store_writes, len(thread.turns))
        rows.append(row)
        on_request(row)

    async def warm(memory: Memory, first: int) -> None:
        for number in range(first, first + continuations - 1):
            await request(memory, thread.id, number, "warm")

    async with make_memory(True) as memory:  # a new process: nothing cached anywhere
        await request(memory, thread.id, 2, "cold")
        if not with_l2:
            await warm(memory, 3)
    if with_l2:
        async with make_memory(True) as memory:  # another process: L1 cold, Redis warm
            await request(memory, thread.id, 3, "cold L1, warm L2")
            await warm(memory, 4)
    return rows
