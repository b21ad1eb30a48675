"""Load and measurement for the chaos suite.

Worker processes (each a real OS process with a Memory of its own, as two ``convmem``
instances are) append and read shared threads for a while and record, with the
machine-wide monotonic clock, every acknowledged write and every read. The analysis
then checks the guarantees DESIGN.md makes, from those records alone:

- no lost turn: every acknowledged key is in the store at the end;
- the staleness bound: a read that returned version v although version v+1 had been
  acknowledged ``w`` seconds before the read began is stale by ``w``; the worst ``w``
  must be within the lease;
- failed calls and crashes are counted, not hidden.

``CONVMEM_CHAOS=full`` (``make chaos``) runs each scenario longer and harder; each
scenario's row is appended to ``CONVMEM_CHAOS_RESULTS`` when set, for RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import multiprocessing
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convmem import Memory, Turn

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event

FULL = os.environ.get("CONVMEM_CHAOS") == "full"


def scaled(short: float, full: float) -> float:
    return full if FULL else short


@dataclass
class WorkerPlan:
    name: str
    store_url: str
    cache_url: str | None
    prefix: str
    thread_ids: list[str]
    seconds: float
    lease: float
    out: str
    seed: int
    settings: dict[str, Any] = field(default_factory=dict)


def two_workers(folder: Path, **common: Any) -> list[WorkerPlan]:
    """Two instances of one plan, each with its own name, seed and record file."""
    return [
        WorkerPlan(name=f"w{i}", out=str(folder / f"w{i}.json"), seed=i, **common) for i in range(2)
    ]


def run_worker(plan: WorkerPlan, ready: Event) -> None:
    """A process of its own: mixed appends and reads until the time is up."""
    record = asyncio.run(_work(plan, ready))
    Path(plan.out).write_text(json.dumps(record))


async def _work(plan: WorkerPlan, ready: Event) -> dict[str, Any]:
    rng = random.Random(plan.seed)
    acks: list[tuple[str, int, float, str]] = []
    reads: list[tuple[str, int, float]] = []
    failures: dict[str, int] = {}
    failed_at: list[float] = []
    calls = 0
    memory = Memory.from_url(
        plan.store_url,
        plan.cache_url,
        cache_prefix=plan.prefix,
        cache_lease_seconds=plan.lease,
        max_turns=1_000_000,
        **plan.settings,
    )
    await memory.open()
    ready.set()
    try:
        end = time.monotonic() + plan.seconds
        n = 0
        while time.monotonic() < end:
            thread_id = rng.choice(plan.thread_ids)
            calls += 1
            try:
                if rng.random() < 0.3:
                    key = f"{plan.name}-{n}"
                    n += 1
                    turn = Turn(role="user", content=f"{plan.name} {n}", key=key)
                    saved = await memory.add_turns(thread_id, [turn])
                    acks.append((thread_id, saved.version, time.monotonic(), key))
                else:
                    began = time.monotonic()
                    seen = await memory.get_thread(thread_id)
                    if seen is not None:
                        reads.append((thread_id, seen.version, began))
            except Exception as exc:  # counted: the scenario says which failures it allows
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                failed_at.append(time.monotonic())
                await asyncio.sleep(0.01)
            await asyncio.sleep(0)
    finally:
        await memory.aclose()
    return {
        "acks": acks,
        "reads": reads,
        "failures": failures,
        "failed_at": failed_at,
        "calls": calls,
    }


@dataclass
class Outcome:
    """What one scenario measured: the row of RELIABILITY.md."""

    scenario: str
    load: str
    faults: str
    calls: int = 0
    failed_calls: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    acknowledged_turns: int = 0
    lost_turns: int = 0
    reads: int = 0
    stale_reads: int = 0
    worst_stale_seconds: float = 0.0
    lease_seconds: float | None = None
    crashes: int = 0
    last_failure: float = 0.0  # monotonic time of the last failed call (0: none)
    recovery_seconds: float | None = None  # from the end of the fault to the last failure

    def record(self) -> None:
        record_row(asdict(self))


def record_row(row: dict[str, Any]) -> None:
    """Append a row for RELIABILITY.md to ``CONVMEM_CHAOS_RESULTS``, when it is set."""
    target = os.environ.get("CONVMEM_CHAOS_RESULTS")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")


def memory_mib(pid: int, field: str = "VmRSS") -> float:
    """A process' memory figure from /proc (``VmRSS`` now, ``VmHWM`` its peak), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")


def run_workers(plans: list[WorkerPlan], during: Callable[[], None]) -> list[dict[str, Any]]:
    """Start every worker, run ``during`` (the faults) once all are open, and collect
    their records. (Faults that began while a worker was still starting would test its
    start-up instead: a spawned process on a loaded machine takes seconds to open.)"""
    context = multiprocessing.get_context("spawn")
    ready = [context.Event() for _ in plans]
    processes = [
        context.Process(target=run_worker, args=(plan, opened))
        for plan, opened in zip(plans, ready, strict=True)
    ]
    for process in processes:
        process.start()
    try:
        for opened in ready:
            opened.wait(60)
        during()
    finally:
        for process in processes:
            process.join(max(p.seconds for p in plans) + 60)
            if process.is_alive():
                process.kill()
    results = []
    for plan, process in zip(plans, processes, strict=True):
        record = json.loads(Path(plan.out).read_text()) if Path(plan.out).exists() else None
        results.append({"exitcode": process.exitcode, "record": record})
    return results


def analyse(outcome: Outcome, results: list[dict[str, Any]], stored_keys: set[str]) -> Outcome:
    """Fill ``outcome`` from the workers' records and the keys found in the store at the end."""
    acks: list[tuple[str, int, float, str]] = []
    reads: list[tuple[str, int, float]] = []
    for result in results:
        record = result["record"]
        if result["exitcode"] != 0 or record is None:
            outcome.crashes += 1
            continue
        acks += [(str(t), int(v), float(at), str(k)) for t, v, at, k in record["acks"]]
        reads += [(str(t), int(v), float(at)) for t, v, at in record["reads"]]
        outcome.calls += record["calls"]
        outcome.last_failure = max([outcome.last_failure, *record["failed_at"]])
        for name, count in record["failures"].items():
            outcome.failures[name] = outcome.failures.get(name, 0) + count
    outcome.failed_calls = sum(outcome.failures.values())
    outcome.acknowledged_turns = len(acks)
    outcome.lost_turns = len({a[3] for a in acks} - stored_keys)
    outcome.reads = len(reads)
    # Per thread: versions acknowledged, in order, with the earliest time each was known.
    by_thread: dict[str, list[tuple[int, float]]] = {}
    for thread_id, version, at, _ in acks:
        by_thread.setdefault(thread_id, []).append((version, at))
    first_ack: dict[str, tuple[list[int], list[float]]] = {}
    for thread_id, entries in by_thread.items():
        entries.sort()
        versions = [v for v, _ in entries]
        # the time a version >= v was first acknowledged: a running minimum from the end
        times = [t for _, t in entries]
        for i in range(len(times) - 2, -1, -1):
            times[i] = min(times[i], times[i + 1])
        first_ack[thread_id] = (versions, times)
    for thread_id, seen, began in reads:
        if thread_id not in first_ack:
            continue
        versions, times = first_ack[thread_id]
        newer = bisect.bisect_right(versions, seen)
        if newer < len(versions) and times[newer] < began:
            outcome.stale_reads += 1
            outcome.worst_stale_seconds = max(outcome.worst_stale_seconds, began - times[newer])
    return outcome
