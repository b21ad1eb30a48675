"""``convmem rotate-keys``: seal every stored thread under the newest key, online.

Readers decrypt with any configured key meanwhile, so no instance stops: put the new
key first in ``CONVMEM_ENCRYPTION_KEYS`` everywhere (keeping the old one), run the
rotation, then drop the old key. Each thread is one read and at most one write that
rewrites only rows still holding what was read (turns never change otherwise), so
appends running at the same time are never overwritten, and a thread already under the
newest key costs a read only. An interrupted run is resumed with ``after`` (the last
id it reported) or simply run again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from convmem.errors import DecryptionError, StoreError

if TYPE_CHECKING:
    from convmem.memory import Memory


@dataclass(slots=True)
class Rotation:
    """How far a rotation got."""

    scanned: int = 0
    resealed: int = 0  # threads that had something under an older key (or in clear)
    rows: int = 0  # turn and header rows rewritten
    gone: int = 0  # threads deleted or expired since the scan (purge removes the expired)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (thread id, why)
    last_id: str | None = None  # resume after this id


async def rotate_keys(
    memory: Memory,
    *,
    after: str | None = None,
    batch: int = 100,
    on_batch: Callable[[Rotation], None] | None = None,
) -> Rotation:
    """Reseal every thread after ``after`` (all of them by default), ``batch`` per page.

    A thread that cannot be opened (a missing key, tampering) or whose write fails is
    listed in ``failed`` and the rotation goes on with the others. A run that fails none
    records that the store holds sealed data under the newest key only, so a process
    configured without the older keys may then start (``convmem.key_check``).
    """
    progress = Rotation(last_id=after)
    while True:
        page = await memory.scan_threads(after=progress.last_id, limit=batch)
        for thread_id, owner in page:
            progress.scanned += 1
            try:
                changed = await memory.reseal_thread(thread_id, owner=owner)
            except (DecryptionError, StoreError) as exc:
                progress.failed.append((thread_id, str(exc)))
            else:
                if changed is None:
                    progress.gone += 1
                elif changed:
                    progress.resealed += 1
                    progress.rows += changed
            progress.last_id = thread_id
        if on_batch is not None and page:
            on_batch(progress)
        if len(page) < batch:
            if not progress.failed:
                await memory.forget_older_sealing_keys()
            return progress
