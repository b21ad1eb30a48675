"""L1: an in-process cache of decoded, immutable ``Thread`` objects.

Bounded by item count and by (estimated) bytes, with a TTL; a hit costs a dict
lookup and no decoding. It never replaces a copy with an older version, so a slow
reader cannot undo a newer write.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from typing import TYPE_CHECKING

import orjson
from cachetools import TTLCache

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from convmem.models import Thread, Turn

_TURN_OVERHEAD = 160  # bytes of object headers per turn, measured roughly with sys.getsizeof
_PATH_OVERHEAD = 50  # per file or image path: a str object's header
_THREAD_OVERHEAD = 400

_content = attrgetter("content")
_names = attrgetter("tool_name", "model_provider", "model_name", "key")
_files = attrgetter("files")
_images = attrgetter("images")
_metadata = attrgetter("metadata")
_chain = chain.from_iterable


def turns_size(turns: Sequence[Turn]) -> int:
    """An estimate of the memory held by ``turns``: everything they hold, not only content.

    Names, keys, paths and metadata count too, so no field can grow the process past
    what the byte bound allows. It runs on every cache install, so every pass is a
    C-level iteration (map, chain, filter, sum); metadata, usually empty, is measured
    as JSON only where present.
    """
    size = _TURN_OVERHEAD * len(turns) + sum(map(len, map(_content, turns)))
    size += sum(map(len, filter(None, _chain(map(_names, turns)))))
    for paths in (map(_files, turns), map(_images, turns)):
        groups = tuple(filter(None, paths))
        if groups:
            size += sum(map(len, _chain(groups))) + _PATH_OVERHEAD * sum(map(len, groups))
    if any(map(_metadata, turns)):
        size += sum(len(orjson.dumps(dict(m))) for m in map(_metadata, turns) if m)
    return size


@dataclass(frozen=True, slots=True)
class _Entry:
    thread: Thread
    size: int


class LocalCache:
    """L1. ``timer`` is injectable so TTL tests use a fake clock, never ``sleep``."""

    def __init__(
        self,
        *,
        max_items: int = 1000,
        max_bytes: int = 64 * 1024 * 1024,
        ttl: float = 300.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_items = max_items
        self._entries: TTLCache[str, _Entry] = TTLCache(
            maxsize=max_bytes, ttl=ttl, timer=timer, getsizeof=lambda e: e.size
        )

    def get(self, thread_id: str) -> Thread | None:
        entry = self._entries.get(thread_id)
        return None if entry is None else entry.thread

    def put(self, thread: Thread, *, base: Thread | None = None) -> bool:
        """Install ``thread`` unless a newer copy is cached; return whether it was installed.

        ``base`` is the copy ``thread`` extends by appended turns, if any: its size is
        then reused so an append costs O(turns added), not O(thread).
        """
        current = self._entries.get(thread.id)
        if current is not None and current.thread.version > thread.version:
            return False
        if base is not None and current is not None and current.thread is base:
            size = current.size + turns_size(thread.turns[len(base.turns) :])
        else:
            size = _THREAD_OVERHEAD + turns_size(thread.turns)
            if thread.metadata:
                size += len(orjson.dumps(dict(thread.metadata)))
        try:
            self._entries[thread.id] = _Entry(thread, size)
        except ValueError:  # larger than the whole cache: keep it out, drop any older copy
            self._entries.pop(thread.id, None)
            return False
        while len(self._entries) > self.max_items:
            self._entries.popitem()
        return True

    def discard(self, thread_id: str) -> None:
        self._entries.pop(thread_id, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """Estimated bytes held."""
        return int(self._entries.currsize)
