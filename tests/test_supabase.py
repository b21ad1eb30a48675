"""SupabaseStore against the PostgREST stand-in: transport faults, errors, the key, and
the SQL functions' security on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from convmem import ConfigurationError, Memory, StoreUnavailableError, Turn
from convmem.stores.base import NewThread
from convmem.stores.supabase import SupabaseStore
from convmem_bench.postgrest_standin import PostgrestStandIn
from tests.conftest import LIMITS
from tests.support.services import admin_connect, pg_url


@pytest.fixture
async def supabase(postgrest: PostgrestStandIn, clean_pg: str) -> AsyncIterator[SupabaseStore]:
    postgrest.faults.clear()
    store = SupabaseStore.from_url(
        postgrest.url, service_key=postgrest.service_key, limits=LIMITS, timeout=1.0, backoff=0.01
    )
    async with store:
        yield store
    postgrest.faults.clear()


def requests_to(postgrest: PostgrestStandIn, function: str) -> int:
    return postgrest.requests[function]


async def new_thread(store: SupabaseStore) -> str:
    thread = (await store.create(NewThread(str(uuid.uuid4()), "chat", None, None, {}))).thread
    return thread.id


@pytest.mark.parametrize("fault", ["drop_after_commit", "timeout", "503"])
async def test_a_retried_append_never_duplicates_a_turn(
    supabase: SupabaseStore, postgrest: PostgrestStandIn, fault: str
) -> None:
    thread_id = await new_thread(supabase)
    before = requests_to(postgrest, "convmem_append")
    postgrest.faults.append(fault)
    # Unkeyed turns: only the request id makes the retry safe.
    result = await supabase.append(
        thread_id,
        [Turn(role="user", content="once"), Turn(role="assistant", content="only once")],
        owner=None,
    )
    assert requests_to(postgrest, "convmem_append") - before == 2  # the lost answer, the retry
    assert (result.version, result.inserted) == (2, 2)
    loaded = await supabase.load(thread_id, owner=None)
    assert loaded is not None
    assert [t.content for t in loaded.turns] == ["once", "only once"]


async def test_a_pop_or_fork_whose_answer_was_lost_is_not_done_twice_on_retry(
    supabase: SupabaseStore, postgrest: PostgrestStandIn
) -> None:
    thread_id = await new_thread(supabase)
    await supabase.append(
        thread_id, [Turn(role="user", content=f"turn {i}") for i in range(3)], owner=None
    )
    before = requests_to(postgrest, "convmem_remove")
    postgrest.faults.append("drop_after_commit")
    removal = await supabase.pop(thread_id, owner=None)  # the retry must not pop again
    assert requests_to(postgrest, "convmem_remove") - before == 2  # the lost answer, the retry
    assert (removal.version, removal.seqs) == (4, (3,))
    assert [t.content for t in removal.turns] == ["turn 2"]
    postgrest.faults.append("drop_after_commit")
    spec = NewThread(str(uuid.uuid4()), "chat", thread_id, None, {})
    fork = (await supabase.fork(spec, at_seq=1)).thread  # not refused as an existing id
    assert fork.parent_seq == 1
    loaded = await supabase.load(thread_id, owner=None)
    assert loaded is not None
    assert [t.content for t in loaded.turns] == ["turn 0", "turn 1"]


async def test_a_create_whose_answer_was_lost_is_not_refused_on_retry(
    supabase: SupabaseStore, postgrest: PostgrestStandIn
) -> None:
    postgrest.faults.append("drop_after_commit")
    spec = NewThread(str(uuid.uuid4()), "chat", None, "alice", {"k": "v"})
    created = (await supabase.create(spec, [Turn(role="user", content="first")])).thread
    assert created.version == 1
    loaded = await supabase.load(spec.id, owner="alice")
    assert loaded == created


async def test_when_retries_run_out_the_error_is_clear(
    supabase: SupabaseStore, postgrest: PostgrestStandIn
) -> None:
    thread_id = await new_thread(supabase)
    postgrest.faults.extend(["503"] * (supabase.retries + 1))
    with pytest.raises(StoreUnavailableError, match="HTTP 503"):
        await supabase.load(thread_id, owner=None)
    postgrest.faults.extend(["timeout"] * (supabase.retries + 1))
    with pytest.raises(StoreUnavailableError, match=r"timed out \(ReadTimeout\) after 4 attempts"):
        await supabase.load(thread_id, owner=None)


async def test_a_hung_gateway_costs_one_deadline_not_every_retry(
    postgrest: PostgrestStandIn, clean_pg: str
) -> None:
    postgrest.faults.clear()
    store = SupabaseStore.from_url(
        postgrest.url,
        service_key=postgrest.service_key,
        limits=LIMITS,
        timeout=1.0,
        deadline=1.5,
        backoff=0.01,
    )
    async with store:
        thread_id = await new_thread(store)
        postgrest.stall_seconds = 3.0
        postgrest.faults.extend(["timeout"] * 4)
        try:
            with pytest.raises(StoreUnavailableError, match=r"within 1\.5 s: retry later"):
                # wait_for only guards the test: the store gives up by itself, at its deadline
                await asyncio.wait_for(store.load(thread_id, owner=None), 2.5)
        finally:
            postgrest.faults.clear()
            postgrest.stall_seconds = 2.0


async def test_a_wrong_key_is_a_configuration_error_that_never_shows_a_key(
    postgrest: PostgrestStandIn, clean_pg: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sb-secret-" + uuid.uuid4().hex
    store = SupabaseStore.from_url(postgrest.url, service_key=secret, limits=LIMITS)
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigurationError) as caught:
        await store.open()
    await store.aclose()
    assert "refused the service key" in str(caught.value)
    assert secret not in str(caught.value)
    assert secret not in repr(store)
    assert all(secret not in record.getMessage() for record in caplog.records)


def test_the_key_and_project_come_from_the_environment_only_through_from_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SUPABASE_SERVICE_ROLE_KEY", raising=False)
    monkeypatch.setenv("SUPABASE_KEY", "older-name")
    monkeypatch.setenv("SUPABASE_URL", "https://project.supabase.co")
    monkeypatch.setenv("CONVMEM_STORE_URL", "supabase://")
    store = Memory.from_env().store
    assert isinstance(store, SupabaseStore)
    assert store.base_url == "https://project.supabase.co"
    with pytest.raises(ConfigurationError, match="SUPABASE_URL"):
        SupabaseStore.from_url("supabase://")  # a store reads no environment
    with pytest.raises(ConfigurationError, match="SUPABASE_SERVICE_ROLE_KEY"):
        Memory.from_url("supabase://project.supabase.co")
    monkeypatch.delenv("SUPABASE_KEY")
    with pytest.raises(ConfigurationError, match="SUPABASE_SERVICE_ROLE_KEY"):
        Memory.from_env()


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_the_public_roles_reach_neither_functions_nor_rows(
    postgrest: PostgrestStandIn, clean_pg: str, role: str
) -> None:
    with admin_connect(clean_pg) as conn:
        conn.execute(
            "INSERT INTO convmem_threads (id, version, created_at, updated_at, expires_at)"
            " VALUES (gen_random_uuid(), 0, now(), now(), now() + interval '1 hour')"
        )
        for statement in (
            "SELECT convmem_schema_version()",
            "SELECT * FROM convmem_load(gen_random_uuid(), NULL, 0, now())",
            "SELECT * FROM convmem_append(gen_random_uuid(), NULL, '[]', now(), 1, 1)",
            "SELECT convmem_lock_down()",
            "SELECT count(*) FROM convmem_threads",
            "SELECT count(*) FROM convmem_turns",
            "SELECT count(*) FROM convmem_rpc_requests",
            "SELECT count(*) FROM convmem_schema_migrations",
        ):
            conn.execute("BEGIN")
            conn.execute(f"SET LOCAL ROLE {role}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.execute("ROLLBACK")
        conn.execute("BEGIN")
        conn.execute("SET LOCAL ROLE service_role")
        row = conn.execute("SELECT count(*) FROM convmem_threads").fetchone()
        conn.execute("ROLLBACK")
    assert row is not None
    assert row[0] == 1  # the service role's policy lets it see every row


def test_demo_against_the_standin_costs_one_request_per_read_and_per_write(
    postgrest: PostgrestStandIn, clean_pg: str, tmp_path: Path
) -> None:
    before = dict(postgrest.requests)
    result = subprocess.run(
        [sys.executable, "-m", "convmem", "demo", "--store", postgrest.url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200", "SUPABASE_SERVICE_ROLE_KEY": postgrest.service_key},
    )
    assert result.returncode == 0, result.stderr
    assert "continued, cold cache: 1 read + 1 write; warm: 0 reads + 1 write" in result.stdout
    made = {k: v - before.get(k, 0) for k, v in postgrest.requests.items()}
    assert made["convmem_create"] == 1
    assert made["convmem_load"] == 1  # the one cold read
    assert made["convmem_append"] == 4  # one per continued request
    assert re.search(r"│ 2\s+│ cold\s+│ store\s+│ 1\s+│ 1", result.stdout)


def test_the_pooler_path_is_postgres_with_prepared_statements_off() -> None:
    from convmem.stores.postgres import PostgresStore

    pooler = PostgresStore.from_url(pg_url("postgres", port=6543))
    assert not pooler.prepared_statements
    assert PostgresStore.from_url(pg_url("x", migrations="supabase")).migrations == "supabase"
    with pytest.raises(ConfigurationError, match="migrations"):
        PostgresStore.from_url(pg_url("x", migrations="mysql"))


@pytest.mark.parametrize(("readable_by", "refused"), [(10, False), (13, True)])
async def test_a_project_migrated_by_a_newer_release_is_used_only_if_it_says_so(
    postgrest: PostgrestStandIn, clean_pg: str, readable_by: int, refused: bool
) -> None:
    """As in a rollback: the project records a migration this release does not know, and
    its convmem_readable_by() says which releases may still run on it."""

    def future(readable: int, *, record: bool) -> None:
        with admin_connect(clean_pg) as conn:
            conn.execute(
                "CREATE OR REPLACE FUNCTION convmem_readable_by() RETURNS integer"
                f" LANGUAGE sql IMMUTABLE AS $$ SELECT {readable} $$"
            )
            if record:
                conn.execute(
                    "INSERT INTO convmem_schema_migrations (version, name)"
                    " VALUES (199, '0199_from_a_newer_release')"
                )
            else:
                conn.execute("DELETE FROM convmem_schema_migrations WHERE version = 199")

    future(readable_by, record=True)
    store = SupabaseStore.from_url(postgrest.url, service_key=postgrest.service_key)
    try:
        if refused:
            with pytest.raises(ConfigurationError, match="migrated by a newer convmem"):
                await store.open()
        else:
            await store.open()
            await new_thread(store)
    finally:
        await store.aclose()
        future(10, record=False)
