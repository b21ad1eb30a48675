"""The schema as a new user applies it (two files pasted, as into Supabase's SQL editor, here
with ``psql -f``, or ``convmem migrate``) and as an upgrade leaves it: the same catalog."""

from __future__ import annotations

import difflib
import hashlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from convmem.errors import SeqTakenError
from convmem.models import Turn
from convmem.stores.base import NewThread
from convmem.stores.migrations import FIRST_SUPABASE_VERSION, migrations_for, store_calls
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
# The schema files as the previous release shipped them (function bodies and all), frozen:
# the databases of our users were made by these.
RELEASED = SUPPORT / "released_schema"
SCHEMA = "postgres/schema.sql"
SECURITY = "supabase/security.sql"
EVERY_VERSION = [*range(1, 13), *range(102, 113)]


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """A new, empty database with the roles every Supabase project has."""
    create_supabase_roles()
    name = create_database()
    yield name
    drop_database(name)


@pytest.fixture
def second_database() -> Iterator[str]:
    name = create_database()
    yield name
    drop_database(name)


def _client(tool: str, database: str) -> list[str]:
    """The command line of one of PostgreSQL's client tools, connected to ``database``."""
    found = shutil.which(tool)
    assert found is not None, f"{tool} (Debian's postgresql-client) is needed for this test"
    return [found, "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d", database]


