"""What the tiered cache needs of an L2 tier, the signals it raises, and its named results.

``RedisCache`` implements ``L2Tier``; ``GuardedL2`` wraps any ``L2Tier`` in the fault
policy and offers the same calls (its writes always announced as its own instance's);
tests may stand in another. Keeping this free of any
driver import means ``import convmem`` never imports redis.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from convmem.changes import Change, CopyState
    from convmem.models import Thread


class L2Error(Exception):
    """The L2 tier failed (unreachable, timed out, refused); the caller degrades to the store."""


class L2Skipped(L2Error):
    """The call was not made: the circuit is open after a recent failure."""


class CorruptPayload(Exception):
    """An L2 value that is not a convmem thread (foreign, truncated or garbled)."""


class WriteOutcome(enum.Enum):
    """What a committed change did to the L2 copy of a thread."""

    EXTENDED = "extended"  # the copy was at the writer's base version: changed in place
    INSTALLED = "installed"  # a whole thread (created or replaced) took the copy's place
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
    async def apply(
        self,
        change: Change,
        now: datetime,
        *,
        source: str,
        after: CopyState | None = None,
    ) -> WriteOutcome:
        """Bring the copy up to a committed change: in place when it is at the change's
        base version (and, with tags, ``after`` tells the state it leaves: the writer
        holds the base), else fence it at the change's version; and announce the change
        as written by ``source`` (``changes.announced``), in the same round trip where
        the tier can. A ``Created`` or ``Replaced`` thread is installed whole."""
        ...

    async def drop(self, thread_id: str) -> None: ...
    @property
    def claims(self) -> Claims:
        """Claims across instances, beside the threads' keys."""
        ...

    @property
    def bus(self) -> InvalidationBus:
        """Where writes are announced and heard."""
        ...


class Claims(Protocol):
    """Claims that expire, held by at most one instance at a time (the compaction of a
    thread, so that one instance calls the model for it)."""

    async def take(self, name: str, thread_id: str, token: str, ttl_seconds: float) -> bool:
        """Take the claim ``name`` on a thread for ``ttl_seconds`` unless another holder
        has it; True if taken."""
        ...

    async def release(self, name: str, thread_id: str, token: str) -> None:
        """End the claim if ``token`` still holds it (it may have expired and been retaken)."""
        ...


class InvalidationBus(Protocol):
    def invalidations(self) -> AsyncIterator[Subscribed | Alive | Invalidation]:
        """``Subscribed`` once the server confirmed, then one ``Invalidation`` per message
        and one ``Alive`` per answered heartbeat.

        Raises ``L2Error`` when the subscription breaks or Redis stays silent.
        """
        ...
