"""A store that passes every call to the store it wraps: the base of the test wrappers
that change one part of a real store's behaviour (``GatedStore``, ``SealedStore``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from convmem.stores.base import Store

if TYPE_CHECKING:
    from convmem.changes import (
        Appended,
        Created,
        Deleted,
        Removed,
        Replaced,
        Summarised,
        ThreadDelta,
        Updated,
    )
    from convmem.models import Thread, ThreadPage, ThreadSummary, Turn
    from convmem.stores.base import MetadataSwap, NewThread, Resealed, Unannounced


class DelegatingStore(Store):
    def __init__(self, inner: Store) -> None:
        super().__init__(limits=inner.limits, clock=inner.clock)
        self.inner = inner

    async def open(self, *, migrate: bool = True) -> None:
        await self.inner.open(migrate=migrate)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def migrate(self) -> list[str]:
        return await self.inner.migrate()

    async def ping(self) -> None:
        await self.inner.ping()

    async def sealing_keys(
        self, current: str | None, known: Sequence[str], *, only: bool = False
    ) -> tuple[str, ...]:
        return await self.inner.sealing_keys(current, known, only=only)

    async def load(self, thread_id: str, *, owner: str | None) -> Thread | None:
        return await self.inner.load(thread_id, owner=owner)

    async def load_since(
        self, thread_id: str, version: int, *, owner: str | None
    ) -> ThreadDelta | None:
        return await self.inner.load_since(thread_id, version, owner=owner)

    async def create(self, thread: NewThread, turns: Sequence[Turn] = ()) -> Created:
        return await self.inner.create(thread, turns)

    async def append(
        self,
        thread_id: str,
        turns: Sequence[Turn],
        *,
        owner: str | None,
        seqs_bound: bool = False,
    ) -> Appended:
        return await self.inner.append(thread_id, turns, owner=owner, seqs_bound=seqs_bound)

    async def pop(self, thread_id: str, *, owner: str | None, count: int = 1) -> Removed:
        return await self.inner.pop(thread_id, owner=owner, count=count)

    async def clear(self, thread_id: str, *, owner: str | None) -> Removed:
        return await self.inner.clear(thread_id, owner=owner)

    async def fork(self, thread: NewThread, *, at_seq: int | None = None) -> Created:
        return await self.inner.fork(thread, at_seq=at_seq)

    async def rewrite(
        self,
        thread_id: str,
        turns: Sequence[Turn],
        *,
        after_seq: int,
        owner: str | None,
        metadata: Mapping[str, Any] | None = None,
        seqs_bound: bool = False,
    ) -> Replaced:
        return await self.inner.rewrite(
            thread_id,
            turns,
            after_seq=after_seq,
            owner=owner,
            metadata=metadata,
            seqs_bound=seqs_bound,
        )

    async def update(
        self,
        thread_id: str,
        metadata: Mapping[str, Any],
        *,
        owner: str | None,
        base_version: int | None = None,
    ) -> Updated:
        return await self.inner.update(thread_id, metadata, owner=owner, base_version=base_version)

    async def save_summary(
        self,
        thread_id: str,
        summary: Turn,
        *,
        covers_to_seq: int,
        base_version: int,
        owner: str | None,
    ) -> Summarised:
        return await self.inner.save_summary(
            thread_id,
            summary,
            covers_to_seq=covers_to_seq,
            base_version=base_version,
            owner=owner,
        )

    async def list(
        self, *, owner: str | None, limit: int = 50, cursor: str | None = None
    ) -> ThreadPage:
        return await self.inner.list(owner=owner, limit=limit, cursor=cursor)

    async def list_every_owner(self, *, limit: int = 50, cursor: str | None = None) -> ThreadPage:
        return await self.inner.list_every_owner(limit=limit, cursor=cursor)

    async def find_any_owner(self, thread_id: str) -> ThreadSummary | None:
        return await self.inner.find_any_owner(thread_id)

    async def delete(self, thread_id: str, *, owner: str | None) -> Deleted | None:
        return await self.inner.delete(thread_id, owner=owner)

    async def record_unannounced(self, thread_id: str, version: int) -> None:
        await self.inner.record_unannounced(thread_id, version)

    async def unannounced(self, *, fenced_within: float) -> tuple[Unannounced, ...]:
        return await self.inner.unannounced(fenced_within=fenced_within)

    async def mark_fenced(self, writes: Sequence[tuple[str, int]]) -> None:
        await self.inner.mark_fenced(writes)

    async def restore(self, thread: Thread, *, replace: bool = False) -> bool:
        return await self.inner.restore(thread, replace=replace)

    async def purge_expired(self) -> int:
        return await self.inner.purge_expired()

    async def scan(self, *, after: str | None, limit: int) -> tuple[tuple[str, str | None], ...]:
        return await self.inner.scan(after=after, limit=limit)

    async def reseal(
        self,
        thread_id: str,
        turns: Sequence[Resealed],
        metadata: MetadataSwap | None = None,
    ) -> int:
        return await self.inner.reseal(thread_id, turns, metadata)
