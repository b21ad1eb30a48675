"""L1: set-if-newer, bounded by items and bytes, TTL on an injected timer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from convmem.cache.local import LocalCache
from convmem.changes import extend_thread
from convmem.models import Thread, Turn
from tests.support.clock import FakeTimer

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def thread(version: int, thread_id: str | None = None, size: int = 10) -> Thread:
    turns = tuple(
        Turn(role="user", content="x" * size, seq=i, created_at=NOW) for i in range(1, version + 1)
    )
    return Thread(thread_id or str(uuid.uuid4()), turns, "chat", None, None, {}, NOW, NOW, NOW)


def test_an_older_copy_never_replaces_a_newer_one() -> None:
    cache = LocalCache()
    newer = thread(3)
    older = Thread(newer.id, newer.turns[:2], "chat", None, None, {}, NOW, NOW, NOW)
    assert cache.put(newer)
    assert not cache.put(older)
    assert cache.get(newer.id) is newer


def test_an_equal_or_newer_copy_replaces_the_cached_one() -> None:
    cache = LocalCache()
    first = thread(2)
    cache.put(first)
    extended = extend_thread(first, (Turn(role="user", content="y", seq=3),), NOW, NOW)
    assert cache.put(extended, base=first)
    assert cache.get(first.id) is extended


def test_the_item_bound_evicts_the_least_recently_used() -> None:
    cache = LocalCache(max_items=3)
    threads = [thread(1) for _ in range(4)]
    for t in threads[:3]:
        cache.put(t)
    cache.get(threads[0].id)  # touch the oldest so it is kept
    cache.put(threads[3])
    assert len(cache) == 3
    assert cache.get(threads[1].id) is None
    assert cache.get(threads[0].id) is threads[0]


def test_the_byte_bound_evicts_and_counts_bytes() -> None:
    cache = LocalCache(max_bytes=20_000)
    big = [thread(2, size=4000) for _ in range(4)]
    for t in big:
        cache.put(t)
    assert cache.bytes <= 20_000
    assert len(cache) < 4
    assert cache.get(big[-1].id) is big[-1]


def test_a_thread_larger_than_the_cache_is_not_kept() -> None:
    cache = LocalCache(max_bytes=1000)
    small = thread(1)
    cache.put(small)
    huge = thread(2, small.id, size=5000)
    assert not cache.put(huge)
    assert cache.get(small.id) is None  # the older copy is gone too: it is stale


def test_an_extension_costs_only_the_new_turns() -> None:
    cache = LocalCache()
    base = thread(40, size=1000)
    cache.put(base)
    before = cache.bytes
    extended = extend_thread(base, (Turn(role="user", content="z" * 100, seq=41),), NOW, NOW)
    cache.put(extended, base=base)
    assert 100 < cache.bytes - before < 400


def test_entries_expire_after_the_ttl() -> None:
    timer = FakeTimer()
    cache = LocalCache(ttl=300, timer=timer)
    t = thread(1)
    cache.put(t)
    timer.now += 299
    assert cache.get(t.id) is t
    timer.now += 2
    assert cache.get(t.id) is None
