"""``StoreGuard``: every store call bounded in time, and a dead store failing fast.

A hung database (a stopped process, a lost network path) keeps its sockets open and
answers nothing: without a bound, every call and every health check would wait for
it. Each store call runs under a deadline; a call that misses it, or finds the store
unreachable, opens a circuit breaker, and while it is open calls fail at once with
``StoreUnavailableError`` (which says to retry) instead of each waiting out the
deadline. After ``reset_after`` seconds one call probes the store again.

Refusals (a missing thread, a full one, a bad key) are answers: they leave the
circuit closed. Nothing here is specific to a store: ``Memory`` and the tiered cache
run every store call through one guard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from convmem.breaker import CircuitBreaker, CircuitState
from convmem.errors import StoreUnavailableError

T = TypeVar("T")


class StoreGuard:
    def __init__(
        self,
        *,
        timeout: float = 5.0,
        reset_after: float = 1.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ValueError("a store call deadline must be longer than 0 seconds")
        self.timeout = timeout
        self.breaker = CircuitBreaker(
            reset_after=reset_after,
            timer=timer,
            name="store",
            fallback="store calls fail at once until a probe succeeds",
        )
        self.timeouts = 0  # calls that missed the deadline
        self.refused = 0  # calls not made because the circuit was open

    @property
    def state(self) -> CircuitState:
        return self.breaker.state

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run one store call under the deadline and the breaker."""
        if not self.breaker.allow():
            self.refused += 1
            raise StoreUnavailableError(
                "the store failed moments ago and is not tried again yet; retry in "
                f"{self.breaker.reset_after:g} s"
            )
        # The call runs as a task of its own so that a missed deadline returns at once:
        # cancelling a driver mid-query may itself wait on the hung server (psycopg tries
        # to cancel the query there for up to 10 s). The abandoned task finishes on its
        # own, and its connection is discarded.
        task = asyncio.ensure_future(call())
        try:
            done, _ = await asyncio.wait((task,), timeout=self.timeout)
        except asyncio.CancelledError:
            _abandon(task)
            if self.breaker.state is CircuitState.HALF_OPEN:  # the probe learnt nothing
                self.breaker.record_failure(StoreUnavailableError("the probe was cancelled"))
            raise
        if not done:
            _abandon(task)
            self.timeouts += 1
            error = StoreUnavailableError(
                f"the store did not answer within {self.timeout:g} s; retry later"
            )
            self.breaker.record_failure(error)
            raise error
        try:
            result = task.result()
        except StoreUnavailableError as exc:
            self.breaker.record_failure(exc)
            raise
        except Exception:
            self.breaker.record_success()  # a refusal or a bad request: the store answered
            raise
        self.breaker.record_success()
        return result


def _abandon(task: asyncio.Future[Any]) -> None:
    """Cancel a call we no longer wait for; its outcome is read so none goes unreported."""
    task.cancel()
    task.add_done_callback(_consume)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
