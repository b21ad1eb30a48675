"""Redis is not trusted for access, order or completeness (issue 29, item 4).

Each attack edits the Redis hash of a thread as whoever can write that Redis would (a
shared cache, a loose ACL), with plain Redis commands, then an instance that holds no
copy of its own reads: every edit is detected by the tags (``cache/tags.py``), the copy
is dropped and counted, and the store's own thread is served. Run with a cache key
(encryption off) and with encryption at rest (the tag key derived from its key).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import cast

import orjson
import pytest
import redis

from convmem import Memory, Thread, Turn
from convmem.cache.codec import (
    decode_thread,
    encode_header,
    encode_summary,
    encode_turn,
    header_tag,
    state_tag,
)
from convmem.cache.protocol import CorruptPayload
from convmem.cache.tags import CacheTags
from convmem.encryption import new_key
from convmem.records import to_micros
from tests.conftest import MemoryFactory

KEY = new_key()


def exchange(tag: str) -> list[Turn]:
    return [
        Turn(role="user", content=f"question {tag}", key=f"u{tag}"),
        Turn(role="assistant", content=f"answer {tag}"),
    ]


@pytest.fixture(params=["cache key", "encryption"])
def keyed(request: pytest.FixtureRequest) -> dict[str, object]:
    """The settings that give the instances their tag key."""
    if request.param == "cache key":
        return {"cache_key": KEY}
    return {"encryption_keys": [KEY]}


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def hash_of(raw: redis.Redis, prefix: str, thread_id: str) -> str:
    key = f"{prefix}{{{thread_id}}}"
    assert raw.type(key) == b"hash"
    return key


async def served_from_the_store(reader: Memory, thread_id: str, owner: str | None) -> list[str]:
    read, source = await reader.lookup_thread(thread_id, owner=owner)
    assert source == "store"
    assert read is not None
    assert reader.stats.l2_corrupt == 1
    return [t.content for t in read.turns]


async def test_an_owner_edited_in_redis_reads_nothing_of_another_owners_thread(
    memories: MemoryFactory, keyed: dict[str, object], raw: redis.Redis, redis_prefix: str
) -> None:
    alice = await memories(**keyed)
    thread = await alice.create_thread(turns=exchange("1"), owner="alice")
    key = hash_of(raw, redis_prefix, thread.id)
    header = orjson.loads(raw.hget(key, "h") or b"{}")
    assert header["owner"] == "alice"
    raw.hset(key, "h", orjson.dumps({**header, "owner": "bob"}))
    bob = await memories(**keyed)  # an instance with no copy of its own
    assert await bob.get_thread(thread.id, owner="bob") is None
    assert bob.stats.l2_corrupt == 1  # the edited copy was dropped, not served
    assert (await bob.lookup_thread(thread.id, owner="alice"))[1] == "store"


async def test_a_version_edited_in_redis_loses_no_acknowledged_turn(
    memories: MemoryFactory, keyed: dict[str, object], raw: redis.Redis, redis_prefix: str
) -> None:
    first = await memories(**keyed)
    thread = await first.create_thread(turns=exchange("1"))
    raw.hset(hash_of(raw, redis_prefix, thread.id), "v", 1000)
    writer = await memories(**keyed)  # holds no copy: it reads through L2 after writing
    written = await writer.add_turns(thread.id, exchange("2"))
    assert written.version == 4
    assert [t.content for t in written.turns][-2:] == ["question 2", "answer 2"]
    reader = await memories(**keyed)
    read = await reader.get_thread(thread.id)
    assert read is not None
    assert read.version == 4
    assert len(read.turns) == 4


@pytest.mark.parametrize(
    "attack",
    [
        "delete a turn and fix the count",
        "edit a turn",
        "swap two turns",
        "a header from another thread",
        "a turn from another thread",
        "drop the tags",
    ],
)
async def test_an_edited_copy_is_dropped_and_the_store_serves_every_turn(
    memories: MemoryFactory,
    keyed: dict[str, object],
    raw: redis.Redis,
    redis_prefix: str,
    attack: str,
) -> None:
    writer = await memories(**keyed)
    thread = await writer.create_thread(turns=exchange("1"))
    thread = await writer.add_turns(thread.id, exchange("2"))
    other = await writer.create_thread(turns=exchange("x"))
    key = hash_of(raw, redis_prefix, thread.id)
    other_key = hash_of(raw, redis_prefix, other.id)
    match attack:
        case "delete a turn and fix the count":
            raw.hdel(key, "3")
            raw.hincrby(key, "n", -1)
        case "edit a turn":
            value = cast("bytes", raw.hget(key, "1"))
            edited = value.replace(b"question 1", b"question 9")
            if edited == value:  # sealed: flip a byte of the ciphertext instead
                edited = value[:60] + bytes([value[60] ^ 1]) + value[61:]
            raw.hset(key, "1", edited)
        case "swap two turns":
            one, three = raw.hget(key, "1"), raw.hget(key, "3")
            assert one is not None
            assert three is not None
            raw.hset(key, mapping={"1": three, "3": one})
        case "a header from another thread":
            h, a = raw.hget(other_key, "h"), raw.hget(other_key, "a")
            assert h is not None
            assert a is not None
            raw.hset(key, mapping={"h": h, "a": a})
        case "a turn from another thread":
            foreign = raw.hget(other_key, "1")
            assert foreign is not None
            raw.hset(key, "1", foreign)
        case "drop the tags":
            raw.hset(key, mapping={"a": "-", "t": "-"})
    reader = await memories(**keyed)
    assert await served_from_the_store(reader, thread.id, None) == [
        "question 1",
        "answer 1",
        "question 2",
        "answer 2",
    ]


async def test_copies_without_a_tag_key_are_trusted_and_the_log_says_so(
    memories: MemoryFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="convmem"):
        await memories()
    assert "Redis copies are not authenticated" in caplog.text
    assert "CONVMEM_CACHE_KEY" in caplog.text


def test_a_copy_missing_its_summary_or_tagged_under_another_key_does_not_decode() -> None:
    """Unit level: the state tag binds the summary's seq, and the key is the deployment's."""
    tags = CacheTags.from_text(KEY, setting="test")
    at = datetime(2026, 12, 3, tzinfo=UTC)
    turns = (Turn(role="user", content="hello", seq=1, created_at=at),)
    summary = Turn(role="system", content="so far", seq=1, created_at=at)
    thread = Thread(
        "0f8c2a4e-6b1d-4c3a-9e2f-5a7b8c9d0e1f",
        turns,
        None,
        None,
        "alice",
        {},
        at,
        at,
        at + timedelta(hours=1),
        summary=summary,
    )
    header = encode_header(thread)
    u, e = to_micros(thread.updated_at), to_micros(thread.expires_at)
    fields = {
        b"v": b"1",
        b"n": b"1",
        b"h": header,
        b"u": b"%d" % u,
        b"e": b"%d" % e,
        b"a": header_tag(tags, thread.id, header),
        b"t": state_tag(tags, thread.id, 1, 1, 1, u, e),
        b"s": encode_summary(summary, thread.id, tags),
        b"1": encode_turn(turns[0], thread.id, tags),
    }
    assert decode_thread(thread.id, fields, tags) == thread
    stranger = CacheTags.from_text(new_key(), setting="test")
    with pytest.raises(CorruptPayload, match="tag does not match"):
        decode_thread(thread.id, fields, stranger)
    del fields[b"s"]
    with pytest.raises(CorruptPayload, match="state"):
        decode_thread(thread.id, fields, tags)  # tagged as summarised through 1
