"""Encryption at rest on every store and in Redis: what is stored, what comes back, and
what happens to altered, moved or unkeyed ciphertext.

The raw checks read what an attacker with the database or Redis would read: the rows
by SQL (and, for Supabase, the REST functions' answers), the Redis hash by HGETALL.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
from mcp import Client

from convmem import Memory, Turn
from convmem.encryption import Encryption, new_key
from convmem.errors import (
    ConfigurationError,
    DecryptionError,
    IdempotencyConflictError,
)
from convmem.key_rotation import rotate_keys
from convmem.providers.echo import EchoProvider
from convmem.server.mcp_app import build_mcp
from convmem.server.metrics import Metrics
from convmem.server.service import ConversationService
from convmem.settings import Settings
from convmem.stores.base import Resealed
from convmem_bench.postgrest_standin import PostgrestStandIn
from tests.conftest import Backend, MemoryFactory
from tests.support.services import admin_connect, create_database, drop_database, pg_url
from tests.support.tampering import alter

SECRET = "sk-live-TOPSECRET-4242"
KEY_A, KEY_B = new_key(), new_key()


def secret_turns(tag: str = "") -> list[Turn]:
    return [
        Turn(
            role="user",
            content=f"my key is {SECRET}{tag}",
            files=(f"/home/{SECRET}/notes.txt",),
            images=(f"/tmp/{SECRET}.png",),
            metadata={"note": SECRET},
            tool_name=f"tool-{SECRET}",
            model_name=f"model-{SECRET}",
            key=f"user-{tag}",
        ),
        Turn(role="assistant", content=f"noted: {SECRET}{tag}", model_provider=SECRET),
    ]


def stored_text(backend: Backend, pg_database: str | None) -> str:
    """Every byte of every convmem row, as the database holds it."""
    if backend.name == "sqlite":
        path = backend.url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            rows = [
                *conn.execute("SELECT * FROM convmem_threads"),
                *conn.execute("SELECT * FROM convmem_turns"),
                *conn.execute("SELECT * FROM convmem_summaries"),
            ]
        return repr(rows)
    assert pg_database is not None
    with admin_connect(pg_database) as conn:
        tables = ("convmem_threads", "convmem_turns", "convmem_summaries", "convmem_rpc_requests")
        rows = [conn.execute(f"SELECT t::text FROM {table} t").fetchall() for table in tables]
    return repr(rows)


async def test_no_store_holds_plaintext_and_every_field_comes_back(
    backend: Backend, pg_name: str | None, request: pytest.FixtureRequest
) -> None:
    memory = Memory(backend.store, encryption=Encryption([KEY_A]))
    await memory.open()
    thread = await memory.create_thread(
        tool_name="chat", owner="ann", metadata={"project": SECRET}, turns=secret_turns("1")
    )
    await memory.add_turns(thread.id, secret_turns("2"), owner="ann")
    await memory.evict(thread.id)
    loaded = await memory.get_thread(thread.id, owner="ann")
    assert loaded is not None
    expected = [*secret_turns("1"), *secret_turns("2")]
    for got, want in zip(loaded.turns, expected, strict=True):
        assert (got.role, got.content, got.files, got.images, dict(got.metadata)) == (
            want.role,
            want.content,
            want.files,
            want.images,
            dict(want.metadata),
        )
        assert (got.tool_name, got.model_name, got.model_provider, got.key) == (
            want.tool_name,
            want.model_name,
            want.model_provider,
            want.key,
        )
    assert dict(loaded.metadata) == {"project": SECRET}
    page = await memory.list_threads(owner="ann")
    assert dict(page.threads[0].metadata) == {"project": SECRET}
    assert SECRET in await memory.export_thread(thread.id, owner="ann", format="json")

    raw = stored_text(backend, pg_name)
    assert thread.id in raw  # the rows are there, in clear where the store needs it
    assert "user-1" in raw  # idempotency keys stay in clear (documented)
    assert SECRET not in raw
    if backend.name == "supabase":  # and what the REST API hands out
        standin: PostgrestStandIn = request.getfixturevalue("postgrest")
        answer = httpx.post(  # noqa: ASYNC210 (a test's one blocking look at the REST API)
            f"{standin.url.removeprefix('supabase+')}/rest/v1/rpc/convmem_load",
            json={"p_id": thread.id, "p_owner": "ann", "p_since": 0, "p_now": "2000-01-01T00:00Z"},
            headers={
                "apikey": standin.service_key,
                "authorization": f"Bearer {standin.service_key}",
            },
        )
        assert answer.status_code == 200
        assert thread.id in answer.text
        assert SECRET not in answer.text
    await memory.aclose()


async def test_idempotency_is_exact_under_encryption(backend: Backend) -> None:
    memory = Memory(backend.store, encryption=Encryption([KEY_A]))
    await memory.open()
    thread = await memory.create_thread(turns=secret_turns("1"))
    trips = backend.round_trips()
    again = await memory.add_turns(thread.id, secret_turns("1")[:1])  # the retried key
    assert backend.round_trips() - trips == 1
    assert again.version == 2
    with pytest.raises(IdempotencyConflictError):  # the key reused for other content
        await memory.add_turns(thread.id, [Turn(role="user", content="other", key="user-1")])
    # A second process with the same keys retries too: nothing is duplicated.
    other = Memory(backend.store, encryption=Encryption([KEY_A]))
    assert (await other.add_turns(thread.id, secret_turns("1")[:1])).version == 2
    await memory.aclose()


async def test_redis_holds_no_plaintext_and_another_instance_reads_it(
    memories: MemoryFactory, redis_url: str, redis_prefix: str
) -> None:
    first = await memories(encryption_keys=[KEY_A])
    second = await memories(encryption_keys=[KEY_A])
    thread = await first.create_thread(metadata={"m": SECRET}, turns=secret_turns("1"))
    await first.add_turns(thread.id, secret_turns("2"))
    client = redis.Redis.from_url(redis_url)
    try:
        keys = [k for k in client.scan_iter(f"{redis_prefix}*") if client.type(k) == b"hash"]
        assert [k for k in keys if thread.id.encode() in k]
        dumped = repr([client.hgetall(k) for k in keys])
        assert SECRET not in dumped
    finally:
        client.close()
    read, source = await second.lookup_thread(thread.id)
    assert source == "l2"
    assert read is not None
    assert read.turns[2].content == f"my key is {SECRET}2"
    assert dict(read.metadata) == {"m": SECRET}


async def test_an_l2_copy_that_fails_to_open_is_dropped_and_the_store_serves(
    memories: MemoryFactory, redis_url: str, redis_prefix: str
) -> None:
    writer = await memories(encryption_keys=[KEY_A])
    thread = await writer.create_thread(turns=secret_turns("1"))
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        (key,) = [k for k in client.scan_iter(f"{redis_prefix}*") if client.type(k) == "hash"]
        fields = client.hgetall(key)
        turn_field = next(f for f, v in fields.items() if "cm2." in v)
        client.hset(key, turn_field, str(fields[turn_field]).replace("cm2.", "cm2.0", 1))
    finally:
        client.close()
    reader = await memories(encryption_keys=[KEY_A])
    read, source = await reader.lookup_thread(thread.id)
    assert source == "store"
    assert read is not None
    assert read.turns[0].content.endswith(f"{SECRET}1")
    assert reader.stats.l2_corrupt == 1
    assert reader.stats.decryption_errors == 0


async def first_turn(backend: Backend, thread_id: str) -> str:
    """The first turn's content as the store holds it (sealed)."""
    stored = await backend.store.load(thread_id, owner=None)
    assert stored is not None
    return stored.turns[0].content


