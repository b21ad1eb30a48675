"""Counters of what ``Memory`` did: cache hits per layer, store round trips, Redis health."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)
class Stats:
    """Counters since the ``Memory`` was created; ``memory.stats`` returns a copy."""

    l1_hits: int = 0
    l1_misses: int = 0
    l2_hits: int = 0
    l2_misses: int = 0
    misses: int = 0  # reads that reached the store
    store_reads: int = 0  # load / load_since / list round trips
    store_writes: int = 0  # create / append / delete / purge round trips
    store_errors: int = 0
    single_flight_joins: int = 0  # reads that shared another task's in-flight load
    stale_rejections: int = 0  # cached copies refused because a newer version is known
    delta_refreshes: int = 0  # stale copies brought up to date with load_since
    l2_errors: int = 0  # Redis calls that failed (each opens the circuit)
    l2_skipped: int = 0  # Redis calls not made because the circuit was open
    l2_corrupt: int = 0  # L2 values that failed to decode or decrypt (dropped)
    decryption_errors: int = 0  # stored threads that could not be decrypted (see DecryptionError)
    invalidations_received: int = 0
    invalidations_published: int = 0
    pending_fence_overflow: int = 0
    pending_fences: int = 0  # threads whose newest write Redis has not been told of yet
    lease_lapses: int = 0  # silences from Redis longer than the lease (L1 dropped after each)
    redis_restarts: int = 0  # resubscriptions that found a new Redis run id (fences lost)
    unannounced_recorded: int = 0  # writes Redis missed, recorded in the store for the others
    unannounced_fenced: int = 0  # others' unannounced writes this instance fenced and announced
    watch_reads: int = 0  # reads of the unannounced writes done (one store round trip each)
    watch_failures: int = 0  # reads of the unannounced writes that failed (tried again)
    circuit_state: str = "closed"  # the Redis circuit
    store_circuit_state: str = "closed"
    store_timeouts: int = 0  # store calls that missed their deadline
    store_refused: int = 0  # store calls not made: the store circuit was open
    subscribed: bool = False
    cache_trusted: bool = True  # cached copies may be served now (see cache/lease.py)
    compactions: int = 0  # summaries saved
    compactions_stale: int = 0  # summaries refused: another compaction or a pop came first
    compaction_failures: int = 0  # compactions that failed (the model, the store): retried later
    l1_items: int = 0
    l1_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
