"""What encryption at rest costs a continued request: convmem with and without
``CONVMEM_ENCRYPTION_KEYS`` side by side, on PostgreSQL with Redis, 50-turn threads.

Warm: L1 holds the thread (the request seals the two new turns once, for the store and
Redis). Cold: every copy is evicted first (the request also opens the 50 stored turns
once, on their way into L1). The two systems alternate round by round so drift in this
noisy machine falls on both; each figure is the median of the rounds' medians.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

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
    key = new_key()
    results = []
    async with open_setup_store(rig, "postgres") as setup, contextlib.AsyncExitStack() as stack:
        plain = await open_memory(stack, endpoint, redis_url, f"{prefix}plain:")
        sealed = await open_memory(
            stack, endpoint, redis_url, f"{prefix}sealed:", encryption_keys=[key]
        )
        for latency in plan.encryption_latencies_ms:
            rig.set_latency(latency)
            for label, forget in STATES:
                off = System(
                    ConvMemFlow(label, plain, forget=forget),
                    setup,
                    round_trip_counter(endpoint, plain.store),
                )
                on = System(
                    ConvMemFlow(label, sealed, forget=forget),
                    setup,
                    round_trip_counter(endpoint, sealed.store),
                    sealing=sealed.sealing,
                )
                p50_off, p50_on, trips_on = [], [], []
                for _ in range(plan.encryption_rounds):
                    p50_off.append((await measure.request_latency(off, plan, latency)).p50_ms)
                    run_on = await measure.request_latency(on, plan, latency)
                    p50_on.append(run_on.p50_ms)
                    trips_on.append(run_on.round_trips)
                result = EncryptionResult(
                    state=label,
                    latency_ms=latency,
                    off_p50_ms=statistics.median(p50_off),
                    on_p50_ms=statistics.median(p50_on),
                    round_trips_on=statistics.median(trips_on),
                )
                results.append(result)
                log(
                    f"{latency:>5.0f} ms  encryption {label:10} off {result.off_p50_ms:7.2f} ms"
                    f"  on {result.on_p50_ms:7.2f} ms  (+{result.overhead:.1%})"
                )
        rig.set_latency(0.0)
    return results
