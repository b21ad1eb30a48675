"""``GuardedL2``: the fault policy around an L2 tier, as an L2 tier itself.

Three jobs, kept out of the cache's read/write protocol:

- **Circuit breaking.** The first failure opens the circuit: until a probe succeeds,
  calls raise ``L2Skipped`` at once instead of waiting for a socket timeout.
- **Fence replay.** A change (``apply``) that did not reach Redis leaves other instances
  and L2 unaware of a committed version. The guard remembers ``(thread, version)`` and,
  before Redis is trusted again (the half-open probe, or ``replay()`` when the
  subscription comes back), fences L2 at that version and announces it (a ``Moved``).
- **Error accounting.** Every failure and every skipped call is counted in ``Stats``
  and logged once per outage by the breaker.

Every method raises ``L2Error`` (``L2Skipped`` when not tried) as the tier does, so the
cache handles one kind of failure; ``CorruptPayload`` passes through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Final, TypeVar

from convmem.breaker import CircuitBreaker, CircuitState
from convmem.cache.protocol import (
    CorruptPayload,
    L2Error,
    L2Skipped,
    WriteOutcome,
)
from convmem.changes import Moved, announced
from convmem.clocks import utc_now

if TYPE_CHECKING:
    from convmem.cache.protocol import Claims, InvalidationBus, L2Tier
    from convmem.changes import Change, CopyState
    from convmem.models import Thread
    from convmem.stats import Stats

log = logging.getLogger("convmem.cache")
T = TypeVar("T")

MAX_PENDING_FENCES: Final = 100_000


class GuardedL2:
    """Implements ``L2Tier`` over ``tier``; see the module docstring."""

    def __init__(
        self,
        tier: L2Tier,
        stats: Stats,
        *,
        source: str,
        reset_after: float = 5.0,
        timer: Callable[[], float] = time.monotonic,
        max_pending: int = MAX_PENDING_FENCES,
    ) -> None:
        self.tier = tier
        self.stats = stats
        self.source = source  # this instance's id: what its announcements carry
        self.breaker = CircuitBreaker(reset_after=reset_after, timer=timer)
        self.max_pending = max_pending
        self._pending: dict[str, int] = {}  # thread id -> the highest version Redis missed
        self.claims: Claims = _GuardedClaims(self)  # the tier's, behind this breaker

    @property
    def pending(self) -> int:
        """How many threads have a write that Redis has not been told of yet."""
        return len(self._pending)

    @property
    def circuit_state(self) -> str:
        """``closed``, ``open`` or ``half_open``."""
        return self.breaker.state.value

    @property
    def healthy(self) -> bool:
        """The circuit is closed and no write waits to be replayed."""
        return self.breaker.state is CircuitState.CLOSED and not self._pending

    # -- L2Tier: reads ------------------------------------------------------------

    async def aclose(self) -> None:
        await self.tier.aclose()

    async def ping(self) -> None:
        await self.guarded(self.tier.ping)

    async def get(self, thread_id: str) -> Thread | None:
        return await self.guarded(lambda: self.tier.get(thread_id))

    async def version(self, thread_id: str) -> int:
        return await self.guarded(lambda: self.tier.version(thread_id))

    async def install(self, thread: Thread, now: datetime) -> bool:
        return await self.guarded(lambda: self.tier.install(thread, now))

    async def drop(self, thread_id: str) -> None:
        await self.guarded(lambda: self.tier.drop(thread_id))

    # -- L2Tier: writes, remembered when they do not reach Redis --------------------

    async def apply(
        self,
        change: Change,
        now: datetime,
        *,
        after: CopyState | None = None,
    ) -> WriteOutcome:
        """``L2Tier.apply``, announced as this instance's (``source``); a change that
        misses Redis and had to be announced is remembered and replayed."""
        told = announced(change)
        outcome = await self.guarded(
            lambda: self.tier.apply(change, now, source=self.source, after=after),
            missed=(change.thread_id, change.version) if told else None,
        )
        if told:
            self.stats.invalidations_published += 1
        return outcome

    @property
    def bus(self) -> InvalidationBus:
        # The subscription has its own lifecycle (the listener reconnects it), so it
        # bypasses the breaker; the listener reports a loss to the cache.
        return self.tier.bus

    # -- the policy -----------------------------------------------------------------

    async def replay(self) -> bool:
        """Fence and announce every write Redis missed; True once none is left.

        Runs as the half-open probe too: a failure opens the circuit again.
        """
        try:
            await self.tier.ping()
            while self._pending:
                thread_id, version = next(iter(self._pending.items()))
                # (a Moved keeps no copy, so the wall time is not used for its expiry)
                await self.tier.apply(Moved(thread_id, version), utc_now(), source=self.source)
                self.stats.invalidations_published += 1
                if self._pending.get(thread_id) == version:
                    del self._pending[thread_id]
        except L2Error as exc:
            self._failed(exc)
            return False
        self.breaker.record_success()
        return True

    async def guarded(
        self, call: Callable[[], Awaitable[T]], *, missed: tuple[str, int] | None = None
    ) -> T:
        """``call`` under the breaker: skipped (``L2Skipped``) while the circuit is open,
        counted when it fails; ``missed``, a write's ``(thread, version)``, is remembered
        for replay when it does not reach Redis."""
        if not self.breaker.allow():
            self.stats.l2_skipped += 1
            self._remember(missed)
            raise L2Skipped("the Redis circuit is open")
        if self.breaker.state is CircuitState.HALF_OPEN and not await self.replay():
            self._remember(missed)
            raise L2Skipped("the Redis probe failed")
        try:
            result = await call()
        except CorruptPayload:
            self.breaker.record_success()  # Redis answered; the value is bad
            raise
        except L2Error as exc:
            self._failed(exc)
            self._remember(missed)
            raise
        self.breaker.record_success()
        return result

    def _failed(self, exc: L2Error) -> None:
        self.stats.l2_errors += 1
        self.breaker.record_failure(exc)

    def _remember(self, missed: tuple[str, int] | None) -> None:
        if missed is None:
            return
        thread_id, version = missed
        if len(self._pending) >= self.max_pending and thread_id not in self._pending:
            self.stats.pending_fence_overflow += 1
            log.error("too many writes to replay to Redis; thread %s may be stale in L2", thread_id)
            return
        self._pending[thread_id] = max(version, self._pending.get(thread_id, 0))


class _GuardedClaims:
    """``Claims`` whose every call goes through a guard's breaker and error accounting."""

    def __init__(self, guard: GuardedL2) -> None:
        self._guard = guard

    async def take(self, name: str, thread_id: str, token: str, ttl_seconds: float) -> bool:
        claims = self._guard.tier.claims
        return await self._guard.guarded(lambda: claims.take(name, thread_id, token, ttl_seconds))

    async def release(self, name: str, thread_id: str, token: str) -> None:
        claims = self._guard.tier.claims
        await self._guard.guarded(lambda: claims.release(name, thread_id, token))
