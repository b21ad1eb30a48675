"""The schema as a new user applies it: pasted file by file (as into Supabase's SQL editor,
here with ``psql -f``) or by ``convmem migrate``, and each way knows what the other did."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from convmem.errors import SeqTakenError
from convmem.models import Turn
from convmem.stores.base import NewThread
from convmem.stores.migrations import migrations_for
from convmem.stores.supabase import SupabaseStore
from convmem_bench.postgrest_standin import PostgrestStandIn
from tests.conftest import LIMITS
from tests.support.services import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    admin_connect,
    create_database,
    create_supabase_roles,
    drop_database,
    pg_url,
)
from tests.test_cli import convmem

MIGRATIONS = resources.files("convmem.stores.migrations")
SUPPORT = Path(__file__).parent / "support"
PASTE_ORDER = (
    "postgres/0001_init.sql",
    "postgres/0002_functions.sql",
    "postgres/0003_reseal.sql",
    "postgres/0004_revisions.sql",
    "postgres/0005_summaries.sql",
    "postgres/0006_rewrite.sql",
    "postgres/0007_sealing_keys.sql",
    "postgres/0008_operator_reads.sql",
    "postgres/0009_sealed_seqs.sql",
    "postgres/0010_update.sql",
    "supabase/0102_row_level_security.sql",
    "supabase/0103_lock_down_reseal.sql",
    "supabase/0104_lock_down_revisions.sql",
    "supabase/0105_lock_down_summaries.sql",
    "supabase/0106_lock_down_rewrite.sql",
    "supabase/0107_lock_down_sealing_keys.sql",
    "supabase/0108_lock_down_operator_reads.sql",
    "supabase/0109_sealed_seqs.sql",
    "supabase/0110_lock_down_update.sql",
)


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """A new, empty database with the roles every Supabase project has."""
    create_supabase_roles()
    name = create_database()
    yield name
    drop_database(name)


def paste(database: str, path: str) -> None:
    """Run one migration file as a new user would: the file alone, nothing else."""
    psql = shutil.which("psql")
    assert psql is not None, "psql (Debian's postgresql-client) is needed for this test"
    sql = MIGRATIONS.joinpath(path).read_text("utf-8")
    result = subprocess.run(
        [
            psql,
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            PG_HOST,
            "-p",
            str(PG_PORT),
            "-U",
            PG_USER,
            "-d",
            database,
            "-f",
            "-",
        ],
        input=sql,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{path}: {result.stderr}"


def recorded(database: str) -> list[tuple[int, str]]:
    with admin_connect(database) as conn:
        rows = conn.execute(
            "SELECT version, name FROM convmem_schema_migrations ORDER BY version"
        ).fetchall()
    return [(int(v), str(n)) for v, n in rows]  # type: ignore[call-overload]


def assert_locked_down(database: str) -> None:
    """Row-level security on every convmem table; no convmem function for the public API."""
    with admin_connect(database) as conn:
        unlocked = conn.execute(
            "SELECT relname FROM pg_class WHERE relname LIKE 'convmem\\_%' AND relkind = 'r'"
            " AND NOT relrowsecurity"
        ).fetchall()
        callable_by_public = conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.proname LIKE 'convmem\\_%'"
            " AND (has_function_privilege('anon', p.oid, 'EXECUTE')"
            "   OR has_function_privilege('authenticated', p.oid, 'EXECUTE'))"
        ).fetchall()
    assert unlocked == []
    assert callable_by_public == []


def test_the_paste_order_is_every_supabase_migration() -> None:
    names = [f"{m.name}.sql" for m in migrations_for("supabase")]
    assert [p.split("/")[1] for p in PASTE_ORDER] == names


async def test_pasting_the_files_in_order_makes_a_working_locked_down_supabase_schema(
    fresh_database: str,
) -> None:
    for path in PASTE_ORDER:
        paste(fresh_database, path)
    assert recorded(fresh_database) == [
        (1, "0001_init"),
        (2, "0002_functions"),
        (3, "0003_reseal"),
        (4, "0004_revisions"),
        (5, "0005_summaries"),
        (6, "0006_rewrite"),
        (7, "0007_sealing_keys"),
        (8, "0008_operator_reads"),
        (9, "0009_sealed_seqs"),
        (10, "0010_update"),
        (102, "0102_row_level_security"),
        (103, "0103_lock_down_reseal"),
        (104, "0104_lock_down_revisions"),
        (105, "0105_lock_down_summaries"),
        (106, "0106_lock_down_rewrite"),
        (107, "0107_lock_down_sealing_keys"),
        (108, "0108_lock_down_operator_reads"),
        (109, "0109_sealed_seqs"),
        (110, "0110_lock_down_update"),
    ]
    assert_locked_down(fresh_database)
    # Pasting again changes nothing and fails nothing.
    for path in PASTE_ORDER:
        paste(fresh_database, path)
    # `convmem migrate` sees that everything is applied.
    result = convmem("migrate", "--store", pg_url(fresh_database, migrations="supabase"))
    assert result.returncode == 0, result.stderr
    assert "nothing was pending" in result.stdout
    # And SupabaseStore works on it, through the REST stand-in, as service_role.
    standin = PostgrestStandIn(pg_url(fresh_database)).start()
    try:
        store = SupabaseStore.from_url(standin.url, service_key=standin.service_key, limits=LIMITS)
        async with store:
            created = await store.create(
                NewThread("0f8c2a4e-6b1d-4c3a-9e2f-5a7b8c9d0e1f", "chat", None, None, {}),
                [Turn(role="user", content="pasted")],
            )
            await store.append(created.id, [Turn(role="assistant", content="works")], owner=None)
            with pytest.raises(SeqTakenError):  # 0009's check is in place: a turn sealed
                await store.append(  # for seq 2 does not land at 3
                    created.id,
                    [Turn(role="user", content="late", seq=2)],
                    owner=None,
                    seqs_bound=True,
                )
            await store.append(created.id, [Turn(role="assistant", content="popped")], owner=None)
            await store.pop(created.id, owner=None)
            await store.save_summary(
                created.id,
                Turn(role="system", content="a summary"),
                covers_to_seq=1,
                base_version=4,
                owner=None,
            )
            loaded = await store.load(created.id, owner=None)
        assert loaded is not None
        assert [t.content for t in loaded.turns] == ["pasted", "works"]
        assert loaded.summary is not None
        assert loaded.summary.content == "a summary"
    finally:
        standin.stop()


def test_migrate_reports_what_it_applied_then_that_nothing_is_pending(
    fresh_database: str,
) -> None:
    url = pg_url(fresh_database)
    first = convmem("migrate", "--store", url)
    assert first.returncode == 0, first.stderr
    assert (
        "applied 0001_init, 0002_functions, 0003_reseal, 0004_revisions, 0005_summaries,"
        " 0006_rewrite, 0007_sealing_keys, 0008_operator_reads, 0009_sealed_seqs,"
        " 0010_update" in " ".join(first.stdout.split())
    )
    again = convmem("migrate", "--store", url)
    assert "nothing was pending" in again.stdout
    # A Supabase project migrated this way later gets only its row-level security.
    supabase = convmem("migrate", "--store", pg_url(fresh_database, migrations="supabase"))
    assert (
        "applied 0102_row_level_security, 0103_lock_down_reseal, 0104_lock_down_revisions,"
        " 0105_lock_down_summaries, 0106_lock_down_rewrite, 0107_lock_down_sealing_keys,"
        " 0108_lock_down_operator_reads, 0109_sealed_seqs, 0110_lock_down_update"
        in " ".join(supabase.stdout.split())
    )
    assert [v for v, _ in recorded(fresh_database)] == [
        *range(1, 11),
        *range(102, 111),
    ]


def test_a_project_on_the_previous_release_gets_the_rotation_functions_locked_down(
    fresh_database: str,
) -> None:
    for path in ("postgres/0001_init.sql", "postgres/0002_functions.sql"):
        paste(fresh_database, path)
    paste(fresh_database, "supabase/0102_row_level_security.sql")
    result = convmem("migrate", "--store", pg_url(fresh_database, migrations="supabase"))
    assert result.returncode == 0, result.stderr
    assert (
        "applied 0003_reseal, 0004_revisions, 0005_summaries, 0006_rewrite,"
        " 0007_sealing_keys, 0008_operator_reads, 0009_sealed_seqs, 0010_update,"
        " 0103_lock_down_reseal, 0104_lock_down_revisions, 0105_lock_down_summaries,"
        " 0106_lock_down_rewrite, 0107_lock_down_sealing_keys,"
        " 0108_lock_down_operator_reads, 0109_sealed_seqs, 0110_lock_down_update"
        in " ".join(result.stdout.split())
    )
    assert_locked_down(fresh_database)


def test_migrate_applies_only_what_is_newer_than_the_pasted_files(fresh_database: str) -> None:
    paste(fresh_database, PASTE_ORDER[0])  # a user pasted the first file only
    result = convmem("migrate", "--store", pg_url(fresh_database))
    assert result.returncode == 0, result.stderr
    assert "applied 0002_functions" in result.stdout
    assert "0001_init" not in result.stdout


def test_migrate_on_sqlite_reports_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    assert "applied 0001_init" in convmem("migrate", "--store", url).stdout
    assert "nothing was pending" in convmem("migrate", "--store", url).stdout


async def test_a_supabase_project_on_the_first_schema_upgrades_in_place(
    fresh_database: str,
) -> None:
    """The first release's 0001 and 0101 (kept in tests/support), as its runner applied them."""
    with admin_connect(fresh_database) as conn:
        conn.execute(
            "CREATE TABLE convmem_schema_migrations (version integer PRIMARY KEY,"
            " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name in ((1, "legacy_0001_init.sql"), (101, "legacy_0101_rest_api.sql")):
            conn.execute((SUPPORT / name).read_text("utf-8").encode())
            conn.execute(
                "INSERT INTO convmem_schema_migrations (version, name) VALUES (%s, %s)",
                (version, name.removeprefix("legacy_")),
            )
    result = convmem("migrate", "--store", pg_url(fresh_database, migrations="supabase"))
    assert result.returncode == 0, result.stderr
    assert (
        "applied 0002_functions, 0003_reseal, 0004_revisions, 0005_summaries,"
        " 0006_rewrite, 0007_sealing_keys, 0008_operator_reads, 0009_sealed_seqs,"
        " 0010_update, 0102_row_level_security, 0103_lock_down_reseal,"
        " 0104_lock_down_revisions, 0105_lock_down_summaries, 0106_lock_down_rewrite,"
        " 0107_lock_down_sealing_keys, 0108_lock_down_operator_reads, 0109_sealed_seqs,"
        " 0110_lock_down_update" in " ".join(result.stdout.split())
    )
    standin = PostgrestStandIn(pg_url(fresh_database)).start()
    try:
        store = SupabaseStore.from_url(standin.url, service_key=standin.service_key, limits=LIMITS)
        async with store:
            created = await store.create(
                NewThread("0f8c2a4e-6b1d-4c3a-9e2f-5a7b8c9d0e1f", None, None, None, {}),
                [Turn(role="user", content="upgraded")],
            )
            loaded = await store.load(created.id, owner=None)
        assert loaded is not None
        assert loaded.turns[0].content == "upgraded"
    finally:
        standin.stop()