@pytest.mark.parametrize(
    "attack",
    ["flip a byte", "truncate", "move from another thread", "relabel the role", "plant cleartext"],
)
async def test_altered_ciphertext_is_a_typed_error_for_that_thread_only(
    backend: Backend, pg_name: str | None, attack: str
) -> None:
    memory = Memory(backend.store, encryption=Encryption([KEY_A]))
    await memory.open()
    victim = await memory.create_thread(turns=secret_turns("v"))
    donor = await memory.create_thread(turns=secret_turns("d"))
    bystander = await memory.create_thread(turns=secret_turns("b"))
    stored = await first_turn(backend, victim.id)
    middle = len(stored) // 2
    replacement = {
        "flip a byte": stored[:middle]
        + ("B" if stored[middle] == "A" else "A")
        + stored[middle + 1 :],
        "truncate": stored[:-12],
        "move from another thread": await first_turn(backend, donor.id),
        "plant cleartext": "obey me",
    }
    where = " WHERE thread_id = %s AND seq = 1"
    if attack == "relabel the role":
        alter(backend, pg_name, "UPDATE convmem_turns SET role = 'system'" + where, victim.id)
    else:
        update = "UPDATE convmem_turns SET content = %s" + where
        alter(backend, pg_name, update, replacement[attack], victim.id)
    await memory.evict(victim.id)
    with pytest.raises(DecryptionError) as caught:
        await memory.get_thread(victim.id)
    assert caught.value.thread_id == victim.id
    assert victim.id in str(caught.value)
    assert memory.stats.decryption_errors == 1
    await memory.evict(bystander.id)
    other = await memory.get_thread(bystander.id)
    assert other is not None
    assert other.turns[0].content.endswith(f"{SECRET}b")
    await memory.aclose()


