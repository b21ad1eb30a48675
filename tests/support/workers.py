"""Code that runs in child processes of the multi-process tests."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from convmem.models import Turn
from convmem.stores import store_from_url

if TYPE_CHECKING:
    from multiprocessing.synchronize import Barrier

    from convmem.limits import ThreadLimits


def append_concurrently(
    url: str, limits: ThreadLimits, thread_id: str, name: str, count: int, start: Barrier
) -> None:
    """Append ``count`` one-turn batches at once, after every process is ready."""

    async def main() -> None:
        async with store_from_url(url, limits=limits) as store:
            start.wait(30)  # every process connected: now they race
            await asyncio.gather(
                *(
                    store.append(
                        thread_id,
                        [Turn(role="user", content=f"{name}-{i}", key=f"{name}-{i}")],
                        owner=None,
                    )
                    for i in range(count)
                )
            )

    asyncio.run(main())
