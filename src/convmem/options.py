"""``MemoryOptions``: how a ``Memory`` runs the parts it builds around its store and L2
tier (the fault policy of each, the staleness lease, the consistency). Each default is
written here once; ``Settings`` takes its defaults from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from convmem.errors import ConfigurationError


@dataclass(frozen=True)
class MemoryOptions:
    """Args:
    single_instance: no other instance writes, so L1 stays trusted while Redis is down.
    consistency: ``"strict"`` checks the L2 version on every L1 hit.
    redis_breaker_reset_seconds: how long L2 is skipped after a Redis failure before a
        probe.
    lease_seconds: the staleness bound under Redis faults: cached copies are served only
        while Redis answered a heartbeat within it (``Lease``); the L2 tier's heartbeat
        must be well inside it (``RedisCache`` built from settings pings every quarter).
    store_timeout_seconds: the deadline of every store call; one that misses it (or an
        unreachable store) raises ``StoreUnavailableError`` and opens the store breaker.
    store_breaker_reset_seconds: how long calls then fail at once before one probes.
    watch_unannounced: with Redis and other instances, read the store every quarter lease
        for the writes an instance cut off from Redis could not announce, so that the
        staleness bound holds under a partition too (one small query per quarter lease,
        not per request); off, such a writer's writes reach the others when it reconnects.
    """

    single_instance: bool = False
    consistency: Literal["default", "strict"] = "default"
    redis_breaker_reset_seconds: float = 5.0
    lease_seconds: float = 1.0
    store_timeout_seconds: float = 5.0
    store_breaker_reset_seconds: float = 1.0
    watch_unannounced: bool = True

    def __post_init__(self) -> None:
        if self.consistency not in ("default", "strict"):
            raise ConfigurationError(
                f"consistency must be 'default' or 'strict', got {self.consistency!r}"
            )
        for name in (
            "redis_breaker_reset_seconds",
            "lease_seconds",
            "store_timeout_seconds",
            "store_breaker_reset_seconds",
        ):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be above 0, got {getattr(self, name)!r}")


DEFAULTS = MemoryOptions()
