"""Peak memory per system: each served in a fresh process of its own, nothing else in it.

The probe process opens one system (its clients connected, its copies of the threads
written where it keeps its own), notes its resident memory, resets the kernel's
high-water mark (``/proc/self/clear_refs``, Linux), serves every thread once and then
the Zipf workload with 32 conversations at once. The new high-water mark is that
system's peak; what is resident afterwards is what its caches keep.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from convmem_bench.results import MemoryResult

_STATUS = Path("/proc/self/status")


@dataclass(frozen=True)
class Workload:
    threads: list[str]  # each served once first
    picks: list[str]  # then these, in order, by ``conversations`` workers at once
    conversations: int


def measure(name: str, dsn: str, redis_url: str, prefix: str, work: Workload) -> MemoryResult:
    """Serve ``work`` with the seed scenario's system ``name`` in a new process."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        raw = pool.apply(_probe_sync, (name, dsn, redis_url, prefix, work))
    return MemoryResult(**raw)


def _probe_sync(*args: Any) -> dict[str, Any]:
    return asdict(asyncio.run(_probe(*args)))


async def _probe(name: str, dsn: str, redis_url: str, prefix: str, work: Workload) -> MemoryResult:
    from convmem.stores.postgres import PostgresStore
    from convmem_bench.measure import keep_own_copies, serve_concurrently, serve_each
    from convmem_bench.rig import Endpoint
    from convmem_bench.systems import open_seed_scenario

    endpoint = Endpoint("postgres", dsn, None)
    async with (
        PostgresStore.from_url(dsn) as setup,
        open_seed_scenario(endpoint, redis_url, prefix, setup, (name,)) as (system,),
    ):
        flow = system.flow
        await keep_own_copies(flow, work.threads, 50)
        gc.collect()
        baseline = _status("VmRSS")
        _reset_peak()
        await serve_each(flow, work.threads, first=40_000)
        await serve_concurrently(flow, work.picks, work.conversations, first=50_000)
        peak = _status("VmHWM")
        gc.collect()
        after = _status("VmRSS")
    return MemoryResult(
        flow=name,
        threads=len(work.threads),
        requests=len(work.picks),
        baseline_mib=baseline,
        peak_mib=max(peak, baseline),
        after_mib=after,
    )


def _status(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MiB."""
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} is not in {_STATUS} (the memory probe needs Linux)")


def _reset_peak() -> None:
    # "5" resets the peak resident set size (Linux 4.0+): what follows is this workload's.
    Path("/proc/self/clear_refs").write_text("5")
