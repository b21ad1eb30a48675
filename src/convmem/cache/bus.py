"""The invalidation listener: ``(thread id, version)`` messages from other instances.

Each ``Memory`` publishes after every write and listens for the others. While
the subscription is down this instance cannot hear of other instances' writes,
so the listener reports the loss (the tiered cache then clears and bypasses L1)
and reconnects with a bounded backoff. Answered heartbeats are reported too: they
renew the cache's ``Lease``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from convmem.cache.protocol import Alive, Invalidation, L2Error, Subscribed

if TYPE_CHECKING:
    from convmem.cache.protocol import InvalidationBus

log = logging.getLogger("convmem.cache")


class InvalidationListener:
    def __init__(
        self,
        bus: InvalidationBus,
        instance_id: str,
        *,
        on_message: Callable[[str, int], None],
        on_lost: Callable[[], None],
        on_regained: Callable[[str, float], None],
        on_alive: Callable[[float], None],
        retry_after: float = 0.1,
        max_retry_after: float = 2.0,
    ) -> None:
        self._bus = bus
        self._instance_id = instance_id
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_regained = on_regained
        self._on_alive = on_alive
        self._retry_after = retry_after
        self._max_retry_after = max_retry_after
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self.last_error: str | None = None  # why the last subscription attempt failed

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    async def start(self, wait: float = 1.0) -> None:
        """Start listening; wait up to ``wait`` seconds for the first subscription."""
        self._task = asyncio.create_task(self._run(), name="convmem-invalidations")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), wait)
        if not self.subscribed:
            why = self.last_error or f"no answer within {wait:g} s"
            log.warning(
                "Redis does not answer (%s): the invalidation channel is not subscribed, so"
                " L1 is bypassed and reads go to the store until it is; retrying",
                why,
            )

    async def wait_subscribed(self, within: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), within)
        return self.subscribed

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = self._retry_after
        while True:
            try:
                async for event in self._bus.invalidations():
                    if isinstance(event, Alive):
                        self._on_alive(event.age)
                    elif isinstance(event, Invalidation):
                        if event.source != self._instance_id:
                            self._on_message(event.thread_id, event.version)
                    elif isinstance(event, Subscribed):
                        self._on_regained(event.run_id, event.age)
                        self._subscribed.set()
                        delay = self._retry_after
            except L2Error as exc:
                self.last_error = str(exc)
                if self._subscribed.is_set():
                    self._subscribed.clear()
                    log.warning("invalidation subscription lost (%s); L1 bypassed", exc)
                    self._on_lost()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_retry_after)
