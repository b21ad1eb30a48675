"""A store seen through encryption at rest, so the whole store contract runs sealed.

``SealedStore`` seals what goes in and opens what comes out with the product's own
``Encryption``, exactly as ``Memory`` and the cache do around a real store: the store
underneath holds only ciphertext, and every contract case (round trips, idempotency by
key, conflicts, limits, verbatim text) must still hold. Appends and rewrites go through
the product's own ``SealedWrites`` (sealed for their seqs, sealed again when the store
refuses them), knowing the versions this view saw. The other calls, the maintenance
calls (scan, reseal) among them, work on stored payloads as they are: they pass through,
and the contract cases of scan and reseal run on the stores without this view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from convmem.sealed_writes import SealedWrites
from tests.support.delegating import DelegatingStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from convmem.changes import (
        Appended,
        Created,
        Removed,
        Replaced,
        Summarised,
        ThreadDelta,
        Updated,
    )
    from convmem.encryption import Encryption
    from convmem.models import Thread, ThreadPage, Turn
    from convmem.stores.base import NewThread, Store


T = TypeVar("T")


async def _direct(call: Callable[[], Awaitable[T]]) -> T:
    return await call()


class SealedStore(DelegatingStore):
    def __init__(self, inner: Store, encryption: Encryption) -> None:
        super().__init__(inner)
        self.encryption = encryption
        # What this view saw, as an instance's watermarks and L1 copies.
        self.versions: dict[str, int] = {}
        self.keys: dict[str, dict[str, int]] = {}
        self.writes = SealedWrites(
            inner,
            encryption,
            known_version=lambda thread_id: self.versions.get(thread_id, 0),
            known_keys=lambda thread_id, _: self.keys.get(thread_id, {}),
            read=_direct,
            write=_direct,
        )

    def _saw(self, thread_id: str, version: int, turns: Sequence[Turn] = ()) -> None:
        self.versions[thread_id] = max(version, self.versions.get(thread_id, 0))
        self.keys.setdefault(thread_id, {}).update({t.key: t.seq for t in turns if t.key})

    async def load(self, thread_id: str, *, owner: str | None) -> Thread | None:
        thread = await self.inner.load(thread_id, owner=owner)
        if thread is None:
            return None
        self._saw(thread_id, thread.version, thread.turns)
        return self.encryption.open_thread(thread)

    async def load_since(
        self, thread_id: str, version: int, *, owner: str | None
    ) -> ThreadDelta | None:
        delta = await self.inner.load_since(thread_id, version, owner=owner)
        return None if delta is None else delta.opened(self.encryption)

    async def create(self, thread: NewThread, turns: Sequence[Turn] = ()) -> Created:
        sealed = replace(thread, metadata=self.encryption.seal_metadata(thread.id, thread.metadata))
        created = await self.inner.create(
            sealed, self.encryption.seal_turns(thread.id, turns, first_seq=1)
        )
        self._saw(created.thread_id, created.version, created.thread.turns)
        return created.opened(self.encryption)

    async def append(
        self,
        thread_id: str,
        turns: Sequence[Turn],
        *,
        owner: str | None,
        seqs_bound: bool = False,
    ) -> Appended:
        async def seen(result: Appended) -> Appended:
            self._saw(thread_id, result.version, result.turns)
            return replace(result, turns=self.encryption.open_turns(thread_id, result.turns))

        return await self.writes.append(thread_id, turns, owner=owner, then=seen)

    async def pop(self, thread_id: str, *, owner: str | None, count: int = 1) -> Removed:
        removal = await self.inner.pop(thread_id, owner=owner, count=count)
        return replace(removal, turns=self.encryption.open_turns(thread_id, removal.turns))

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
        async def seen(replaced: Replaced) -> Replaced:
            self.keys.pop(thread_id, None)  # the turns after after_seq are gone
            self._saw(thread_id, replaced.version, replaced.thread.turns)
            return replaced.opened(self.encryption)

        return await self.writes.rewrite(
            thread_id,
            turns,
            after_seq=after_seq,
            owner=owner,
            metadata=metadata,
            then=seen,
        )

    async def update(
        self,
        thread_id: str,
        metadata: Mapping[str, Any],
        *,
        owner: str | None,
        base_version: int | None = None,
    ) -> Updated:
        updated = await self.inner.update(
            thread_id,
            self.encryption.seal_metadata(thread_id, metadata),
            owner=owner,
            base_version=base_version,
        )
        return updated.opened(self.encryption)

    async def save_summary(
        self,
        thread_id: str,
        summary: Turn,
        *,
        covers_to_seq: int,
        base_version: int,
        owner: str | None,
    ) -> Summarised:
        saved = await self.inner.save_summary(
            thread_id,
            self.encryption.seal_summary(thread_id, summary, covers_to_seq=covers_to_seq),
            covers_to_seq=covers_to_seq,
            base_version=base_version,
            owner=owner,
        )
        self._saw(thread_id, saved.version)
        return replace(saved, summary=self.encryption.open_summary_turn(thread_id, saved.summary))

    async def fork(self, thread: NewThread, *, at_seq: int | None = None) -> Created:
        sealed = replace(thread, metadata=self.encryption.seal_metadata(thread.id, thread.metadata))
        return (await self.inner.fork(sealed, at_seq=at_seq)).opened(self.encryption)

    async def list(
        self, *, owner: str | None, limit: int = 50, cursor: str | None = None
    ) -> ThreadPage:
        page = await self.inner.list(owner=owner, limit=limit, cursor=cursor)
        return replace(page, threads=tuple(self.encryption.open_summary(t) for t in page.threads))