async def test_a_missing_key_names_its_id_and_an_older_key_still_decrypts(backend: Backend) -> None:
    old = Memory(backend.store, encryption=Encryption([KEY_A]))
    thread = await old.create_thread(metadata={"m": 1}, turns=secret_turns("1"))
    stranger = Memory(backend.store, encryption=Encryption([KEY_B]))
    with pytest.raises(DecryptionError, match=Encryption([KEY_A]).current_key_id):
        await stranger.get_thread(thread.id)
    rotated = Memory(backend.store, encryption=Encryption([KEY_B, KEY_A]))
    read = await rotated.get_thread(thread.id)
    assert read is not None
    assert read.turns[1].content == f"noted: {SECRET}1"
    # New turns are sealed under the first key; the thread now holds both.
    await rotated.add_turns(thread.id, [Turn(role="user", content="after rotation")])
    with pytest.raises(DecryptionError):
        await Memory(backend.store, encryption=Encryption([KEY_A])).get_thread(thread.id)


async def test_threads_written_in_clear_need_rotation_or_the_plaintext_switch(
    backend: Backend, pg_name: str | None
) -> None:
    plain = Memory(backend.store)
    thread = await plain.create_thread(metadata={"m": SECRET}, turns=secret_turns("1"))
    with pytest.raises(DecryptionError, match="rotate-keys"):
        await Memory(backend.store, encryption=Encryption([KEY_A])).get_thread(thread.id)
    lenient = Memory(backend.store, encryption=Encryption([KEY_A], accept_plaintext=True))
    assert (await lenient.get_thread(thread.id)) is not None
    backend.clock.advance(timedelta(minutes=2))  # past any REST retry of those writes
    # Without the switch a turn in clear may have been planted: rotation refuses it.
    strict = await rotate_keys(Memory(backend.store, encryption=Encryption([KEY_A])))
    assert (strict.scanned, strict.resealed) == (1, 0)
    assert [(t, "stored in clear" in why) for t, why in strict.failed] == [(thread.id, True)]
    assert SECRET in stored_text(backend, pg_name)  # nothing was sealed
    done = await rotate_keys(
        Memory(backend.store, encryption=Encryption([KEY_A], accept_plaintext=True))
    )
    assert (done.scanned, done.resealed, done.failed) == (1, 1, [])
    assert done.rows == 3  # two turns and the metadata
    assert SECRET not in stored_text(backend, pg_name)
    read = await Memory(backend.store, encryption=Encryption([KEY_A])).get_thread(thread.id)
    assert read is not None
    assert dict(read.metadata) == {"m": SECRET}
    assert read.turns[0].files == (f"/home/{SECRET}/notes.txt",)


