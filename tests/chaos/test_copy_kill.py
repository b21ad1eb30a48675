"""``convmem copy`` SIGKILLed again and again, SQLite into PostgreSQL: every kill leaves
only whole threads behind, and the run after the last finishes with every thread and
turn verified (``make chaos`` copies more threads and kills more often)."""

from __future__ import annotations

import random
import signal
import uuid
from pathlib import Path

from convmem.models import Turn
from convmem.stores.base import NewThread
from convmem.stores.postgres import PostgresStore
from convmem.stores.sqlite import SqliteStore
from tests.chaos.harness import Outcome, scaled
from tests.support.services import pg_url
from tests.test_store_copy import convmem_copy, every_thread


async def test_a_copy_killed_again_and_again_ends_whole_and_verified(
    clean_pg: str, tmp_path: Path
) -> None:
    threads = int(scaled(1500, 20000))
    kills = int(scaled(2, 6))
    source_url, target_url = f"sqlite:///{tmp_path}/source.db", pg_url(clean_pg)
    async with SqliteStore.from_url(source_url) as source:
        for i in range(threads):
            spec = NewThread(str(uuid.uuid4()), "chat", None, f"owner-{i % 11}", {"i": i})
            turns = [Turn(role="user", content=f"q{i}"), Turn(role="assistant", content=f"a{i}")]
            await source.create(spec, turns)
        expected = await every_thread(source)

    chooser = random.Random(7)
    runs = done = 0
    for kill in range(kills):
        # Each run finds what the last left and goes on; it is killed a while after it
        # says it is past that, wherever it is then.
        progress_line = min(threads - 100, (done // 100 + chooser.randint(1, 3)) * 100)
        running = convmem_copy("--from", source_url, "--to", target_url)
        runs += 1
        assert running.stderr is not None
        for line in running.stderr:
            if line.startswith(f"copy: {progress_line}/"):
                break
        running.send_signal(signal.SIGKILL)
        running.communicate()
        async with PostgresStore.from_url(target_url) as target:
            partial = await every_thread(target)
        assert all(expected[thread_id] == thread for thread_id, thread in partial.items()), (
            f"kill {kill + 1} left a thread half-copied"
        )
        assert done <= len(partial) < threads
        done = len(partial)

    finished = convmem_copy("--from", source_url, "--to", target_url)
    out, err = finished.communicate(timeout=1800)
    runs += 1
    assert finished.returncode == 0, err
    assert f"verified {threads} of {threads}" in " ".join(out.split())
    async with PostgresStore.from_url(target_url) as target:
        copied = await every_thread(target)
    lost = sum(len(t.turns) for i, t in expected.items() if copied.get(i) != t)
    Outcome(
        scenario="convmem copy SIGKILLed mid-copy, run again (SQLite → PostgreSQL)",
        load=f"{threads} threads of 2 turns",
        faults=f"{kills} SIGKILLs of the copy",
        calls=runs,
        failed_calls=kills,
        acknowledged_turns=2 * threads,
        lost_turns=lost,
        crashes=0,
    ).record()
    assert lost == 0
    assert copied == expected
