"""A committed write as one value: what it did to a thread, and how a copy follows it.

Every store write returns a ``Change``; the cache has one entry for it
(``TieredCache.committed``) and the L2 tier one write (``L2Tier.apply``), so a new
kind of write is a new type here, one store method per store and one L2 tail.

Each change carries the thread id, the version it committed and the version it was made
on (``base_version``), and its payload as the store keeps it (sealed when encryption is
on). A copy of the thread at ``base_version`` follows it in place (``applied_to``); any
other copy is stale and is refreshed or fenced by the tier that holds it.

=============  ===================================  =======================================
change         what the store committed             a copy at the base version
=============  ===================================  =======================================
``Created``    a new thread (a create or a fork)    (none: the thread is new)
``Appended``   turns at seq ``base + 1 ..``         extended by them
``Removed``    a pop or a clear                     loses those turns (and a summary of one)
``Summarised`` a compaction summary                 takes it
``Updated``    the thread's metadata replaced       takes it
``Replaced``   a rewrite: the whole thread anew     replaced whole, whatever it held
``Deleted``    the thread is gone                   dropped
``Moved``      some write to ``version`` (its       (none: a stale copy is only fenced)
               payload unknown here: a replay)
=============  ===================================  =======================================

``ThreadDelta`` is a read of what changed after a known version (``load_since``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Self

if TYPE_CHECKING:
    from convmem.models import Thread, Turn
    from convmem.sealing import Sealing

DELETED: Final = 2**53  # the version of a deleted thread: nothing is ever at or above it


@dataclass(frozen=True, slots=True)
class CopyState:
    """What a write leaves of the copy at its base version, which the writer holds: how
    many turns and the seq its summary covers through (0: none). An L2 tier that tags
    its copies (``cache/tags.py``) tags that state; without it, it fences instead."""

    count: int
    summary_seq: int


# -- changes that keep the thread, made on a known base version -------------------------


@dataclass(frozen=True, slots=True)
class Appended:
    """An append: ``turns`` are the requested turns as stored, in request order (for a key
    already in the thread, the stored turn: the retry inserted nothing); ``inserted`` of
    them are new and hold seq ``base_version + 1 .. version``."""

    thread_id: str
    version: int
    inserted: int
    turns: tuple[Turn, ...]
    updated_at: datetime
    expires_at: datetime

    @property
    def base_version(self) -> int:
        return self.version - self.inserted

    @property
    def new_turns(self) -> tuple[Turn, ...]:
        """The turns this call inserted, ordered by seq."""
        return tuple(sorted((t for t in self.turns if t.seq > self.base_version), key=_seq))

    def opened(self, sealing: Sealing) -> Appended:
        """The same append with its new turns opened: its ``turns`` are then those only
        (what a copy at the base version needs)."""
        if not sealing.encrypts:
            return self
        turns = sealing.open_turns(self.thread_id, self.new_turns)
        return replace(self, turns=turns)

    def state_after(self, copy: Thread) -> CopyState:
        return CopyState(len(copy.turns) + self.inserted, copy.summarised_through)

    def applied_to(self, thread: Thread) -> Thread | None:
        """``thread`` extended by this append, or None when it is not the base version."""
        if thread.version != self.base_version:
            return None
        return extend_thread(thread, self.new_turns, self.updated_at, self.expires_at)


@dataclass(frozen=True, slots=True)
class Removed:
    """A pop or a clear: the thread lost the turns numbered ``seqs`` (none: nothing
    changed, and no one is told). ``turns`` are the removed turns themselves, oldest
    first, for a pop (a clear does not send them back)."""

    thread_id: str
    version: int
    seqs: tuple[int, ...]
    turns: tuple[Turn, ...]
    updated_at: datetime
    expires_at: datetime

    @property
    def base_version(self) -> int:
        return self.version - 1 if self.seqs else self.version

    @property
    def changed(self) -> bool:
        return bool(self.seqs)

    def opened(self, sealing: Sealing) -> Removed:
        return self  # a copy loses turns by seq: nothing to open

    def state_after(self, copy: Thread) -> CopyState:
        """Its summary goes if it covered a removed turn (as the store and the L2 script
        have it)."""
        summary = copy.summarised_through
        if self.seqs and summary >= min(self.seqs):
            summary = 0
        return CopyState(len(copy.turns) - len(self.seqs), summary)

    def applied_to(self, thread: Thread) -> Thread | None:
        """``thread`` without the removed turns, or None when it is not the base version
        (or does not hold those turns)."""
        if thread.version != self.base_version:
            return None
        if not self.seqs:
            return thread
        gone = frozenset(self.seqs)
        kept = tuple(t for t in thread.turns if t.seq not in gone)
        if len(kept) != len(thread.turns) - len(gone):
            return None
        summary = thread.summary
        if summary is not None and summary.seq >= min(gone):  # it covered a removed turn
            summary = None
        return revised(thread, kept, self.version, self.updated_at, self.expires_at, summary)


@dataclass(frozen=True, slots=True)
class Summarised:
    """A saved compaction summary: ``summary`` (its ``seq`` the newest turn it covers) at
    ``version``, one above the version it was saved on."""

    thread_id: str
    version: int
    summary: Turn
    updated_at: datetime
    expires_at: datetime

    @property
    def base_version(self) -> int:
        return self.version - 1

    def opened(self, sealing: Sealing) -> Summarised:
        if not sealing.encrypts:
            return self
        return replace(self, summary=sealing.open_summary_turn(self.thread_id, self.summary))

    def state_after(self, copy: Thread) -> CopyState:
        return CopyState(len(copy.turns), self.summary.seq)

    def applied_to(self, thread: Thread) -> Thread | None:
        """``thread`` with this summary, or None when it is not the version it was saved on."""
        if thread.version != self.base_version:
            return None
        return revised(
            thread, thread.turns, self.version, self.updated_at, self.expires_at, self.summary
        )


@dataclass(frozen=True, slots=True)
class Updated:
    """A thread's metadata replaced (a rename, a tag): ``metadata`` as stored, at
    ``version``, one above the version it was made on; the turns, the summary and the
    expiry stay."""

    thread_id: str
    version: int
    metadata: Mapping[str, Any]
    updated_at: datetime
    expires_at: datetime

    @property
    def base_version(self) -> int:
        return self.version - 1

    def opened(self, sealing: Sealing) -> Updated:
        if not sealing.encrypts:
            return self
        return replace(self, metadata=sealing.open_metadata(self.thread_id, self.metadata))

    def state_after(self, copy: Thread) -> CopyState:
        return CopyState(len(copy.turns), copy.summarised_through)

    def applied_to(self, thread: Thread) -> Thread | None:
        """``thread`` with this metadata, or None when it is not the version it was made on."""
        if thread.version != self.base_version:
            return None
        return replace(
            thread,
            metadata=self.metadata,
            version=self.version,
            updated_at=self.updated_at,
            expires_at=self.expires_at,
        )


# -- changes that carry the whole thread, or none of it ---------------------------------


@dataclass(frozen=True, slots=True)
class _WholeThread:
    """A change that carries the thread as stored; every tier takes it whole."""

    thread: Thread

    @property
    def thread_id(self) -> str:
        return self.thread.id

    @property
    def version(self) -> int:
        return self.thread.version

    def opened(self, sealing: Sealing) -> Self:
        return (
            self if not sealing.encrypts else replace(self, thread=sealing.open_thread(self.thread))
        )


@dataclass(frozen=True, slots=True)
class Created(_WholeThread):
    """A new thread (a create or a fork), as stored. No one else can hold a copy of it
    yet, so it is not announced."""


@dataclass(frozen=True, slots=True)
class Replaced(_WholeThread):
    """A write that replaced the thread whole (a rewrite): the thread as stored now.
    Every older copy is stale whatever it held."""


@dataclass(frozen=True, slots=True)
class Moved:
    """The thread reached ``version`` by a write whose payload is not at hand (a write
    Redis missed, replayed): a copy below it is stale and is fenced."""

    thread_id: str
    version: int


@dataclass(frozen=True, slots=True)
class Deleted:
    """The thread is gone: every copy is dropped, and none is served again."""

    thread_id: str

    @property
    def version(self) -> int:
        return DELETED


InPlace = Appended | Removed | Summarised | Updated  # made on a base version, followed in place
Whole = Created | Replaced  # carrying the thread as stored
Change = InPlace | Whole | Moved | Deleted


def changed(change: Change) -> bool:
    """Whether the change changed the thread (an empty pop did not)."""
    return not isinstance(change, Removed) or change.changed


def announced(change: Change) -> bool:
    """Whether other instances must hear of the change (a created thread is new to all)."""
    return changed(change) and not isinstance(change, Created)


# -- what a read brings back, and the thread arithmetic ---------------------------------


@dataclass(frozen=True, slots=True)
class ThreadDelta:
    """What changed in a thread after a known version, with its header's moving parts.

    ``turns`` are the turns appended since, or, when ``whole`` (a pop, a clear, a summary,
    a rewrite or an update came after that version), every turn the thread now has.
    ``summary`` and ``metadata`` are the thread's current ones (unchanged since that
    version unless ``whole``; ``metadata`` None: not read).
    """

    thread_id: str
    version: int
    turns: tuple[Turn, ...]
    updated_at: datetime
    expires_at: datetime
    whole: bool = False
    summary: Turn | None = None
    metadata: Mapping[str, Any] | None = None

    def opened(self, sealing: Sealing) -> ThreadDelta:
        """The same delta with its turns, its summary and (when ``whole``: otherwise it is
        not used) its metadata opened."""
        if not sealing.encrypts:
            return self
        thread_id, summary, metadata = self.thread_id, self.summary, self.metadata
        if summary is not None:
            summary = sealing.open_summary_turn(thread_id, summary)
        if metadata is not None and self.whole:
            metadata = sealing.open_metadata(thread_id, metadata)
        turns = sealing.open_turns(thread_id, self.turns)
        return replace(self, turns=turns, summary=summary, metadata=metadata)

    def applied_to(self, thread: Thread) -> Thread:
        """``thread`` brought to this delta's version."""
        if not self.whole:
            return extend_thread(thread, self.turns, self.updated_at, self.expires_at)
        brought = revised(
            thread, self.turns, self.version, self.updated_at, self.expires_at, self.summary
        )
        return brought if self.metadata is None else replace(brought, metadata=self.metadata)


def extend_thread(
    thread: Thread, turns: Sequence[Turn], updated_at: datetime, expires_at: datetime
) -> Thread:
    """Return ``thread`` with ``turns`` (the next seqs, in order) appended."""
    for offset, turn in enumerate(turns, start=1):
        if turn.seq != thread.version + offset:
            raise ValueError(f"turn seq {turn.seq} does not follow version {thread.version}")
    return revised(
        thread,
        thread.turns + tuple(turns),
        thread.version + len(turns),
        updated_at,
        expires_at,
        thread.summary,
    )


def revised(
    thread: Thread,
    turns: tuple[Turn, ...],
    version: int,
    updated_at: datetime,
    expires_at: datetime,
    summary: Turn | None,
) -> Thread:
    """``thread``'s header with other turns and summary, at another version."""
    return replace(
        thread,
        turns=turns,
        version=version,
        updated_at=updated_at,
        expires_at=expires_at,
        summary=summary,
    )


def _seq(turn: Turn) -> int:
    return turn.seq