async def test_rotation_under_concurrent_appends_loses_nothing(
    memories: MemoryFactory, cache_backend: Backend
) -> None:
    before = await memories(encryption_keys=[KEY_A])
    threads = [
        (await before.create_thread(owner=f"o{i}", turns=secret_turns(str(i)))).id
        for i in range(12)
    ]
    writer = await memories(encryption_keys=[KEY_B, KEY_A])
    rotator = await memories(encryption_keys=[KEY_B, KEY_A])
    stop = asyncio.Event()
    appended: dict[str, int] = dict.fromkeys(threads, 2)

    async def keep_appending() -> None:
        n = 0
        while not stop.is_set():
            thread_id = threads[n % len(threads)]
            owner = f"o{threads.index(thread_id)}"
            await writer.add_turns(
                thread_id, [Turn(role="user", content=f"{SECRET} {n}")], owner=owner
            )
            appended[thread_id] += 1
            n += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(keep_appending())
    done = await rotate_keys(rotator, batch=5)
    stop.set()
    await task
    assert done.failed == []
    assert done.scanned == 12
    assert done.resealed == 12
    again = await rotate_keys(rotator)  # everything is under the newest key now
    assert (again.resealed, again.rows) == (0, 0)
    only_new = await memories(encryption_keys=[KEY_B])
    for i, thread_id in enumerate(threads):
        await only_new.evict(thread_id)
        read = await only_new.get_thread(thread_id, owner=f"o{i}")
        assert read is not None
        assert read.version == appended[thread_id]
        assert [t.seq for t in read.turns] == list(range(1, read.version + 1))


async def test_rotation_reports_a_thread_it_cannot_open_and_goes_on(backend: Backend) -> None:
    lost = Memory(backend.store, encryption=Encryption([KEY_B]))
    unreadable = await lost.create_thread(turns=secret_turns("x"))
    memory = Memory(backend.store, encryption=Encryption([KEY_A]))
    fine = await memory.create_thread(turns=secret_turns("y"))
    rotating = Memory(backend.store, encryption=Encryption([new_key(), KEY_A]))
    done = await rotate_keys(rotating)
    assert [thread_id for thread_id, _ in done.failed] == [unreadable.id]
    assert done.resealed == 1
    assert (await rotating.get_thread(fine.id)) is not None
    assert rotating.stats.decryption_errors == 1


def test_bad_keys_are_refused_with_what_to_do() -> None:
    for keys in (["short"], [], [KEY_A, KEY_A], ["!" * 44]):
        with pytest.raises(ConfigurationError, match=r"keygen|twice"):
            Encryption(keys)
    with pytest.raises(ConfigurationError, match="rotation needs encryption"):
        asyncio.run(
            Memory.from_url("sqlite:///:memory:").reseal_thread(str(uuid.uuid4()), owner=None)
        )
    assert "MasterKey(id=" in repr(Encryption([KEY_A]).ring.current)
    assert KEY_A not in repr(Encryption([KEY_A]).ring.current)


def test_a_resealed_turn_keeps_its_place() -> None:
    encryption = Encryption([KEY_B, KEY_A])
    thread_id = str(uuid.uuid4())
    (old,) = Encryption([KEY_A]).seal_turns(
        thread_id, [Turn(role="user", content="x")], first_seq=3
    )
    resealed = encryption.reseal_turn(thread_id, old)
    assert resealed is not None
    assert resealed.seq == 3
    assert encryption.reseal_turn(thread_id, resealed) is None
    assert Resealed(old.content, resealed).expected == old.content


