"""A circuit breaker for the Redis tier.

It opens on the first failure, so while Redis is down no call waits for a socket
timeout: ``allow()`` answers False at once. After ``reset_after`` seconds one
caller is let through as a half-open probe; its success closes the circuit, its
failure opens it again for another period. The clock is injectable.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

log = logging.getLogger("convmem.cache")


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self, *, reset_after: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.reset_after = reset_after
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._opened_at = 0.0
        self.opened = 0  # how many times it opened

    @property
    def state(self) -> CircuitState:
        return self._state

    def allow(self) -> bool:
        """May a call go to Redis now? In half-open state only the single probe may."""
        if self._state is CircuitState.CLOSED:
            return True
        if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= self.reset_after:
            self._state = CircuitState.HALF_OPEN
            log.info("redis circuit half-open: probing")
            return True
        return False

    def record_success(self) -> None:
        if self._state is not CircuitState.CLOSED:
            log.warning("redis circuit closed: the L2 tier is back")
        self._state = CircuitState.CLOSED

    def record_failure(self, error: BaseException) -> None:
        if self._state is not CircuitState.OPEN:
            self.opened += 1
            log.warning(
                "redis circuit open for %.1fs after %s: %s; serving from the store",
                self.reset_after,
                type(error).__name__,
                error,
            )
        self._state = CircuitState.OPEN
        self._opened_at = self._clock()
