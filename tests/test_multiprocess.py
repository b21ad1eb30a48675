"""Concurrent appends to one thread from two processes: every turn kept, seq 1..N."""

from __future__ import annotations

import multiprocessing
import uuid

from convmem.models import Turn
from convmem.stores.base import NewThread
from tests.conftest import LIMITS, Backend
from tests.support.workers import append_concurrently

PER_PROCESS = LIMITS.max_turns // 2


def race(backend: Backend, thread_id: str) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    processes = [
        context.Process(
            target=append_concurrently,
            args=(backend.url, LIMITS, thread_id, name, PER_PROCESS, start),
        )
        for name in ("left", "right")
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [p.exitcode for p in processes] == [0, 0]


async def test_two_processes_appending_at_once_lose_and_duplicate_nothing(
    backend: Backend,
) -> None:
    created = (
        await backend.store.create(NewThread(str(uuid.uuid4()), "chat", None, None, {}))
    ).thread
    race(backend, created.id)
    loaded = await backend.store.load(created.id, owner=None)
    assert loaded is not None
    assert [t.seq for t in loaded.turns] == list(range(1, 2 * PER_PROCESS + 1))
    expected = {f"{side}-{i}" for side in ("left", "right") for i in range(PER_PROCESS)}
    assert {t.content for t in loaded.turns} == expected
    assert {t.key for t in loaded.turns} == expected

    race(backend, created.id)  # both retry everything: nothing is inserted twice
    again = await backend.store.load(created.id, owner=None)
    assert again is not None
    assert again.turns == loaded.turns  # the retries only slid the expiry forward
    retry = Turn(role="user", content="left-0", key="left-0")
    assert (await backend.store.append(created.id, [retry], owner=None)).inserted == 0