def psql(database: str, sql: str) -> subprocess.CompletedProcess[str]:
    """Run SQL as a new user would paste it: one file alone, nothing else."""
    return subprocess.run(
        [*_client("psql", database), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"],
        input=sql,
        capture_output=True,
        text=True,
        timeout=60,
    )


def paste(database: str, path: str) -> None:
    """Paste one of the schema files shipped now (``postgres/schema.sql``, …)."""
    result = psql(database, MIGRATIONS.joinpath(path).read_text("utf-8"))
    assert result.returncode == 0, f"{path}: {result.stderr}"


def paste_released(database: str, *names: str) -> None:
    """Make a database as a user of the previous release did: its files, in order."""
    for name in names:
        folder = "supabase" if int(name[:4]) >= 100 else "postgres"
        result = psql(database, (RELEASED / folder / f"{name}.sql").read_text("utf-8"))
        assert result.returncode == 0, f"{name}: {result.stderr}"


def applied(dialect: str, *, after: int = 0, only: set[int] | None = None) -> str:
    """What `convmem migrate` says it applied: the dialect's migrations after ``after``
    (or those in ``only``), by name, in order."""
    names = [
        m.name
        for m in migrations_for(dialect)
        if m.version > after and (only is None or m.version in only)
    ]
    return "applied " + ", ".join(names)


def released(up_to: int) -> list[str]:
    """The previous release's PostgreSQL files up to ``up_to``, by name."""
    return sorted(p.stem for p in (RELEASED / "postgres").glob("0*.sql"))[:up_to]


def catalog(database: str) -> list[str]:
    """The schema as pg_dump writes it (tables, types, functions, grants, policies), with
    its comments, blank lines and per-run restrict keys left out."""
    result = subprocess.run(
        [*_client("pg_dump", database), "--schema-only", "--no-owner"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [
        line
        for line in result.stdout.splitlines()
        if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict"))
    ]


def assert_same_catalog(fresh: str, upgraded: str) -> None:
    expected, got = catalog(fresh), catalog(upgraded)
    if expected != got:
        diff = "\n".join(difflib.unified_diff(expected, got, "fresh", "upgraded", lineterm=""))
        raise AssertionError(f"an upgraded database differs from a fresh one:\n{diff}")


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


def test_the_whole_schema_records_every_migration_and_guards_for_the_newest() -> None:
    """schema.sql and security.sql are the numbered migrations' sum: each records every
    version of its dialect and refuses a database older than the newest."""
    postgres = migrations_for("postgres")
    supabase = [m for m in migrations_for("supabase") if m.version >= FIRST_SUPABASE_VERSION]
    for path, expected in ((SCHEMA, postgres), (SECURITY, supabase)):
        text = MIGRATIONS.joinpath(path).read_text("utf-8")
        records = re.findall(r"^    \((\d+), '(\w+)'\)", text, re.M)
        assert [(int(v), n) for v, n in records] == [(m.version, m.name) for m in expected]
        guard = re.search(r"WHERE version = (\d+)", text)
        assert guard is not None
        assert int(guard[1]) == postgres[-1].version, f"{path} guards for an older schema"


def test_each_function_body_stands_in_one_place() -> None:
    """Only schema.sql (and security.sql, Supabase's lock-down) define functions; the
    numbered migrations change tables and data."""
    for migration in migrations_for("supabase"):
        defines = re.search(r"^\s*(CREATE|DROP)\b[^;]*\bFUNCTION\b", migration.sql, re.M | re.I)
        assert defines is None, f"{migration.name} defines a function: move it to {SCHEMA}"
    schema = MIGRATIONS.joinpath(SCHEMA).read_text("utf-8")
    names = re.findall(r"^CREATE OR REPLACE FUNCTION (\w+)\(", schema, re.M)
    assert len(names) == len(set(names)) == 25
    assert all(f"FUNCTION {name}(" in store_calls() for name in names)


# The store calls as released with each version: a database at an older version gets
# them re-created by `convmem migrate` only if a migration is pending, so changing one
# without a new migration would leave every upgraded database on the old body.
CALLS_DIGEST = {
    10: "6fbbdc725bfbcc59f581708d7d8d7f26c0e2b458697e37bfa9c5aa0e9e9e914e",
    11: "f2a7b61709f7e050db310035f7a2e0ed9387b3db2b97d32ec95b371c83e510d3",
    12: "62ebc49fe05409e57c5e8f7be57889a05d665d4c3a17c2c88caa282cc947f3e6",
}


def test_a_changed_store_call_comes_with_a_migration() -> None:
    newest = migrations_for("postgres")[-1].version
    digest = hashlib.sha256(store_calls().encode()).hexdigest()
    assert CALLS_DIGEST.get(newest) == digest, (
        "schema.sql's store calls changed: add a migration (it may hold only its record) so "
        f"that `convmem migrate` re-creates them on upgraded databases, and record {digest!r} "
        "under its version in CALLS_DIGEST"
    )


async def test_pasting_the_two_files_makes_a_working_locked_down_supabase_schema(
    fresh_database: str,
) -> None:
    paste(fresh_database, SCHEMA)
    paste(fresh_database, SECURITY)
    assert [v for v, _ in recorded(fresh_database)] == EVERY_VERSION
    assert recorded(fresh_database) == [(m.version, m.name) for m in migrations_for("supabase")]
    assert_locked_down(fresh_database)
    before = catalog(fresh_database)
    # Pasting again changes nothing and fails nothing.
    paste(fresh_database, SCHEMA)
    paste(fresh_database, SECURITY)
    assert catalog(fresh_database) == before
    # `convmem migrate` sees that everything is applied.
    result = convmem("migrate", "--store", pg_url(fresh_database, migrations="supabase"))
    assert result.returncode == 0, result.stderr
    assert "nothing was pending" in result.stdout
    # And SupabaseStore works on it, through the REST stand-in, as service_role.
    standin = PostgrestStandIn(pg_url(fresh_database)).start()
    try:
        store = SupabaseStore.from_url(standin.url, service_key=standin.service_key, limits=LIMITS)
        async with store:
            created = (
                await store.create(
                    NewThread("0f8c2a4e-6b1d-4c3a-9e2f-5a7b8c9d0e1f", "chat", None, None, {}),
                    [Turn(role="user", content="pasted")],
                )
            ).thread
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


def test_security_pasted_before_the_schema_says_what_to_paste_first(
    fresh_database: str,
) -> None:
    result = psql(fresh_database, MIGRATIONS.joinpath(SECURITY).read_text("utf-8"))
    assert result.returncode != 0
    assert "apply postgres/schema.sql first" in result.stderr


def test_the_schema_pasted_on_an_older_database_refuses_and_changes_nothing(
    fresh_database: str,
) -> None:
    paste_released(fresh_database, *released(5))
    before = catalog(fresh_database)
    result = psql(fresh_database, MIGRATIONS.joinpath(SCHEMA).read_text("utf-8"))
    assert result.returncode != 0
    assert "earlier convmem schema" in result.stderr
    assert "convmem migrate" in result.stderr
    assert catalog(fresh_database) == before


def test_migrate_reports_what_it_applied_then_that_nothing_is_pending(
    fresh_database: str,
) -> None:
    url = pg_url(fresh_database)
    first = convmem("migrate", "--store", url)
    assert first.returncode == 0, first.stderr
    assert applied("postgres") in " ".join(first.stdout.split())
    again = convmem("migrate", "--store", url)
    assert "nothing was pending" in again.stdout
    # A Supabase project migrated this way later gets only its row-level security.
    supabase = convmem("migrate", "--store", pg_url(fresh_database, migrations="supabase"))
    assert applied("supabase", after=FIRST_SUPABASE_VERSION) in " ".join(supabase.stdout.split())
    assert [v for v, _ in recorded(fresh_database)] == EVERY_VERSION
    assert_locked_down(fresh_database)


@pytest.mark.parametrize("up_to", [1, 3, 5, 9], ids=lambda n: f"released-{n:04d}")
def test_a_database_on_an_earlier_release_upgrades_to_the_fresh_schema(
    fresh_database: str, second_database: str, up_to: int
) -> None:
    """Catalog against catalog: what `convmem migrate` makes of a database the previous
    release's files made, up to each of several versions, is what a new database gets."""
    assert convmem("migrate", "--store", pg_url(fresh_database)).returncode == 0
    paste_released(second_database, *released(up_to))
    result = convmem("migrate", "--store", pg_url(second_database))
    assert result.returncode == 0, result.stderr
    assert_same_catalog(fresh_database, second_database)
    assert recorded(second_database) == recorded(fresh_database)


@pytest.mark.parametrize("supabase", [False, True], ids=["postgres", "supabase"])
def test_a_database_made_from_the_released_schema_file_upgrades_to_the_fresh_schema(
    fresh_database: str, second_database: str, supabase: bool
) -> None:
    """The release that brought schema.sql (at 0010, with security.sql at 0110), pasted as
    its README said: `convmem migrate` adds the newer store calls, locked down on
    Supabase, and ends where a new database does."""
    paste(fresh_database, SCHEMA)
    if supabase:
        paste(fresh_database, SECURITY)
    for name in ("schema_0010", *(["security_0110"] if supabase else [])):
        result = psql(second_database, (RELEASED / f"{name}.sql").read_text("utf-8"))
        assert result.returncode == 0, f"{name}: {result.stderr}"
    migrated = convmem("migrate", "--store", pg_url(second_database))
    assert migrated.returncode == 0, migrated.stderr
    said = " ".join(migrated.stdout.split())
    newer = {v for v in EVERY_VERSION if v > (110 if v > 100 else 10)}
    assert applied("supabase" if supabase else "postgres", only=newer) in said
    if supabase:
        assert_locked_down(second_database)
    assert_same_catalog(fresh_database, second_database)
    assert recorded(second_database) == recorded(fresh_database)


def test_a_locked_down_supabase_project_upgrades_to_the_fresh_schema_and_stays_locked(
    fresh_database: str, second_database: str
) -> None:
    """Released 0001, 0002 and 0102 (a project from before key rotation), migrated even
    without ?migrations=supabase: the re-created functions are locked down as before."""
    for path in (SCHEMA, SECURITY):
        paste(fresh_database, path)
    paste_released(second_database, "0001_init", "0002_functions", "0102_row_level_security")
    result = convmem("migrate", "--store", pg_url(second_database))
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert applied("supabase", only=set(EVERY_VERSION) - {1, 2, 102}) in said
    assert_locked_down(second_database)
    assert_same_catalog(fresh_database, second_database)


@pytest.mark.parametrize(("readable_by", "refused"), [(10, False), (13, True)])
def test_a_database_migrated_by_a_newer_release_is_used_only_if_it_says_so(
    fresh_database: str, readable_by: int, refused: bool
) -> None:
    """A rollback: the database records a migration this release does not know, and its
    convmem_readable_by() says which releases may still run on it; refused at start,
    before any request, when this one may not."""
    url = pg_url(fresh_database)
    assert convmem("migrate", "--store", url).returncode == 0
    future = psql(
        fresh_database,
        "INSERT INTO convmem_schema_migrations (version, name) VALUES (99, '0099_future');"
        "CREATE OR REPLACE FUNCTION convmem_readable_by() RETURNS integer"
        f" LANGUAGE sql IMMUTABLE AS $$ SELECT {readable_by} $$;",
    )
    assert future.returncode == 0, future.stderr
    listed = convmem("threads", "list", "--store", url)
    if refused:
        assert listed.returncode == 1
        said = " ".join(listed.stderr.split())
        assert "was migrated by a newer convmem, and releases before schema 13" in said
        assert "this one has schema 12" in said
    else:
        assert listed.returncode == 0, listed.stderr
    assert "nothing was pending" in convmem("migrate", "--store", url).stdout or refused


def test_migrate_on_sqlite_reports_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    assert "applied 0001_init" in convmem("migrate", "--store", url).stdout
    assert "nothing was pending" in convmem("migrate", "--store", url).stdout


async def test_a_supabase_project_on_the_first_schema_upgrades_to_the_fresh_schema(
    fresh_database: str, second_database: str
) -> None:
    """The first release's 0001 and 0101 (kept in tests/support), as its runner applied them:
    `convmem migrate` ends where a new project's two files do, catalog against catalog."""
    for path in (SCHEMA, SECURITY):
        paste(fresh_database, path)
    first_release = second_database
    with admin_connect(first_release) as conn:
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
    result = convmem("migrate", "--store", pg_url(first_release, migrations="supabase"))
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert applied("supabase", only=set(EVERY_VERSION) - {1}) in said
    assert_locked_down(first_release)
    assert_same_catalog(fresh_database, first_release)
    standin = PostgrestStandIn(pg_url(first_release)).start()
    try:
        store = SupabaseStore.from_url(standin.url, service_key=standin.service_key, limits=LIMITS)
        async with store:
            created = (
                await store.create(
                    NewThread("0f8c2a4e-6b1d-4c3a-9e2f-5a7b8c9d0e1f", None, None, None, {}),
                    [Turn(role="user", content="upgraded")],
                )
            ).thread
            loaded = await store.load(created.id, owner=None)
        assert loaded is not None
        assert loaded.turns[0].content == "upgraded"
    finally:
        standin.stop()
