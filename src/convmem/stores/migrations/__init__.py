"""Versioned schemas: one whole schema per SQL store for a new database, and numbered
``.sql`` migrations for a database on an earlier one.

A file ``NNNN_name.sql`` is migration ``NNNN`` named ``NNNN_name``; applied versions are
recorded in ``convmem_schema_migrations``. SQLite applies its migrations in order. For
PostgreSQL (and Supabase, which adds its row-level security and grants) ``postgres/schema.sql``
is the current schema: an empty database gets it whole (with ``supabase/security.sql``);
an upgraded one gets the pending migrations (tables and data only), then its store calls
(the row type and every function, which hold no data) dropped and re-created from the
marked section of ``schema.sql``, so each function's body stands in that file only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Final

from convmem.errors import ConfigurationError

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_CALLS = re.compile(r"^-- convmem:calls begin.*?^-- convmem:calls end\n", re.S | re.M)

# Versions from here up are Supabase's (0101 was the first schema's REST functions).
FIRST_SUPABASE_VERSION: Final = 101

# Before the calls are re-created: every convmem function of the schema, whatever its
# signature (an older release's included), and the row type they return.
DROP_CALLS: Final = """
DO $$
DECLARE
    v_function regprocedure;
BEGIN
    FOR v_function IN
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.proname LIKE 'convmem\\_%' AND n.nspname = current_schema()
    LOOP
        EXECUTE format('DROP FUNCTION %s', v_function);
    END LOOP;
END
$$;
DROP TYPE IF EXISTS convmem_row;
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What ``convmem migrate`` runs on a PostgreSQL database, in one transaction."""

    scripts: list[str]  # SQL scripts, in order (each records the versions it brings)
    names: list[str]  # the migrations they bring in


# A dialect's migrations include those of the dialects it builds on.
_BUILDS_ON = {"supabase": ("postgres",)}


def migrations_for(dialect: str) -> list[Migration]:
    """Every migration of ``dialect`` (``sqlite``, ``postgres`` or ``supabase``), by version.

    ``supabase`` is ``postgres`` plus the row-level security and grants of a Supabase
    project. Version 0101 (the first schema's REST functions) is retired: 0002 replaced it.
    """
    found = []
    for folder in (*_BUILDS_ON.get(dialect, ()), dialect):
        for entry in resources.files(__package__).joinpath(folder).iterdir():
            match = _NAME.match(entry.name)
            if match:
                found.append(
                    Migration(
                        int(match[1]), entry.name.removesuffix(".sql"), entry.read_text("utf-8")
                    )
                )
    found.sort(key=lambda m: m.version)
    if len({m.version for m in found}) != len(found):
        raise RuntimeError(f"two {dialect} migrations share a version number")
    return found


def pending(migrations: list[Migration], applied: set[int]) -> list[Migration]:
    return [m for m in migrations if m.version not in applied]


def newest_postgres_version() -> int:
    """The newest PostgreSQL migration this convmem has (its schema's version)."""
    return migrations_for("postgres")[-1].version


def unknown(applied: set[int]) -> set[int]:
    """Recorded versions newer than any this convmem has, among PostgreSQL's and among
    Supabase's: a newer release migrated the database (as during a rollback). A retired
    version (0101) is older, not unknown."""
    every = migrations_for("supabase")
    postgres = max(m.version for m in every if m.version < FIRST_SUPABASE_VERSION)
    supabase = max(m.version for m in every)
    return {v for v in applied if v > (postgres if v < FIRST_SUPABASE_VERSION else supabase)}


def check_readable(readable_by: int, applied: set[int]) -> None:
    """Refuse a schema migrated by a newer convmem that this one cannot use.

    A schema says, in ``convmem_readable_by()``, the oldest schema version whose code may
    still run on it: a migration that only adds (a function, a column with a default)
    leaves it, one that changes what older code relies on raises it. So a rollback onto
    the previous release works while it can, and is refused before any request when not.
    """
    mine = newest_postgres_version()
    if readable_by > mine:
        raise ConfigurationError(
            f"this database's convmem schema (migrations up to {max(applied)}) was migrated"
            f" by a newer convmem, and releases before schema {readable_by} cannot use it;"
            f" this one has schema {mine}: run the newer release (or restore the database"
            " from before its `convmem migrate`)"
        )


def schema_file(path: str) -> str:
    """A whole-schema file: ``postgres/schema.sql`` or ``supabase/security.sql``."""
    return resources.files(__package__).joinpath(path).read_text("utf-8")


def store_calls() -> str:
    """The marked section of ``postgres/schema.sql``: the row type and every function."""
    match = _CALLS.search(schema_file("postgres/schema.sql"))
    if match is None:
        raise RuntimeError("postgres/schema.sql has lost its convmem:calls markers")
    return match[0]


def postgres_plan(dialect: str, applied: set[int]) -> Plan:
    """What brings a PostgreSQL database with ``applied`` versions to the current schema.

    A database that has Supabase's lock-down keeps it whatever ``dialect`` asks for: its
    re-created functions would otherwise be callable through the project's public API.
    """
    if any(version >= FIRST_SUPABASE_VERSION for version in applied):
        dialect = "supabase"
    todo = pending(migrations_for(dialect), applied)
    if not todo:
        return Plan([], [])
    security = [schema_file("supabase/security.sql")] if dialect == "supabase" else []
    if not applied:
        scripts = [schema_file("postgres/schema.sql"), *security]
    else:
        scripts = [*(m.sql for m in todo), DROP_CALLS, store_calls(), *security]
    return Plan(scripts, [m.name for m in todo])
