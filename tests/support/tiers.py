"""An L2 tier passed to ``Memory(store, cache=...)`` that lets a test watch and hold appends."""

from __future__ import annotations

import asyncio
from datetime import datetime

from convmem.cache.protocol import Claims, InvalidationBus, WriteOutcome
from convmem.cache.redis import RedisCache
from convmem.changes import Appended, Change, CopyState
from convmem.models import Thread


class WatchedTier:
    """Forwards every call to a ``RedisCache``; records each append's batch size and can
    hold appends until ``release`` is set."""

    def __init__(self, inner: RedisCache) -> None:
        self.inner = inner
        self.appended: list[int] = []  # turns sent per append
        self.release: asyncio.Event | None = None

    async def apply(
        self,
        change: Change,
        now: datetime,
        *,
        source: str,
        after: CopyState | None = None,
    ) -> WriteOutcome:
        if isinstance(change, Appended):
            self.appended.append(len(change.new_turns))
            if self.release is not None:
                await self.release.wait()
        return await self.inner.apply(change, now, source=source, after=after)

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

    async def drop(self, thread_id: str) -> None:
        await self.inner.drop(thread_id)

    @property
    def claims(self) -> Claims:
        return self.inner.claims

    @property
    def bus(self) -> InvalidationBus:
        return self.inner.bus
