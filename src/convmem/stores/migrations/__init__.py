"""Versioned schema migrations: plain numbered ``.sql`` files, one folder per dialect.

A file ``NNNN_name.sql`` is migration ``NNNN`` named ``NNNN_name``; each store applies
the pending ones in order, in one transaction, and records them in
``convmem_schema_migrations``. The PostgreSQL files record themselves too, so they can
be pasted into Supabase's SQL editor (or run by ``psql -f``) and a later
``convmem migrate`` applies only what is newer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


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
