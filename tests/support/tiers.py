"""An L2 tier passed to ``Memory(store, cache=...)`` that lets a test watch and hold appends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from convmem.cache.protocol import Alive, CopyState, Invalidation, Subscribed, WriteOutcome
from convmem.cache.redis import RedisCache
from convmem.models import Thread, Turn


class WatchedTier:
    """Forwards every call to a ``RedisCache``; records each append's batch size and can
    hold appends until ``release`` is set."""

    def __init__(self, inner: RedisCache) -> None:
        self.inner = inner
        self.appended: list[int] = []  # turns sent per append
        self.release: asyncio.Event | None = None

    async def append(
        self,
        thread_id: str,
        base: int,
        version: int,
        turns: Sequence[Turn],
        updated_at: datetime,
        expires_at: datetime,
        now: datetime,
        *,
        source: str | None = None,
        after: CopyState | None = None,
    ) -> WriteOutcome:
        self.appended.append(len(turns))
        if self.release is not None:
            await self.release.wait()
        return await self.inner.append(
            thread_id, base, version, turns, updated_at, expires_at, now, source=source, after=after
        )

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def ping(self) -> None:
        await self.inner.ping()

    async def get(self, thread_id: str) -> Thread | None:
        return await self.inner.get(thread_id)

    async def version(self, thread_id: str) -> int:
        return await self.inner.version(thread_id)

    async def install(self, thread: Thread, now: datetime) -> bool:
        return await self.inner.install(thread, now)

    async def remove(
        self,
        thread_id: str,
        base: int,
        version: int,
        seqs: Sequence[int],
        updated_at: datetime,
        expires_at: datetime,
        now: datetime,
        *,
        source: str | None = None,
        after: CopyState | None = None,
    ) -> WriteOutcome:
        return await self.inner.remove(
            thread_id, base, version, seqs, updated_at, expires_at, now, source=source, after=after
        )

    async def summarise(
        self,
        thread_id: str,
        base: int,
        version: int,
        summary: Turn,
        updated_at: datetime,
        expires_at: datetime,
        now: datetime,
        *,
        source: str | None = None,
        after: CopyState | None = None,
    ) -> WriteOutcome:
        return await self.inner.summarise(
            thread_id,
            base,
            version,
            summary,
            updated_at,
            expires_at,
            now,
            source=source,
            after=after,
        )

    async def claim(self, name: str, thread_id: str, token: str, ttl_seconds: float) -> bool:
        return await self.inner.claim(name, thread_id, token, ttl_seconds)

    async def release_claim(self, name: str, thread_id: str, token: str) -> None:
        await self.inner.release_claim(name, thread_id, token)

    async def fence(self, thread_id: str, version: int) -> bool:
        return await self.inner.fence(thread_id, version)

    async def drop(self, thread_id: str) -> None:
        await self.inner.drop(thread_id)

    async def publish(self, thread_id: str, version: int, source: str) -> int:
        return await self.inner.publish(thread_id, version, source)

    def invalidations(self) -> AsyncIterator[Subscribed | Alive | Invalidation]:
        return self.inner.invalidations()
