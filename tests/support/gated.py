"""A real store with a pause in its read path, to force interleavings deterministically.

``GatedStore`` delegates every call to the store it wraps; when its gate is
armed, ``load`` and ``load_since`` read from the database and then wait for the
test to open the gate before returning (a "slow reader").
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from tests.support.delegating import DelegatingStore

if TYPE_CHECKING:
    from convmem.changes import ThreadDelta
    from convmem.models import Thread
    from convmem.stores.base import Store


class GatedStore(DelegatingStore):
    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.armed = False
        self.loaded = asyncio.Event()  # set once a gated read has its rows
        self.release = asyncio.Event()

    async def _gate(self) -> None:
        if self.armed:
            self.loaded.set()
            await self.release.wait()

    async def aclose(self) -> None:
        pass  # the inner store belongs to the fixture

    async def load(self, thread_id: str, *, owner: str | None) -> Thread | None:
        thread = await self.inner.load(thread_id, owner=owner)
        await self._gate()
        return thread

    async def load_since(
        self, thread_id: str, version: int, *, owner: str | None
    ) -> ThreadDelta | None:
        delta = await self.inner.load_since(thread_id, version, owner=owner)
        await self._gate()
        return delta
