"""Counters of what ``Memory`` did: cache hits per layer and store round trips."""

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
    store_reads: int = 0  # load / load_since round trips
    store_writes: int = 0  # create / append / delete / purge round trips
    store_errors: int = 0
    single_flight_joins: int = 0  # reads that shared another task's in-flight load
    l1_items: int = 0
    l1_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
