"""Per-thread watermarks: the highest version this instance has written, served or been told of.

A copy below its thread's watermark is stale wherever it comes from (L1 or L2).
The map is bounded like L1; forgetting a thread's watermark also forgets its L1
copy (through ``on_forget``), so a stale copy can never outlive what made it stale.
"""

from __future__ import annotations

from collections.abc import Callable

from cachetools import LRUCache


class _Bounded(LRUCache[str, int]):
    def __init__(self, maxsize: int, on_forget: Callable[[str], None]) -> None:
        super().__init__(maxsize)
        self._on_forget = on_forget

    def popitem(self) -> tuple[str, int]:
        key, value = super().popitem()
        self._on_forget(key)
        return key, value


class Watermarks:
    def __init__(self, max_items: int, on_forget: Callable[[str], None]) -> None:
        self._marks = _Bounded(max_items, on_forget)

    def get(self, thread_id: str) -> int:
        return self._marks.get(thread_id, 0)

    def raise_to(self, thread_id: str, version: int) -> None:
        if version > self._marks.get(thread_id, 0):
            self._marks[thread_id] = version
