"""A store seen through encryption at rest, so the whole store contract runs sealed.

``SealedStore`` seals what goes in and opens what comes out with the product's own
``Encryption``, exactly as ``Memory`` and the cache do around a real store: the store
underneath holds only ciphertext, and every contract case (round trips, idempotency by
key, conflicts, limits, verbatim text) must still hold. The other calls, the maintenance
calls (scan, reseal) among them, work on stored payloads as they are: they pass through,
and the contract cases of scan and reseal run on the stores without this view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tests.support.delegating import DelegatingStore

if TYPE_CHECKING:
    from convmem.encryption import Encryption
    from convmem.models import Thread, ThreadPage, Turn
    from convmem.stores.base import (
        AppendResult,
        NewThread,
        Removal,
        Store,
        Summarised,
        ThreadDelta,
    )


class SealedStore(DelegatingStore):
    def __init__(self, inner: Store, encryption: Encryption) -> None:
        super().__init__(inner)
        self.encryption = encryption

    async def load(self, thread_id: str, *, owner: str | None) -> Thread | None:
        thread = await self.inner.load(thread_id, owner=owner)
        return None if thread is None else self.encryption.open_thread(thread)

    async def load_since(
        self, thread_id: str, version: int, *, owner: str | None
    ) -> ThreadDelta | None:
        delta = await self.inner.load_since(thread_id, version, owner=owner)
        if delta is None:
            return None
        summary = delta.summary
        return replace(
            delta,
            turns=self.encryption.open_turns(thread_id, delta.turns),
            summary=None if summary is None else self.encryption.open_turn(thread_id, summary),
        )

    async def create(self, thread: NewThread, turns: Sequence[Turn] = ()) -> Thread:
        sealed = replace(thread, metadata=self.encryption.seal_metadata(thread.id, thread.metadata))
        stored = await self.inner.create(sealed, self.encryption.seal_turns(thread.id, turns))
        return self.encryption.open_thread(stored)

    async def append(
        self, thread_id: str, turns: Sequence[Turn], *, owner: str | None
    ) -> AppendResult:
        result = await self.inner.append(
            thread_id, self.encryption.seal_turns(thread_id, turns), owner=owner
        )
        return replace(result, turns=self.encryption.open_turns(thread_id, result.turns))

    async def pop(self, thread_id: str, *, owner: str | None, count: int = 1) -> Removal:
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
    ) -> Thread:
        stored = await self.inner.rewrite(
            thread_id,
            self.encryption.seal_turns(thread_id, turns),
            after_seq=after_seq,
            owner=owner,
            metadata=None
            if metadata is None
            else self.encryption.seal_metadata(thread_id, metadata),
        )
        return self.encryption.open_thread(stored)

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
            self.encryption.seal_turn(thread_id, summary),
            covers_to_seq=covers_to_seq,
            base_version=base_version,
            owner=owner,
        )
        return replace(saved, summary=self.encryption.open_turn(thread_id, saved.summary))

    async def fork(self, thread: NewThread, *, at_seq: int | None = None) -> Thread:
        sealed = replace(thread, metadata=self.encryption.seal_metadata(thread.id, thread.metadata))
        return self.encryption.open_thread(await self.inner.fork(sealed, at_seq=at_seq))

    async def list(
        self, *, owner: str | None, limit: int = 50, cursor: str | None = None
    ) -> ThreadPage:
        page = await self.inner.list(owner=owner, limit=limit, cursor=cursor)
        return replace(page, threads=tuple(self.encryption.open_summary(t) for t in page.threads))
