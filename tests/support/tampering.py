"""What an attacker with the database does: statements against the raw tables, bypassing
convmem, on SQLite or on the PostgreSQL database behind a backend."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from tests.support.services import admin_connect

if TYPE_CHECKING:
    from tests.conftest import Backend


def alter(backend: Backend, pg_name: str | None, sql: str, *params: Any) -> None:
    """Run one statement (``%s`` placeholders) against the raw tables."""
    if backend.name == "sqlite":
        with sqlite3.connect(backend.url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql.replace("%s", "?"), params)
        return
    assert pg_name is not None
    with admin_connect(pg_name) as conn:
        conn.execute(sql.encode(), params)


def stored_content(
    backend: Backend, pg_name: str | None, table: str, thread_id: str
) -> dict[int, str]:
    """``seq -> content`` of a thread's rows in ``table`` (turns or summaries), as stored."""
    sql = f"SELECT seq, content FROM {table} WHERE thread_id = %s"
    if backend.name == "sqlite":
        with sqlite3.connect(backend.url.removeprefix("sqlite:///")) as conn:
            return dict(conn.execute(sql.replace("%s", "?"), (thread_id,)).fetchall())
    assert pg_name is not None
    with admin_connect(pg_name) as conn:
        rows = conn.execute(sql.encode(), (thread_id,)).fetchall()
    return {int(str(seq)): str(content) for seq, content in rows}
