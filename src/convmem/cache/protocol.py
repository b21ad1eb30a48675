"""What the tiered cache needs of an L2 tier, and the signals it raises.

``RedisCache`` implements ``L2Tier``; tests may stand in another. Keeping this
free of any driver import means ``import convmem`` never imports redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from convmem.models import Thread, Turn

DELETED: Final = 2**53  # the fence version of a deleted thread: nothing is ever at or above it


class L2Error(Exception):
    """The L2 tier failed (unreachable, timed out, refused); the caller degrades to the store."""


class CorruptPayload(Exception):
    """An L2 value that is not a convmem thread (foreign, truncated or garbled)."""


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
    ) -> int: ...
    async def fence(self, thread_id: str, version: int) -> bool: ...
    async def drop(self, thread_id: str) -> None: ...
    async def publish(self, thread_id: str, version: int, source: str) -> int: ...
    def invalidations(self) -> AsyncIterator[tuple[str, int, str] | None]:
        """None once subscribed, then ``(id, version, source)`` per message; raises L2Error."""
        ...