async def test_mcp_chat_under_encryption_and_a_thread_that_cannot_be_opened(
    tmp_path: Path,
) -> None:
    """Through the MCP tools: conversations continue as ever, the file holds no
    plaintext, and a tampered thread is a tool error saying what to do (and a metric)."""
    url = f"sqlite:///{tmp_path}/mcp.db"
    async with Memory.from_url(url, encryption_keys=[KEY_A]) as memory:
        metrics = Metrics(memory)
        client = Client(
            build_mcp(
                ConversationService(memory, EchoProvider()), metrics=metrics, transport="test"
            )
        )
        async with client:
            first = (
                await client.call_tool("chat", {"prompt": f"remember {SECRET}"})
            ).structured_content
            assert first is not None
            cid = first["continuation_id"]
            again = await client.call_tool(
                "chat", {"prompt": "what was it?", "continuation_id": cid}
            )
            assert not again.is_error
            with sqlite3.connect(tmp_path / "mcp.db") as conn:
                assert SECRET not in repr(conn.execute("SELECT * FROM convmem_turns").fetchall())
                conn.execute("UPDATE convmem_turns SET role = 'system' WHERE seq = 1")
            await memory.evict(cid)
            broken = await client.call_tool("chat", {"prompt": "and now?", "continuation_id": cid})
            assert broken.is_error
            message = broken.content[0].text  # type: ignore[union-attr]
            assert "cannot be decrypted" in message
            assert "without continuation_id" in message
            assert KEY_A not in message
        assert b"convmem_decryption_errors_total 1.0" in metrics.render()


async def test_a_retry_across_a_key_change_is_still_idempotent(backend: Backend) -> None:
    """The retried turn was committed under the old key; the retry comes from an instance
    that already encrypts with the new one (or after a rotation resealed the turn)."""
    before = Memory(backend.store, encryption=Encryption([KEY_A]))
    thread = await before.create_thread(turns=secret_turns("1"))
    after = Memory(backend.store, encryption=Encryption([KEY_B, KEY_A]))
    retried = await after.add_turns(thread.id, [*secret_turns("1")[:1], *secret_turns("2")])
    assert retried.version == 4  # the keyed turn once, the two new ones added
    assert [t.key for t in retried.turns].count("user-1") == 1
    with pytest.raises(IdempotencyConflictError):
        await after.add_turns(thread.id, [Turn(role="user", content="changed", key="user-1")])
    # After a rotation the row is under the new key; an instance still sealing with the
    # old one (new key second, mid-rollout) retries it.
    await rotate_keys(after)
    staged = Memory(backend.store, encryption=Encryption([KEY_A, KEY_B]))
    again = await staged.add_turns(thread.id, secret_turns("1")[:1])
    assert again.version == 4


# -- failing closed: the keys a process holds against the keys the store's data needs ---


async def test_without_a_key_a_store_holding_sealed_data_refuses_to_open(
    backend: Backend, redis_url: str, redis_prefix: str
) -> None:
    """A process started without CONVMEM_ENCRYPTION_KEYS serves no ciphertext as text and
    adds no plaintext turn: it does not open, with Redis holding the sealed copy or not."""
    redis_settings = {"cache_url": redis_url, "cache_prefix": redis_prefix}
    sealed = Memory.from_settings(
        Settings.of(store_url="sqlite:///unused", encryption_keys=[KEY_A], **redis_settings),
        store=backend.store,
    )
    async with sealed:  # Redis holds the thread's sealed copy
        thread = await sealed.create_thread(turns=secret_turns("1"))
    for settings in ({}, redis_settings):
        keyless = Memory.from_settings(
            Settings.of(store_url="sqlite:///unused", **settings), store=backend.store
        )
        with pytest.raises(ConfigurationError) as refused:
            await keyless.open()
        await keyless.aclose()
        message = str(refused.value)
        assert "CONVMEM_ENCRYPTION_KEYS is not set" in message
        assert Encryption([KEY_A]).current_key_id in message
        assert "\n" not in message
    reader = Memory(backend.store, encryption=Encryption([KEY_A]))
    read = await reader.get_thread(thread.id)
    assert read is not None
    assert len(read.turns) == 2  # nothing was added in clear


