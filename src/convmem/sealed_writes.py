"""The writes' side of encryption at rest: what a write carries is sealed here, once.

Turns are written sealed for their seqs: the guess, the store's refusal, the retry.

With encryption at rest a turn's ciphertext binds its seq (``encryption/sealer.py``), so
a turn moved to another place fails authentication; but the store numbers turns only
when it commits them. So the writer seals turns for the seqs after the newest version it
knows of (its watermark: what this instance wrote, served or was told of by another),
and the store puts each new turn at the seq it was sealed for or refuses the whole call
with ``SeqTakenError`` and the version it is at (another write came first): the turns are
sealed again for the seqs after that version and sent again. The refusal costs one store
round trip, and happens only on a thread this instance never saw, or one another
instance wrote to while this one was not told (Redis down, or no Redis and two writers).
Within one process, sealed writes to one thread take turns (each until the caches have
it), so concurrent tasks do not seal for the same seqs.

A retried append (its turns keyed as before) must seal each turn the store holds
already for the seq it holds it at, or its ciphertext differs and the store sees a
conflict: a keyed turn among the newest turns this instance holds of the thread is
sealed for its seq there (one round trip, as without encryption). Otherwise (the thread
moved between the attempts, the copy is gone, or the keys changed) ``as_stored`` reads
the thread once and sends the stored ciphertext for the turns it holds already, so
idempotency by key holds as without encryption, at two more round trips.

Without encryption the turns go to the store as they are, numbered by it.

Key rotation (``convmem rotate-keys``) writes here too: a stored thread's sealed rows are
sealed again under the newest key, each only where it still holds what was read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from convmem.errors import (
    ConfigurationError,
    IdempotencyConflictError,
    SeqTakenError,
    StoreError,
    ThreadNotFoundError,
)
from convmem.stores.base import NewThread, Resealed

if TYPE_CHECKING:
    from convmem.changes import Appended, Created, Replaced, Summarised, Updated
    from convmem.models import Turn
    from convmem.sealing import Sealing
    from convmem.stores.base import Store

T = TypeVar("T")
R = TypeVar("R")


class StoreCall(Protocol):
    """How a store call is made: counted and guarded (``Memory._read``/``_write``)."""

    async def __call__(self, call: Callable[[], Awaitable[T]]) -> T: ...


# Each refusal means another write to the thread committed in between, so the thread is
# busy, not broken; past this many, the caller hears so rather than waiting on.
MAX_ATTEMPTS: Final = 8


@dataclass(slots=True)
class _Writers:
    lock: asyncio.Lock
    waiting: int = 0


class SealedWrites:
    """Every store write that carries what people wrote, through ``sealing``: it is sealed
    here and nowhere else (creates, forks, appends, rewrites, updates, summaries, and key
    rotation's ``reseal`` and ``forget_older_keys``; pops, clears and deletes carry
    nothing to seal). Each store call is made by ``write`` (or ``read``, for the one read
    a retried append or a reseal needs)."""

    def __init__(
        self,
        store: Store,
        sealing: Sealing,
        *,
        known_version: Callable[[str], int],
        known_keys: Callable[[str, int], Mapping[str, int]],
        read: StoreCall,
        write: StoreCall,
    ) -> None:
        self.store = store
        self.sealing = sealing
        self._known_version = known_version
        self._known_keys = known_keys
        self._read = read
        self._write = write
        self._writers: dict[str, _Writers] = {}

    async def create(self, thread: NewThread, turns: Sequence[Turn]) -> Created:
        """A new thread (``turns`` its first), its metadata and turns sealed."""
        store, sealing = self.store, self.sealing
        spec = replace(thread, metadata=sealing.seal_metadata(thread.id, thread.metadata))
        sealed = sealing.seal_turns(thread.id, turns, first_seq=1)
        return await self._write(lambda: store.create(spec, sealed))

    async def fork(self, thread: NewThread, *, at_seq: int | None) -> Created:
        """A fork of ``thread.parent_id``, its metadata sealed."""
        store, sealing = self.store, self.sealing
        spec = replace(thread, metadata=sealing.seal_metadata(thread.id, thread.metadata))
        return await self._write(lambda: store.fork(spec, at_seq=at_seq))

    async def update(
        self,
        thread_id: str,
        metadata: Mapping[str, Any],
        *,
        owner: str | None,
        base_version: int | None,
    ) -> Updated:
        """The thread's metadata replaced, sealed."""
        store, sealed = self.store, self.sealing.seal_metadata(thread_id, metadata)
        return await self._write(
            lambda: store.update(thread_id, sealed, owner=owner, base_version=base_version)
        )

    async def save_summary(
        self,
        thread_id: str,
        summary: Turn,
        *,
        covers_to_seq: int,
        base_version: int,
        owner: str | None,
    ) -> Summarised:
        """A compaction summary saved, sealed for the turns it covers."""
        store = self.store
        sealed = self.sealing.seal_summary(thread_id, summary, covers_to_seq=covers_to_seq)
        return await self._write(
            lambda: store.save_summary(
                thread_id,
                sealed,
                covers_to_seq=covers_to_seq,
                base_version=base_version,
                owner=owner,
            )
        )

    async def append(
        self,
        thread_id: str,
        turns: Sequence[Turn],
        *,
        owner: str | None,
        then: Callable[[Appended], Awaitable[R]],
    ) -> R:
        """Append ``turns`` and return what ``then`` (the caches brought up to the append)
        makes of the result."""
        store = self.store
        if not self.sealing.encrypts:
            return await then(
                await self._write(lambda: store.append(thread_id, turns, owner=owner))
            )
        async with self._writing(thread_id):
            sealed = self._guessed(thread_id, turns)
            for _ in range(MAX_ATTEMPTS):
                try:
                    result = await self._write(_appending(store, thread_id, sealed, owner))
                except SeqTakenError as moved:
                    sealed = self._sealed(thread_id, turns, moved.version + 1)
                except IdempotencyConflictError as conflict:
                    sealed = await self._as_stored(thread_id, turns, owner, conflict)
                else:
                    return await then(result)
        raise _busy(thread_id)

    async def rewrite(
        self,
        thread_id: str,
        turns: Sequence[Turn],
        *,
        after_seq: int,
        owner: str | None,
        metadata: Mapping[str, Any] | None,
        then: Callable[[Replaced], Awaitable[R]],
    ) -> R:
        """Rewrite the turns after ``after_seq`` (and the metadata, when given); as
        ``append`` otherwise."""
        store = self.store
        if metadata is not None:
            metadata = self.sealing.seal_metadata(thread_id, metadata)
        if not self.sealing.encrypts:
            return await then(
                await self._write(
                    lambda: store.rewrite(
                        thread_id, turns, after_seq=after_seq, owner=owner, metadata=metadata
                    )
                )
            )
        async with self._writing(thread_id):
            version = self._known_version(thread_id)
            for _ in range(MAX_ATTEMPTS):
                # A rewrite takes one version for the removal, then one per new turn.
                sealed = self._sealed(thread_id, turns, version + 2)
                rewriting = _rewriting(store, thread_id, sealed, after_seq, owner, metadata)
                try:
                    stored = await self._write(rewriting)
                except SeqTakenError as moved:
                    version = moved.version
                else:
                    return await then(stored)
        raise _busy(thread_id)

    async def reseal(self, thread_id: str, *, owner: str | None) -> int | None:
        """Key rotation: the stored thread's turns, summary and metadata sealed again under
        the newest key (one read, at most one write); how many rows changed, or None when
        the thread is gone or expired."""
        self._rotating()
        store, sealing = self.store, self.sealing
        stored = await self._read(lambda: store.load(thread_id, owner=owner))
        if stored is None:
            return None
        turns = [
            Resealed(turn.content, resealed)
            for turn in stored.turns
            if (resealed := sealing.reseal_turn(thread_id, turn)) is not None
        ]
        summary = stored.summary
        if summary is not None and (
            resealed := sealing.reseal_turn(thread_id, summary, summary=True)
        ):
            turns.append(Resealed(summary.content, resealed, summary=True))
        metadata = sealing.reseal_metadata(thread_id, stored.metadata)
        if not turns and metadata is None:
            return 0
        header = None if metadata is None else (stored.metadata, metadata)
        return await self._write(lambda: store.reseal(thread_id, turns, header))

    async def forget_older_keys(self) -> None:
        """After a complete rotation: the store holds sealed data under the newest key only."""
        self._rotating()
        key_ids, store = self.sealing.key_ids, self.store
        await self._write(lambda: store.sealing_keys(key_ids[0], key_ids, only=True))

    def _rotating(self) -> None:
        if not self.sealing.encrypts:
            raise ConfigurationError("key rotation needs encryption keys (CONVMEM_ENCRYPTION_KEYS)")

    @contextlib.asynccontextmanager
    async def _writing(self, thread_id: str) -> AsyncIterator[None]:
        """One sealed write at a time per thread in this process, each until the caches
        have it: concurrent writers here would otherwise seal for the same seqs, and all
        but one pay a refusal (every store serialises writes to a thread anyway)."""
        entry = self._writers.get(thread_id)
        if entry is None:
            entry = self._writers[thread_id] = _Writers(asyncio.Lock())
        entry.waiting += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.waiting -= 1
            if not entry.waiting:
                del self._writers[thread_id]

    def _guessed(self, thread_id: str, turns: Sequence[Turn]) -> Sequence[Turn]:
        """``turns`` sealed for where the store will put them, as far as this instance
        knows: a keyed turn it holds already at its seq, the others after the version.
        A retry's turns are among the newest, so only the newest few are looked at."""
        seq = self._known_version(thread_id)
        placed: Mapping[str, int] = {}
        if any(turn.key is not None for turn in turns):
            placed = self._known_keys(thread_id, 4 * len(turns))
        seqs = []
        for turn in turns:
            at = placed.get(turn.key) if turn.key is not None else None
            if at is None:
                seq += 1
                at = seq
            seqs.append(at)
        return self.sealing.seal_turns_at(thread_id, turns, seqs)

    def _sealed(self, thread_id: str, turns: Sequence[Turn], first_seq: int) -> Sequence[Turn]:
        return self.sealing.seal_turns(thread_id, turns, first_seq=first_seq)

    async def _as_stored(
        self,
        thread_id: str,
        turns: Sequence[Turn],
        owner: str | None,
        conflict: IdempotencyConflictError,
    ) -> list[Turn]:
        """``turns`` sealed again: each keyed turn that repeats a stored one (the same role
        and content once opened) as its stored ciphertext, the others for the seqs after
        the stored version; a key stored for other content is a conflict still. One
        store read, on this rare path only."""
        store = self.store
        stored = await self._read(lambda: store.load(thread_id, owner=owner))
        if stored is None:
            raise ThreadNotFoundError.of(thread_id)
        by_key = {t.key: t for t in stored.turns if t.key is not None}
        result: list[Turn] = []
        seq = stored.version
        for turn in turns:
            prior = by_key.get(turn.key) if turn.key is not None else None
            if prior is None:
                seq += 1
                result.extend(self._sealed(thread_id, (turn,), seq))
                continue
            (plain,) = self.sealing.open_turns(thread_id, (prior,))
            if (plain.role, plain.content) != (turn.role, turn.content):
                raise conflict
            result.append(prior)
        return result


def _appending(
    store: Store, thread_id: str, sealed: Sequence[Turn], owner: str | None
) -> Callable[[], Awaitable[Appended]]:
    return lambda: store.append(thread_id, sealed, owner=owner, seqs_bound=True)


def _rewriting(
    store: Store,
    thread_id: str,
    sealed: Sequence[Turn],
    after_seq: int,
    owner: str | None,
    metadata: Mapping[str, Any] | None,
) -> Callable[[], Awaitable[Replaced]]:
    return lambda: store.rewrite(
        thread_id, sealed, after_seq=after_seq, owner=owner, metadata=metadata, seqs_bound=True
    )


def _busy(thread_id: str) -> StoreError:
    return StoreError(
        f"thread {thread_id} was written by others {MAX_ATTEMPTS} times while this write"
        " was being sealed for its place; nothing of it was written: try again"
    )
