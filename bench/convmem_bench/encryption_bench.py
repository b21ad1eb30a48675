"""What encryption at rest costs a continued request: convmem with and without
``CONVMEM_ENCRYPTION_KEYS`` side by side, on PostgreSQL with Redis, 50-turn threads.

Warm: L1 holds the thread (the request seals the two new turns once, for the store and
Redis). Cold: every copy is evicted first (the request also opens the 50 stored turns
once, on their way into L1). The two systems' requests are interleaved one by one, so
drift in this noisy machine falls on both alike.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import psycopg

from convmem.encryption import new_key
from convmem_bench import measure
from convmem_bench.flows import ConvMemFlow, Forget
from convmem_bench.results import EncryptionResult
from convmem_bench.systems import System, open_memory, open_setup_store, round_trip_counter

if TYPE_CHECKING:
    from convmem_bench.measure import Plan
    from convmem_bench.rig import Rig

STATES: Final[tuple[tuple[str, Forget], ...]] = (("warm (L1)", "nothing"), ("cold", "all"))


async def measure_encryption(
    rig: Rig, redis_url: str, prefix: str, plan: Plan, log: Callable[[str], None]
) -> list[EncryptionResult]:
    endpoint = rig.endpoints["postgres"]
    results = []
    async with open_setup_store(rig, "postgres") as setup, contextlib.AsyncExitStack() as stack:
        plain = await open_memory(stack, endpoint, redis_url, f"{prefix}plain:")
        sealed = await open_memory(
            stack, endpoint, redis_url, f"{prefix}sealed:", encryption_keys=[new_key()]
        )
        for latency in plan.encryption_latencies_ms:
            rig.set_latency(latency)
            for label, forget in STATES:
                off, on = (
                    System(
                        ConvMemFlow(label, memory, forget=forget),
                        setup,
                        round_trip_counter(endpoint, memory.store),
                        sealing=memory.sealing,
                    )
                    for memory in (plain, sealed)
                )
                result = await _side_by_side(off, on, plan, label, latency)
                results.append(result)
                log(
                    f"{latency:>5.0f} ms  encryption {label:10} off {result.off_p50_ms:7.2f} ms"
                    f"  on {result.on_p50_ms:7.2f} ms  ({result.overhead:+.1%})"
                )
        rig.set_latency(0.0)
    _forget_sealed_data(rig)
    return results


def _forget_sealed_data(rig: Rig) -> None:
    """The sealed side's threads and its key's record go, so the benchmarks after this
    one run keyless on the same database (convmem refuses to serve sealed data without
    its key)."""
    with psycopg.connect(rig.direct_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM convmem_threads WHERE metadata ? 'cm1'")
        conn.execute("DELETE FROM convmem_sealing_keys")


async def _side_by_side(
    off: System, on: System, plan: Plan, label: str, latency: float
) -> EncryptionResult:
    """Requests of the two systems interleaved one by one (the first of each pair
    alternating), so that the machine's drift falls on both alike; fresh 50-turn threads
    every round, so that they stay near 50 turns."""
    times: dict[int, list[float]] = {id(off): [], id(on): []}
    trips: list[int] = []
    for _ in range(plan.encryption_rounds):
        threads = {}
        for system in (off, on):
            threads[id(system)] = await measure.new_threads(system, plan.threads, 50)
            for i in range(measure.WARM_UP_REQUESTS):
                thread_id = threads[id(system)][i % plan.threads]
                await system.flow.prepare(thread_id)
                await system.flow.request(thread_id, 10_000 + i)
            await measure.steady_cache(system.flow)
        for n in range(plan.requests):
            for system in (off, on) if n % 2 == 0 else (on, off):
                thread_id = threads[id(system)][n % plan.threads]
                await system.flow.prepare(thread_id)
                before = system.round_trips()
                start = time.perf_counter()
                await system.flow.request(thread_id, n)
                times[id(system)].append((time.perf_counter() - start) * 1000)
                if system is on:
                    trips.append(system.round_trips() - before)
    return EncryptionResult(
        state=label,
        latency_ms=latency,
        off_p50_ms=statistics.median(times[id(off)]),
        on_p50_ms=statistics.median(times[id(on)]),
        round_trips_on=statistics.mean(trips),
    )
