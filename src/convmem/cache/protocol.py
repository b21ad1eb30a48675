"""What the tiered cache needs of an L2 tier, the signals it raises, and its named results.

``RedisCache`` implements ``L2Tier``; ``GuardedL2`` wraps any ``L2Tier`` in the fault
policy and implements it too; tests may stand in another. Keeping this free of any
driver import means ``import convmem`` never imports redis.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from convmem.models import Thread, Turn

DELETED: Final = 2**53  # the fence version of a deleted thread: nothing is ever at or above it


class L2Error(Exception):
    """The L2 tier failed (unreachable, timed out, refused); the caller degrades to the store."""


class L2Skipped(L2Error):
    """The call was not made: the circuit is open after a recent failure."""


class CorruptPayload(Exception):
    """An L2 value that is not a convmem thread (foreign, truncated or garbled)."""


@dataclass(frozen=True, slots=True)
class CopyState:
    """What a write leaves of the copy at its base version, which the writer holds: how
    many turns and the seq its summary covers through (0: none). An L2 tier that tags
    its copies (``cache/tags.py``) tags that state; without it, it fences instead."""

    count: int
    summary_seq: int


class WriteOutcome(enum.Enum):
    """What a write (an append, a pop, a clear) did to the L2 copy of a thread."""

    EXTENDED = "extended"  # the copy was at the writer's base version: changed in place
    ALREADY_NEWER = "already_newer"  # L2 holds (or is fenced at) this version or a newer one
    FENCED = "fenced"  # the copy was older or missing: fenced at the new version


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The invalidation channel is subscribed: from now on every write is heard.

    ``run_id`` names the Redis process (it changes when Redis restarts, empty); ``age``
    is how long ago the subscription was requested.
    """

    run_id: str
    age: float


@dataclass(frozen=True, slots=True)
class Alive:
    """Redis answered a heartbeat on the channel, sent ``age`` seconds ago."""

    age: float


@dataclass(frozen=True, slots=True)
class Invalidation:
    """Another instance (``source``) committed ``version`` of a thread."""

    thread_id: str
    version: int
    source: str


class L2Tier(Protocol):
    async def aclose(self) -> None: ...
    async def ping(self) -> None: ...
    async def get(self, thread_id: str) -> Thread | None: ...
    async def version(self, thread_id: str) -> int: ...
    async def install(self, thread: Thread, now: datetime) -> bool: ...
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
        """Bring the copy up to a committed append (in place at ``base``, else fenced);
        with ``source``, announce ``(thread, version)`` too, in the same round trip where
        the tier can. ``after``: the copy's state after the write, if the writer knows
        it (it holds the base version)."""
        ...

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
        """As ``append``, for a pop or clear that removed turns ``seqs``."""
        ...

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
        """As ``append``, for a saved compaction summary."""
        ...

    async def claim(self, name: str, thread_id: str, token: str, ttl_seconds: float) -> bool:
        """Take a claim that expires (at most one holder across instances); True if taken."""
        ...

    async def release_claim(self, name: str, thread_id: str, token: str) -> None: ...
    async def fence(self, thread_id: str, version: int) -> bool: ...
    async def drop(self, thread_id: str) -> None: ...
    async def publish(self, thread_id: str, version: int, source: str) -> int: ...
    def invalidations(self) -> AsyncIterator[Subscribed | Alive | Invalidation]:
        """``Subscribed`` once the server confirmed, then one ``Invalidation`` per message
        and one ``Alive`` per answered heartbeat.

        Raises ``L2Error`` when the subscription breaks or Redis stays silent.
        """
        ...
