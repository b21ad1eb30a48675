"""A sealed turn is bound to its place (issue 29, item 5): its thread, role and seq, and
the compaction summary to being the summary. Whoever can write the database or Redis
can still delete or roll back rows, but cannot move a ciphertext to another place of the
thread unnoticed: every move below is a ``DecryptionError`` for that thread (from the
store) or a dropped copy read again from the store (from Redis).

And what binding costs the writer: a turn is sealed before the store numbers it, so the
writer seals for the seqs it expects and the store refuses others (``SeqTakenError``);
the refusals are counted here, on the paths that pay them.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pybase64
import pytest
import redis

from convmem import Memory, Turn
from convmem.encryption import Encryption, new_key
from convmem.encryption.sealer import sealed_payload
from convmem.errors import DecryptionError, SeqTakenError
from convmem.key_rotation import rotate_keys
from convmem.models import Thread
from tests.conftest import Backend, MemoryFactory
from tests.support.tampering import alter, stored_content

KEY = new_key()


def exchange(tag: str) -> list[Turn]:
    return [
        Turn(role="user", content=f"question {tag}", key=f"u{tag}"),
        Turn(role="assistant", content=f"answer {tag}"),
    ]


async def four_turns(memory: Memory) -> Thread:
    """A thread of user 1, assistant 2, user 3, assistant 4, read back in order."""
    thread = await memory.create_thread(turns=exchange("1"))
    thread = await memory.add_turns(thread.id, exchange("2"))
    assert [t.content for t in thread.turns] == [
        "question 1",
        "answer 1",
        "question 2",
        "answer 2",
    ]
    return thread


async def refused(memory: Memory, thread_id: str) -> DecryptionError:
    await memory.evict(thread_id)
    with pytest.raises(DecryptionError) as caught:
        await memory.get_thread(thread_id)
    assert caught.value.thread_id == thread_id
    return caught.value


@pytest.mark.parametrize(
    "attack",
    [
        "swap two user turns",
        "replay a turn over another",
        "renumber two turns",
        "the summary as a system turn",
        "a system turn as the summary",
    ],
)
async def test_a_ciphertext_moved_within_its_thread_fails_authentication(
    backend: Backend, pg_name: str | None, attack: str
) -> None:
    memory = Memory(backend.store, encryption=Encryption([KEY]))
    await memory.open()
    thread = await four_turns(memory)
    system = await memory.add_turns(thread.id, [Turn(role="system", content="be brief")])
    summary = memory.sealing.seal_summary(
        thread.id, Turn(role="system", content="they asked twice"), covers_to_seq=2
    )
    await backend.store.save_summary(
        thread.id, summary, covers_to_seq=2, base_version=system.version, owner=None
    )
    await memory.evict(thread.id)
    whole = await memory.get_thread(thread.id)  # untouched, it reads
    assert whole is not None
    assert whole.summary is not None
    assert whole.summary.content == "they asked twice"
    turns = stored_content(backend, pg_name, "convmem_turns", thread.id)
    (kept,) = stored_content(backend, pg_name, "convmem_summaries", thread.id).values()
    turn_at = "UPDATE convmem_turns SET content = %s WHERE thread_id = %s AND seq = %s"
    match attack:
        case "swap two user turns":
            alter(backend, pg_name, turn_at, turns[3], thread.id, 1)
            alter(backend, pg_name, turn_at, turns[1], thread.id, 3)
        case "replay a turn over another":
            alter(backend, pg_name, turn_at, turns[1], thread.id, 3)
        case "renumber two turns":  # the rows keep their ciphertext and change places
            seq_of = "UPDATE convmem_turns SET seq = %s WHERE thread_id = %s AND seq = %s"
            alter(backend, pg_name, seq_of, 1000, thread.id, 2)
            alter(backend, pg_name, seq_of, 2, thread.id, 4)
            alter(backend, pg_name, seq_of, 4, thread.id, 1000)
        case "the summary as a system turn":
            alter(backend, pg_name, turn_at, kept, thread.id, 5)
        case "a system turn as the summary":
            summary_of = "UPDATE convmem_summaries SET content = %s WHERE thread_id = %s"
            alter(backend, pg_name, summary_of, turns[5], thread.id)
    error = await refused(memory, thread.id)
    assert "failed authentication" in str(error)
    assert memory.stats.decryption_errors == 1
    await memory.aclose()


async def test_turn_fields_moved_in_redis_are_dropped_and_the_store_serves_them_in_order(
    memories: MemoryFactory, redis_url: str, redis_prefix: str
) -> None:
    writer = await memories(encryption_keys=[KEY])
    thread = await four_turns(writer)
    client = redis.Redis.from_url(redis_url)
    try:
        (key,) = [k for k in client.scan_iter(f"{redis_prefix}*") if client.type(k) == b"hash"]
        first, third = client.hget(key, "1"), client.hget(key, "3")
        assert first is not None
        assert third is not None
        client.hset(key, mapping={"1": third, "3": first})  # HSET of two fields: a swap
    finally:
        client.close()
    reader = await memories(encryption_keys=[KEY])
    read, source = await reader.lookup_thread(thread.id)
    assert source == "store"
    assert read is not None
    assert [t.content for t in read.turns] == [t.content for t in thread.turns]
    assert reader.stats.l2_corrupt == 1
    assert reader.stats.decryption_errors == 0  # the store's copy is intact


async def test_a_writer_that_missed_a_write_seals_again_at_one_more_round_trip(
    backend: Backend,
) -> None:
    """Two instances with no Redis between them: the one that did not see the other's
    append seals for seqs already taken, is refused, and seals again; nothing is lost,
    every turn opens at its place."""
    seen, blind = (Memory(backend.store, encryption=Encryption([KEY])) for _ in range(2))
    thread = await seen.create_thread(turns=exchange("1"))
    assert await blind.get_thread(thread.id) is not None  # blind knows version 2
    await seen.add_turns(thread.id, exchange("2"))  # 4: blind is not told
    writes = blind.stats.store_writes
    after = await blind.add_turns(thread.id, exchange("3"))
    assert blind.stats.store_writes - writes == 2  # refused once, then written
    assert [t.seq for t in after.turns] == [1, 2, 3, 4, 5, 6]
    writes = blind.stats.store_writes
    await blind.add_turns(thread.id, exchange("4"))  # now it knows: one write
    assert blind.stats.store_writes - writes == 1
    await seen.evict(thread.id)
    read = await seen.get_thread(thread.id)
    assert read is not None
    assert [t.content for t in read.turns][::2] == [f"question {n}" for n in "1234"]


async def test_concurrent_sealed_appends_in_one_process_take_turns_without_refusals(
    backend: Backend,
) -> None:
    memory = Memory(backend.store, encryption=Encryption([KEY]))
    thread = await memory.create_thread()
    writes = memory.stats.store_writes
    await asyncio.gather(*(memory.add_turns(thread.id, exchange(str(n))) for n in range(10)))
    assert memory.stats.store_writes - writes == 10
    await memory.evict(thread.id)
    read = await memory.get_thread(thread.id)
    assert read is not None
    assert [t.seq for t in read.turns] == list(range(1, 21))
    assert sorted(t.content for t in read.turns if t.role == "user") == sorted(
        f"question {n}" for n in range(10)
    )


async def test_a_retried_sealed_append_is_one_round_trip_and_inserts_nothing(
    backend: Backend,
) -> None:
    memory = Memory(backend.store, encryption=Encryption([KEY]))
    thread = await memory.create_thread(turns=exchange("1"))
    batch = [
        Turn(role="user", content="again?", key="r1:u"),
        Turn(role="assistant", content="a", key="r1:a"),
    ]
    first = await memory.add_turns(thread.id, batch)
    writes = memory.stats.store_writes
    again = await memory.add_turns(thread.id, batch)  # the client never saw the answer
    assert memory.stats.store_writes - writes == 1
    assert again.version == first.version
    assert [t.seq for t in again.turns] == [1, 2, 3, 4]


def legacy_seal(encryption: Encryption, thread_id: str, turn: Turn) -> str:
    """A turn as convmem sealed it before seqs were bound (``cm1.``, thread and role only)."""
    key = encryption.ring.current
    data = [b"convmem turn v1", thread_id.encode(), turn.role.encode()]
    ciphertext = encryption.ring.cipher(key.id, thread_id).encrypt(sealed_payload(turn), data)
    return f"cm1.{key.id}.{pybase64.b64encode(ciphertext).decode()}"


async def test_legacy_turns_are_read_until_rotation_binds_them_to_their_seq(
    backend: Backend, pg_name: str | None
) -> None:
    encryption = Encryption([KEY])
    memory = Memory(backend.store, encryption=encryption)
    thread = await four_turns(memory)
    turn_at = "UPDATE convmem_turns SET content = %s WHERE thread_id = %s AND seq = %s"
    for turn in thread.turns[:2]:
        alter(
            backend, pg_name, turn_at, legacy_seal(encryption, thread.id, turn), thread.id, turn.seq
        )
    await memory.evict(thread.id)
    read = await memory.get_thread(thread.id)  # accept_legacy is on by default
    assert read is not None
    assert [t.content for t in read.turns] == [t.content for t in thread.turns]
    strict = Memory(backend.store, encryption=Encryption([KEY], accept_legacy=False))
    error = await refused(strict, thread.id)
    assert "CONVMEM_ENCRYPTION_ACCEPT_LEGACY" in str(error)
    backend.clock.advance(timedelta(minutes=2))  # past the REST retry records
    report = await rotate_keys(memory)
    assert (report.resealed, report.rows, report.failed) == (1, 2, [])
    stored = stored_content(backend, pg_name, "convmem_turns", thread.id)
    assert all(content.startswith("cm2.") for content in stored.values())
    read = await strict.get_thread(thread.id)
    assert read is not None
    assert [t.content for t in read.turns] == [t.content for t in thread.turns]


@pytest.mark.parametrize("write", ["append", "rewrite"])
async def test_the_store_puts_sealed_turns_at_their_seq_or_nowhere(
    backend: Backend, write: str
) -> None:
    """The contract under ``seqs_bound``, on the raw store: the wrong seqs are refused
    with the version and change nothing; the right ones land where they were sealed."""
    memory = Memory(backend.store, encryption=Encryption([KEY]))
    thread = await memory.create_thread(turns=exchange("1"))  # version 2
    store, sealing = backend.store, memory.sealing
    first = 3 if write == "append" else 4  # a rewrite takes a version for its removal

    async def send(first_seq: int) -> int:
        sealed = sealing.seal_turns(thread.id, exchange("2"), first_seq=first_seq)
        if write == "append":
            return (await store.append(thread.id, sealed, owner=None, seqs_bound=True)).version
        rewritten = await store.rewrite(thread.id, sealed, after_seq=2, owner=None, seqs_bound=True)
        return rewritten.version

    for wrong in (first - 1, first + 1):
        with pytest.raises(SeqTakenError) as caught:
            await send(wrong)
        assert caught.value.version == 2
        assert caught.value.thread_id == thread.id
    unchanged = await store.load(thread.id, owner=None)
    assert unchanged is not None
    assert unchanged.version == 2
    assert await send(first) == first + 1
    await memory.evict(thread.id)
    read = await memory.get_thread(thread.id)
    assert read is not None
    assert [t.content for t in read.turns] == ["question 1", "answer 1", "question 2", "answer 2"]
