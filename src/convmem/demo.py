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
    source = "L1 cache" if memory.stats.l1_hits > before.l1_hits else "store"
    for _ in range(RESUMES_PER_REQUEST - 1):
        thread = await memory.get_thread(thread_id)
    if thread is None:
        raise RuntimeError("the demo thread vanished (expired or deleted by someone else)")
    memory.build_history(thread, max_tokens=8000, ancestors=await memory.get_ancestors(thread))
    prompt = f"question {number}"
    reply = echo_model(prompt, thread.version)
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
    make_memory: Callable[[], Memory],
    continuations: int,
    on_request: Callable[[DemoRequest], None] = lambda row: None,
) -> list[DemoRequest]:
    """Run the scenario; ``make_memory`` builds a fresh Memory (a new process)."""
    rows: list[DemoRequest] = []

    def record(memory: Memory, before_reads: int, before_writes: int, **fields: object) -> None:
        stats = memory.stats
        row = DemoRequest(
            store_reads=stats.store_reads - before_reads,
            store_writes=stats.store_writes - before_writes,
            **fields,  # type: ignore[arg-type]
        )
        rows.append(row)
        on_request(row)

    async with make_memory() as first:
        stats = first.stats
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
        record(
            first,
            stats.store_reads,
            stats.store_writes,
            number=1,
            kind="new",
            source="created",
            turns=thread.version,
        )

    async with make_memory() as memory:  # a new process: nothing cached
        for number in range(2, continuations + 2):
            stats = memory.stats
            thread, source = await _continue(memory, thread.id, number)
            record(
                memory,
                stats.store_reads,
                stats.store_writes,
                number=number,
                kind="cold" if number == 2 else "warm",
                source=source,
                turns=thread.version,
            )
    return rows
