"""The Store contract: the source of truth beneath every cache.

Every store (SQLite, PostgreSQL, Supabase) implements this ABC and passes
one shared contract suite (``tests/contract/test_store_contract.py``). The
round-trip budget below is part of the contract, and tests count it on the wire:

============================  ==========  ==============================================
call                          round trips semantics
============================  ==========  ==============================================
``load(id)``                  1           the thread and all its turns, or None
``load_since(id, version)``   1           the turns appended after ``version``, or the
                                          whole thread if it was rewritten since
``create(thread, turns)``     1           a new thread, optionally with its first turns
``append(id, turns)``         1           atomic; ``seq`` assigned here; idempotent by key
``pop(id, count)``            1           remove the newest ``count`` turns
``clear(id)``                 1           remove every turn, keep the thread
``fork(thread, at_seq)``      1           a new thread whose history starts with its
                                          parent's turns up to ``at_seq``
``save_summary(id, ...)``     1           a compaction summary of the turns up to a seq
``rewrite(id, turns, after)``  1          the turns after a seq replaced, atomically
``update(id, metadata)``      1           the thread's metadata replaced
``list``/``delete``/``purge``  1          owner-scoped listing with a cursor
============================  ==========  ==============================================

Versions: every committed write raises the thread's version; an append by the number
of turns it inserts (the turns get seq ``base + 1 .. version``), a pop, a clear or a
summary by one. So seqs are never reused, and the turns appended after version ``v``
are exactly those with ``seq > v`` unless a pop, clear or summary came after ``v`` (the
store keeps the version of the last one, ``rewritten_at``, to tell). A pop or clear
that removes a turn the summary covers removes the summary too.

Owner scoping is exact: a thread with owner X is invisible (as if missing) to any
other owner, including ``None``. No call returns a thread past its ``expires_at``;
an append extends it by the configured TTL (sliding expiry). Stores know nothing
of caches. What the stores share besides the contract (messages, paging, row
mapping) lives in ``stores.common`` and ``convmem.records``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

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
from convmem.clocks import WallClock, utc_now
from convmem.limits import ThreadLimits
from convmem.records import thread_from_values

if TYPE_CHECKING:
    from types import TracebackType

    from convmem.models import Thread, ThreadPage, ThreadSummary, Turn


@dataclass(frozen=True, slots=True)
class NewThread:
    """What ``Store.create`` needs; the store fills in timestamps and turn numbers."""

    id: str
    tool_name: str | None
    parent_id: str | None
    owner: str | None
    metadata: Mapping[str, Any]


MetadataSwap = tuple[Mapping[str, Any], Mapping[str, Any]]  # (expected, new) thread metadata
Unannounced = tuple[str, int, bool]  # a write no instance announced: thread id, version, fenced


@dataclass(frozen=True, slots=True)
class Resealed:
    """A stored turn sealed again: ``turn`` (with its ``seq``) replaces the row's payload
    if the row's content is still ``expected``; ``summary``: the row is the thread's
    summary, not a turn."""

    expected: str
    turn: Turn
    summary: bool = False


class Store(ABC):
    """The source of truth. Construct without I/O; ``open()`` (or ``async with``) connects."""

    scheme: str = ""

    def __init__(self, *, limits: ThreadLimits | None = None, clock: WallClock = utc_now) -> None:
        self.limits = limits or ThreadLimits()
        self.clock = clock

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abstractmethod
    async def open(self, *, migrate: bool = True) -> None:
        """Connect (pools, files) and, when ``migrate``, apply pending migrations.

        Opening an open store does nothing.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Release every connection; safe to call twice."""

    @abstractmethod
    async def migrate(self) -> list[str]:
        """Apply pending schema migrations idempotently; return the names applied now."""

    @abstractmethod
    async def ping(self) -> None:
        """One round trip that proves the store answers; raises ``StoreError`` if not."""

    @abstractmethod
    async def load(self, thread_id: str, *, owner: str | None) -> Thread | None:
        """The thread with all its turns (1 round trip); None if missing, expired or not owner's."""

    @abstractmethod
    async def load_since(
        self, thread_id: str, version: int, *, owner: str | None
    ) -> ThreadDelta | None:
        """The turns appended after ``version`` (1 round trip), or every turn (``whole``)
        if the thread was popped or cleared since; None as for ``load``."""

    @abstractmethod
    async def create(self, thread: NewThread, turns: Sequence[Turn] = ()) -> Created:
        """Create a thread with its first turns (1 round trip); the change holds it as
        stored.

        Raises ``ThreadFullError`` if ``turns`` exceed the limit, ``ThreadExistsError``
        if the id is taken.
        """

    @abstractmethod
    async def append(
        self,
        thread_id: str,
        turns: Sequence[Turn],
        *,
        owner: str | None,
        seqs_bound: bool = False,
    ) -> Appended:
        """Append turns atomically (1 round trip), extending the thread's expiry.

        Turns whose key is already in the thread are not inserted again; the others take
        the seqs after the version. With ``seqs_bound`` each turn's ``seq`` is the one it
        was sealed for (encryption at rest binds it): an inserted turn that would take
        another raises ``SeqTakenError`` with the version (another write came first).
        Raises ``ThreadNotFoundError``, ``ThreadExpiredError``, ``ThreadFullError`` or
        ``IdempotencyConflictError``; on any error nothing is written.
        """

    @abstractmethod
    async def pop(self, thread_id: str, *, owner: str | None, count: int = 1) -> Removed:
        """Remove the newest ``count`` turns (fewer if the thread has fewer; none on an
        empty thread, which changes nothing) in 1 round trip, and return them. Their
        keys are free again: a retry of their append inserts them anew.

        Raises ``ThreadNotFoundError`` or ``ThreadExpiredError``; extends the expiry.
        """

    @abstractmethod
    async def clear(self, thread_id: str, *, owner: str | None) -> Removed:
        """Remove every turn and keep the thread (1 round trip); as ``pop`` otherwise."""

    @abstractmethod
    async def fork(self, thread: NewThread, *, at_seq: int | None = None) -> Created:
        """Create ``thread`` as a fork of ``thread.parent_id`` (1 round trip): its history
        is the parent's turns up to ``at_seq`` (default: the parent's newest turn; 0: none
        of them), then its own. The parent must be ``thread.owner``'s and live.

        Raises ``ThreadNotFoundError``/``ThreadExpiredError`` for the parent,
        ``TurnNotFoundError`` when ``at_seq`` is not one of its turns, ``ThreadExistsError``.
        """

    @abstractmethod
    async def save_summary(
        self,
        thread_id: str,
        summary: Turn,
        *,
        covers_to_seq: int,
        base_version: int,
        owner: str | None,
    ) -> Summarised:
        """Keep ``summary`` as the thread's compaction summary of its turns up to
        ``covers_to_seq`` (1 round trip), replacing the one it had; the version rises by
        one, the turns, the expiry and ``updated_at`` stay. ``base_version`` is the version
        the summary was made from: turns appended since do not matter, a pop, a clear or
        another summary since does.

        Raises ``ThreadNotFoundError``/``ThreadExpiredError``, ``StaleSummaryError`` when
        the thread moved past ``base_version`` that way or has no turn ``covers_to_seq``
        (or it is above ``base_version``).
        """

    @abstractmethod
    async def update(
        self,
        thread_id: str,
        metadata: Mapping[str, Any],
        *,
        owner: str | None,
        base_version: int | None = None,
    ) -> Updated:
        """Replace the thread's metadata (1 round trip): the version rises by one,
        recorded as a rewrite (no turn takes that seq, so a reader whose copy is older
        gets the whole thread), ``updated_at`` moves; the turns, the summary and the
        expiry stay. With ``base_version`` (the version the caller read the metadata at),
        only if the thread is still there.

        Raises ``ThreadNotFoundError``/``ThreadExpiredError``, ``StaleUpdateError`` (with
        the version the thread is at) when it moved past ``base_version``.
        """

    @abstractmethod
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
        """Replace every turn after ``after_seq`` (0: all of them) with ``turns``, and the
        thread's metadata with ``metadata`` when given, atomically (1 round trip); the
        change holds the whole thread as it now is. As a pop of those turns then an
        append: the version rises by one, then by one per new turn (seq ``version + 2 ..``);
        a summary that covered a removed turn goes; the expiry slides. ``seqs_bound`` as
        for ``append``.

        Raises ``ThreadNotFoundError``/``ThreadExpiredError``, ``TurnNotFoundError`` when
        ``after_seq`` is not one of its turns, ``ThreadFullError``,
        ``IdempotencyConflictError`` when a new turn's key is a kept turn's,
        ``SeqTakenError``; on any error nothing is written.
        """

    @abstractmethod
    async def list(
        self, *, owner: str | None, limit: int = 50, cursor: str | None = None
    ) -> ThreadPage:
        """Live threads of ``owner``, most recently updated first (1 round trip)."""

    @abstractmethod
    async def list_every_owner(self, *, limit: int = 50, cursor: str | None = None) -> ThreadPage:
        """Every owner's live threads, most recently updated first (1 round trip): for an
        operator's tools, never for serving a client."""

    @abstractmethod
    async def find_any_owner(self, thread_id: str) -> ThreadSummary | None:
        """A live thread's header whoever owns it, or None (1 round trip): for an
        operator's tools, never for serving a client."""

    @abstractmethod
    async def delete(self, thread_id: str, *, owner: str | None) -> Deleted | None:
        """Delete a thread and its turns (1 round trip); None if ``owner`` had none."""

    @abstractmethod
    async def purge_expired(self) -> int:
        """Delete every expired thread (1 round trip); return how many."""

    # -- maintenance (encryption key rotation) -------------------------------------

    @abstractmethod
    async def scan(self, *, after: str | None, limit: int) -> tuple[tuple[str, str | None], ...]:
        """Up to ``limit`` threads' ``(id, owner)`` in id order after ``after``, whatever
        their owner or expiry (1 round trip)."""

    @abstractmethod
    async def reseal(
        self,
        thread_id: str,
        turns: Sequence[Resealed],
        metadata: MetadataSwap | None = None,
    ) -> int:
        """Rewrite stored payloads in place (1 round trip): each turn's columns where the
        row still holds ``expected`` content, the thread's metadata ``(old, new)`` where it
        still equals ``old``. Seq, role, key, times and the version do not change (the
        plaintext is the same). Returns how many rows changed."""

    # -- writes no instance could announce (the staleness bound under a partition) ------

    @abstractmethod
    async def record_unannounced(self, thread_id: str, version: int) -> None:
        """Note that a committed write (its thread's new version) could not be announced
        through Redis (1 round trip); the record of one fenced over an hour ago goes."""

    @abstractmethod
    async def unannounced(self, *, fenced_within: float) -> tuple[Unannounced, ...]:
        """The unannounced writes not fenced yet, and those fenced within the last
        ``fenced_within`` seconds (1 round trip; nothing, while all is well)."""

    @abstractmethod
    async def mark_fenced(self, writes: Sequence[tuple[str, int]]) -> None:
        """Unannounced ``(thread id, version)`` writes have been fenced and announced
        (1 round trip)."""

    @abstractmethod
    async def restore(self, thread: Thread, *, replace: bool = False) -> bool:
        """Write ``thread`` exactly as another store held it (1 round trip): its id,
        owner, metadata, times, expiry and version, its turns with their seqs and times
        (payloads as given: sealed ones stay sealed), its summary and its fork link. For
        ``convmem copy``, never for serving: no limit is applied and no cache is told.

        The version is recorded as a rewrite's (a reader holding any older copy of the
        thread gets it whole; a summary made from an older version is stale). Returns
        False and writes nothing when a thread with that id exists, whoever owns it;
        with ``replace`` that thread and its turns are replaced instead.
        """

    @abstractmethod
    async def sealing_keys(
        self, current: str | None, known: Sequence[str], *, only: bool = False
    ) -> tuple[str, ...]:
        """The ids of the encryption keys this store holds sealed data under, sorted
        (1 round trip), after recording ``current`` (the key a process seals with) if
        the store holds no sealed data yet or holds some under one of ``known`` (the
        keys that process can open); ``only``, after a complete rotation, forgets the
        others. ``current=None`` only reads. Concurrent calls take turns."""


class SnapshotStore(Store):
    """A store whose ``load`` and ``load_since`` are one read of a thread's header and the
    turns after a version, taken in one snapshot; subclasses provide that read."""

    @abstractmethod
    async def _read(
        self, thread_id: str, owner: str | None, since: int
    ) -> tuple[dict[str, Any], tuple[Turn, ...]] | None:
        """The decoded header (its ``summary``: the summary turn or None) and the turns
        appended after version ``since`` (every turn, with ``header["whole"]`` true, when
        a pop, clear or summary came after it), or None (one round trip)."""

    async def load(self, thread_id: str, *, owner: str | None) -> Thread | None:
        found = await self._read(thread_id, owner, 0)
        return None if found is None else thread_from_values(*found)

    async def load_since(
        self, thread_id: str, version: int, *, owner: str | None
    ) -> ThreadDelta | None:
        found = await self._read(thread_id, owner, version)
        if found is None:
            return None
        header, turns = found
        return ThreadDelta(
            thread_id,
            header["version"],
            turns,
            header["updated_at"],
            header["expires_at"],
            bool(header["whole"]),
            header.get("summary"),
            header["metadata"],
        )
