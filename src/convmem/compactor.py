"""``Compactor``: compacts threads in the background after requests.

It is the scheduler that calls ``Memory.compact`` (``convmem.compaction`` holds the policy,
the plan and the summarisers, which ``Memory`` and ``Settings`` use); keeping it apart
keeps the compaction rules free of ``Memory``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from convmem.compaction import Summariser, plan_compaction
from convmem.compaction_policy import CompactionPolicy
from convmem.errors import ConvMemError, StaleSummaryError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from convmem.memory import Memory
    from convmem.models import Thread

log = logging.getLogger("convmem.compaction")


class Compactor:
    """Compacts threads in the background after requests, one task per thread at a time.

    ``schedule`` returns at once; ``drain`` waits for what is running (tests, shutdown);
    ``aclose`` cancels it (nothing is written until the summary is saved whole, so a
    cancelled or crashed compaction leaves the thread as it was).
    """

    def __init__(
        self,
        memory: Memory,
        summariser: Summariser,
        *,
        max_tokens: int,
        policy: CompactionPolicy | None = None,
    ) -> None:
        self.memory = memory
        self.summariser = summariser
        self.max_tokens = max_tokens
        self.policy = policy or CompactionPolicy()
        self._running: dict[tuple[str, str | None], asyncio.Task[None]] = {}

    def schedule(self, thread: Thread, ancestors: Sequence[Thread], owner: str | None) -> bool:
        """Start compacting ``thread`` if it needs it and none is running; True if started."""
        key = (thread.id, owner)
        if key in self._running:
            return False
        if (
            plan_compaction(thread, ancestors, max_tokens=self.max_tokens, policy=self.policy)
            is None
        ):
            return False
        task = asyncio.get_running_loop().create_task(
            self._compact(thread.id, owner), name=f"convmem-compact-{thread.id}"
        )
        self._running[key] = task
        task.add_done_callback(lambda _: self._running.pop(key, None))
        return True

    async def _compact(self, thread_id: str, owner: str | None) -> None:
        try:
            await self.memory.compact(
                thread_id,
                owner=owner,
                summariser=self.summariser,
                max_tokens=self.max_tokens,
                policy=self.policy,
            )
        except StaleSummaryError:
            log.info("thread %s was compacted or rewound meanwhile; not saved", thread_id)
        except (ConvMemError, OSError) as exc:
            log.warning("compacting thread %s failed (it stays as it was): %s", thread_id, exc)
        except Exception:  # a background task has no caller to raise to: log it whole
            log.exception("compacting thread %s failed (it stays as it was)", thread_id)

    @property
    def running(self) -> int:
        return len(self._running)

    async def drain(self) -> None:
        """Wait for every running compaction to end."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def aclose(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
