"""An event loop of its own on a daemon thread, for synchronous callers of async code.

pal calls its storage synchronously, often from inside its own running event loop; the
Memory runs here instead, so such a call blocks only its caller, for at most the
timeout, and never waits on the loop it is running on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], *, timeout: float, what: str) -> T:
        """The coroutine's result, run on this loop; ``TimeoutError`` (the work is
        cancelled) when it takes longer than ``timeout`` seconds."""
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError(f"{what}: called from convmem's own loop, which would deadlock")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"{what} took longer than {timeout:g} s") from None

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()
