"""A circuit breaker, for the Redis tier and for the store.

It opens on the first failure, so while a service is down no call waits for its
timeout: ``allow()`` answers False at once. After ``reset_after`` seconds one
caller is let through as a half-open probe; its success closes the circuit, its
failure opens it again for another period. The timer (monotonic) is injectable.
"""

from __future__ import annotations

import enum
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convmem.clocks import Timer

log = logging.getLogger("convmem")


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        reset_after: float = 5.0,
        timer: Timer = time.monotonic,
        name: str = "redis",
        fallback: str = "serving from the store",
    ) -> None:
        self.reset_after = reset_after
        self.name = name
        self.fallback = fallback
        self._timer = timer
        self._state = CircuitState.CLOSED
        self._opened_at = 0.0
        self.opened = 0  # how many times it opened

    @property
    def state(self) -> CircuitState:
        return self._state

    def allow(self) -> bool:
        """May a call go through now? In half-open state only the single probe may."""
        if self._state is CircuitState.CLOSED:
            return True
        if self._state is CircuitState.OPEN and self._timer() - self._opened_at >= self.reset_after:
            self._state = CircuitState.HALF_OPEN
            log.info("%s circuit half-open: probing", self.name)
            return True
        return False

    def record_success(self) -> None:
        if self._state is not CircuitState.CLOSED:
            log.warning("%s circuit closed: it answers again", self.name)
        self._state = CircuitState.CLOSED

    def record_failure(self, error: BaseException) -> None:
        if self._state is not CircuitState.OPEN:
            self.opened += 1
            log.warning(
                "%s circuit open for %.1fs after %s: %s; %s",
                self.name,
                self.reset_after,
                type(error).__name__,
                error,
                self.fallback,
            )
        self._state = CircuitState.OPEN
        self._opened_at = self._timer()