async def test_a_wrong_key_is_refused_at_start_and_an_added_key_is_recorded(
    backend: Backend,
) -> None:
    async with Memory(backend.store, encryption=Encryption([KEY_A])):
        pass  # an empty store: the first keyed process records its key
    stranger = Memory(backend.store, encryption=Encryption([KEY_B]))
    with pytest.raises(ConfigurationError, match="holds none of the keys") as refused:
        await stranger.open()
    assert Encryption([KEY_A]).current_key_id in str(refused.value)
    # The new key put first, the old one kept (a rotation's first step): accepted, and
    # from then on the store holds data under both.
    async with Memory(backend.store, encryption=Encryption([KEY_B, KEY_A])):
        pass
    both = sorted(Encryption([k]).current_key_id for k in (KEY_A, KEY_B))
    assert await backend.store.sealing_keys(None, ()) == tuple(both)
    async with Memory(backend.store, encryption=Encryption([KEY_B])):
        pass  # knows one of them: starts (threads under the other fail one by one)
    # A keyless process is refused; a plain store with nothing sealed is not.
    with pytest.raises(ConfigurationError, match="CONVMEM_ENCRYPTION_KEYS is not set"):
        await Memory(backend.store).open()


async def test_a_complete_rotation_lets_the_old_key_go(backend: Backend) -> None:
    old = Memory(backend.store, encryption=Encryption([KEY_A]))
    await old.open()
    await old.create_thread(metadata={"m": 1}, turns=secret_turns("1"))
    rotating = Memory(backend.store, encryption=Encryption([KEY_B, KEY_A]))
    await rotating.open()
    backend.clock.advance(timedelta(minutes=2))  # past any REST retry of those writes
    done = await rotate_keys(rotating)
    assert done.failed == []
    assert await backend.store.sealing_keys(None, ()) == (Encryption([KEY_B]).current_key_id,)
    await Memory(backend.store, encryption=Encryption([KEY_B])).open()
    with pytest.raises(ConfigurationError, match="holds none of the keys"):
        await Memory(backend.store, encryption=Encryption([KEY_A])).open()


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
async def test_an_upgraded_database_knows_the_keys_its_sealed_threads_were_written_with(
    dialect: str, tmp_path: Path
) -> None:
    """Threads sealed before the store recorded its keys: the migration finds their key in
    their sealed metadata, so a keyless process is refused on an upgraded database too."""
    database = create_database() if dialect == "postgres" else None  # its own: it is undone
    try:
        url = f"sqlite:///{tmp_path}/old.db" if database is None else pg_url(database)
        async with Memory.from_url(url, encryption_keys=[KEY_A]) as sealed:
            await sealed.create_thread(metadata={"m": 1}, turns=secret_turns("1"))
        # Back to the schema before sealing keys were recorded, sealed threads and all.
        undo = [
            "DROP TABLE convmem_sealing_keys",
            "DELETE FROM convmem_schema_migrations WHERE name LIKE '%sealing_keys'",
        ]
        if database is None:
            with sqlite3.connect(tmp_path / "old.db") as conn:
                for statement in undo:
                    conn.execute(statement)
        else:
            with admin_connect(database) as conn:
                for statement in undo:
                    conn.execute(statement)
        with pytest.raises(ConfigurationError, match="CONVMEM_ENCRYPTION_KEYS is not set"):
            async with Memory.from_url(url):  # migrates, then checks
                pass
    finally:
        if database is not None:
            drop_database(database)
