"""GuardedL2, the Redis fault policy, on a fake tier and a fake clock: no Redis, no sleep."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from convmem.breaker import CircuitState
from convmem.cache.guard import GuardedL2
from convmem.cache.protocol import (
    CorruptPayload,
    InvalidationBus,
    L2Error,
    L2Skipped,
    WriteOutcome,
)
from convmem.changes import Appended, Change, CopyState, Moved, announced
from convmem.models import Thread
from convmem.stats import Stats
from tests.support.clock import FakeTimer

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeTier:
    """An L2 tier that fails while ``down`` and records what reached it."""

    def __init__(self) -> None:
        self.down = False
        self.corrupt = False
        self.calls = 0
        self.fences: list[tuple[str, int]] = []
        self.published: list[tuple[str, int, str]] = []

    def _call(self) -> None:
        self.calls += 1
        if self.down:
            raise L2Error("connection refused")

    async def aclose(self) -> None:
        pass

    async def ping(self) -> None:
        self._call()

    async def get(self, thread_id: str) -> Thread | None:
        self._call()
        if self.corrupt:
            raise CorruptPayload("garbled")
        return None

    async def version(self, thread_id: str) -> int:
        self._call()
        return 0

    async def install(self, thread: Thread, now: datetime) -> bool:
        self._call()
        return True

    async def apply(
        self,
        change: Change,
        now: datetime,
        *,
        source: str,
        after: CopyState | None = None,
    ) -> WriteOutcome:
        self._call()
        if isinstance(change, Moved):
            self.fences.append((change.thread_id, change.version))
        if announced(change):
            self.published.append((change.thread_id, change.version, source))
        return WriteOutcome.EXTENDED

    async def drop(self, thread_id: str) -> None:
        self._call()

    @property
    def claims(self) -> FakeTier:
        return self

    async def take(self, name: str, thread_id: str, token: str, ttl_seconds: float) -> bool:
        self._call()
        return True

    async def release(self, name: str, thread_id: str, token: str) -> None:
        self._call()

    @property
    def bus(self) -> InvalidationBus:
        raise NotImplementedError


def guarded(tier: FakeTier, timer: FakeTimer, **options: int) -> tuple[GuardedL2, Stats]:
    stats = Stats()
    return GuardedL2(tier, stats, source="me", reset_after=5.0, timer=timer, **options), stats


async def append(guard: GuardedL2, thread_id: str, version: int) -> WriteOutcome:
    return await guard.apply(Appended(thread_id, version, 2, (), NOW, NOW), NOW)


async def test_the_first_failure_opens_the_circuit_and_later_calls_do_not_wait() -> None:
    tier, timer = FakeTier(), FakeTimer()
    guard, stats = guarded(tier, timer)
    tier.down = True
    with pytest.raises(L2Error):
        await guard.get("t")
    assert guard.breaker.state is CircuitState.OPEN
    calls = tier.calls
    with pytest.raises(L2Skipped):
        await guard.get("t")
    assert tier.calls == calls  # skipped: Redis was not asked
    assert (stats.l2_errors, stats.l2_skipped) == (1, 1)


async def test_a_missed_write_is_fenced_and_announced_before_redis_is_trusted_again() -> None:
    tier, timer = FakeTier(), FakeTimer()
    guard, stats = guarded(tier, timer)
    tier.down = True
    with pytest.raises(L2Error):
        await append(guard, "a", 4)  # failed: remembered
    with pytest.raises(L2Skipped):
        await guard.apply(Moved("b", 6), NOW)  # skipped: remembered too
    assert guard.pending == 2
    tier.down = False
    timer.now += 4.9
    with pytest.raises(L2Skipped):
        await guard.get("a")  # still within the reset period
    timer.now += 0.2
    assert await guard.get("a") is None  # the half-open probe replays first, then serves
    assert tier.fences == [("a", 4), ("b", 6)]
    assert tier.published == [("a", 4, "me"), ("b", 6, "me")]
    assert guard.pending == 0
    assert guard.healthy
    assert stats.invalidations_published == 2


async def test_a_failed_replay_keeps_the_writes_and_opens_the_circuit_again() -> None:
    tier, timer = FakeTier(), FakeTimer()
    guard, _ = guarded(tier, timer)
    tier.down = True
    with pytest.raises(L2Error):
        await guard.apply(Moved("a", 3), NOW)
    assert not await guard.replay()
    assert guard.pending == 1
    assert guard.breaker.state is CircuitState.OPEN
    tier.down = False
    assert await guard.replay()
    assert guard.pending == 0
    assert guard.healthy  # the circuit closed again


async def test_a_newer_missed_write_replaces_an_older_one_of_the_same_thread() -> None:
    tier, timer = FakeTier(), FakeTimer()
    guard, _ = guarded(tier, timer)
    tier.down = True
    for version in (4, 8, 6):
        with pytest.raises(L2Error):
            await append(guard, "a", version)
        guard.breaker.record_success()  # as if another call had closed it meanwhile
    tier.down = False
    assert await guard.replay()
    assert tier.fences == [("a", 8)]


async def test_too_many_missed_writes_are_counted_not_kept() -> None:
    tier, timer = FakeTier(), FakeTimer()
    guard, stats = guarded(tier, timer, max_pending=1)
    tier.down = True
    with pytest.raises(L2Error):
        await guard.apply(Moved("a", 1), NOW)
    with pytest.raises(L2Skipped):
        await guard.apply(Moved("b", 1), NOW)
    assert guard.pending == 1
    assert stats.pending_fence_overflow == 1


async def test_a_corrupt_value_passes_through_and_does_not_open_the_circuit() -> None:
    tier, timer = FakeTier(), FakeTimer()
    guard, stats = guarded(tier, timer)
    tier.corrupt = True
    with pytest.raises(CorruptPayload):
        await guard.get("a")
    assert guard.breaker.state is CircuitState.CLOSED
    assert stats.l2_errors == 0
