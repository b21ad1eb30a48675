"""PostgresStore: PostgreSQL through psycopg 3 and an async connection pool.

Every contract call is exactly one SQL statement on an autocommit connection
(CTEs, not multi-statement transactions), so each costs one round trip and the
store works behind a transaction-mode pooler (PgBouncer, Supabase's Supavisor on
6543). Prepared statements are on by default and off behind such poolers: set
``?prepared_statements=false`` in the URL (automatic on port 6543).

Concurrent appends to one thread serialise on the thread row: the ``UPDATE``
that bumps ``version`` takes the row lock and re-reads the latest row, so
``seq = base + n`` is contiguous and unique whatever the interleaving.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import psycopg
from psycopg.types.json import Jsonb, set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from convmem.errors import (
    ConfigurationError,
    InvalidInputError,
    StoreError,
    StoreUnavailableError,
    ThreadExpiredError,
    ThreadFullError,
    ThreadNotFoundError,
)
from convmem.models import Thread, ThreadPage, Turn
from convmem.stores import redact_url
from convmem.stores._rows import (
    THREAD_COLUMNS,
    TURN_COLUMNS,
    stored_turn,
    summary_from_values,
    turn_from_json,
    turn_from_values,
    turn_params,
)
from convmem.stores.base import (
    AppendResult,
    Clock,
    NewThread,
    SnapshotStore,
    check_list_limit,
    decode_cursor,
    encode_cursor,
    key_conflict,
    order_append_result,
    utc_now,
)
from convmem.stores.migrations import migrations_for, pending

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from psycopg import AsyncConnection

    from convmem.limits import ThreadLimits

# Serialises concurrent migrators (pg_advisory_xact_lock works in transaction-mode poolers).
_MIGRATION_LOCK: Final = 0x636F6E766D656D  # "convmem"
_SUPAVISOR_TRANSACTION_PORT: Final = 6543

_HEADER = (
    "th.id::text, th.version, th.tool_name, th.parent_id::text, th.owner, th.metadata,"
    " th.created_at, th.updated_at, th.expires_at"
)
_TURNS = ", ".join(f"tu.{c}" for c in TURN_COLUMNS)

# load and load_since: the header joined to the turns after `since`, one snapshot.
_LOAD: Final = f"""
SELECT {_HEADER}, {_TURNS}
FROM convmem_threads th
LEFT JOIN convmem_turns tu ON tu.thread_id = th.id AND tu.seq > %(since)s
WHERE th.id = %(id)s AND th.owner IS NOT DISTINCT FROM %(owner)s AND th.expires_at > %(now)s
ORDER BY tu.seq
"""

_INPUT_COLUMNS: Final = (
    "ord int, role text, content text, tool_name text, model_provider text, model_name text,"
    " files jsonb, images jsonb, metadata jsonb, key text"
)
_TURN_INSERT_COLUMNS: Final = (
    "thread_id, seq, role, content, tool_name, model_provider, model_name,"
    " files, images, metadata, key, created_at"
)

_CREATE: Final = f"""
WITH th AS (
    INSERT INTO convmem_threads
        (id, version, tool_name, parent_id, owner, metadata, created_at, updated_at, expires_at)
    VALUES (%(id)s, %(version)s, %(tool_name)s, %(parent_id)s, %(owner)s, %(metadata)s,
            %(now)s, %(now)s, %(expires)s)
    RETURNING id
)
INSERT INTO convmem_turns ({_TURN_INSERT_COLUMNS})
SELECT th.id, x.ord, x.role, x.content, x.tool_name, x.model_provider, x.model_name,
       x.files, x.images, x.metadata, x.key, %(now)s
FROM th, jsonb_to_recordset(%(turns)s::jsonb) AS x({_INPUT_COLUMNS})
"""

# append: one statement. `existing` finds turns whose key is already stored (an
# idempotent retry); `bumped` locks the thread row and re-checks owner, expiry and
# room against the latest committed row; `inserted` numbers the fresh turns after
# the locked base version. `cur` (the statement's snapshot) only explains a refusal.
_APPEND: Final = f"""
WITH input AS (
    SELECT * FROM jsonb_to_recordset(%(turns)s::jsonb) AS x({_INPUT_COLUMNS})
),
cur AS (
    SELECT version, expires_at FROM convmem_threads
    WHERE id = %(id)s AND owner IS NOT DISTINCT FROM %(owner)s
),
existing AS (
    SELECT {_TURNS} FROM convmem_turns tu
    WHERE tu.thread_id = %(id)s AND tu.key IN (SELECT key FROM input WHERE key IS NOT NULL)
),
conflict AS (
    SELECT e.key FROM existing e JOIN input i ON i.key = e.key
    WHERE e.role <> i.role OR e.content <> i.content
    LIMIT 1
),
fresh AS (
    SELECT i.*, row_number() OVER (ORDER BY i.ord)::int AS rn FROM input i
    WHERE i.key IS NULL OR i.key NOT IN (SELECT key FROM existing)
),
bumped AS (
    UPDATE convmem_threads th
    SET version = th.version + (SELECT count(*) FROM fresh),
        updated_at = %(now)s, expires_at = %(expires)s
    WHERE th.id = %(id)s AND th.owner IS NOT DISTINCT FROM %(owner)s
      AND th.expires_at > %(now)s
      AND th.version + (SELECT count(*) FROM fresh) <= %(max_turns)s
      AND NOT EXISTS (SELECT 1 FROM conflict)
    RETURNING th.version AS version, th.version - (SELECT count(*) FROM fresh)::int AS base
),
inserted AS (
    INSERT INTO convmem_turns ({_TURN_INSERT_COLUMNS})
    SELECT %(id)s, b.base + f.rn, f.role, f.content, f.tool_name, f.model_provider,
           f.model_name, f.files, f.images, f.metadata, f.key, %(now)s
    FROM fresh f CROSS JOIN bumped b
    RETURNING {", ".join(TURN_COLUMNS)}
)
SELECT b.version, (SELECT count(*) FROM fresh)::int AS fresh,
       c.version AS cur_version, c.expires_at AS cur_expires_at,
       (SELECT key FROM conflict) AS conflict_key,
       (SELECT coalesce(jsonb_agg(to_jsonb(r)), '[]'::jsonb)
          FROM (SELECT * FROM inserted UNION ALL SELECT * FROM existing) r) AS turns
FROM (SELECT 1) one
LEFT JOIN bumped b ON true
LEFT JOIN cur c ON true
"""


class PostgresStore(SnapshotStore):
    """The PostgreSQL store: ``postgresql://user@host:5432/db[?prepared_statements=false]``."""

    scheme = "postgresql"

    def __init__(
        self,
        conninfo: str,
        *,
        limits: ThreadLimits | None = None,
        clock: Clock = utc_now,
        min_size: int = 1,
        max_size: int = 10,
        prepared_statements: bool = True,
        connect_timeout: float = 10.0,
        migrations: str = "postgres",
    ) -> None:
        super().__init__(limits=limits, clock=clock)
        if migrations not in ("postgres", "supabase"):
            raise ConfigurationError(
                f"migrations={migrations!r}: use 'postgres', or 'supabase' to add the REST "
                "functions, row-level security and grants of a Supabase project"
            )
        self.migrations = migrations
        self.conninfo = conninfo
        self.prepared_statements = prepared_statements
        self.connect_timeout = connect_timeout
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={
                "autocommit": True,
                # None turns server-side prepared statements off (transaction-mode poolers).
                "prepare_threshold": 5 if prepared_statements else None,
            },
            configure=_configure,
            timeout=connect_timeout,
            name="convmem",
            open=False,
        )
        self._opened = False

    @classmethod
    def from_url(cls, url: str, *, prepared_statements: bool | None = None, **options: Any) -> Self:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        flag = query.pop("prepared_statements", None)
        if "migrations" in query:
            options.setdefault("migrations", query.pop("migrations"))
        if prepared_statements is None:
            if flag is not None:
                if flag.lower() not in {"true", "false", "on", "off", "1", "0"}:
                    raise ConfigurationError(
                        f"prepared_statements={flag!r} in the store URL: use true or false"
                    )
                prepared_statements = flag.lower() in {"true", "on", "1"}
            else:
                prepared_statements = parts.port != _SUPAVISOR_TRANSACTION_PORT
        scheme = (
            "postgresql" if parts.scheme.lower() in {"postgres", "postgresql"} else parts.scheme
        )
        conninfo = urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))
        return cls(conninfo, prepared_statements=prepared_statements, **options)

    # -- lifetime --------------------------------------------------------------

    async def open(self, *, migrate: bool = True) -> None:
        if self._opened:
            return
        try:
            await self._pool.open(wait=True, timeout=self.connect_timeout)
        except PoolTimeout as exc:
            await self._pool.close()
            raise StoreUnavailableError(
                f"cannot connect to PostgreSQL at {redact_url(self.conninfo)}: {exc}"
            ) from exc
        self._opened = True
        if migrate:
            await self.migrate()

    async def aclose(self) -> None:
        if self._opened:
            self._opened = False
            await self._pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection, with driver errors translated in this one place."""
        if not self._opened:
            raise StoreError("the PostgreSQL store is not open: use 'async with' or call open()")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise StoreUnavailableError(f"no PostgreSQL connection available: {exc}") from exc
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(f"PostgreSQL is unavailable: {exc}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL error: {exc}") from exc

    async def _fetch(self, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        async with self._connection() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall()

    # -- schema ----------------------------------------------------------------

    async def migrate(self) -> list[str]:
        names: list[str] = []
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS convmem_schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute("SELECT version FROM convmem_schema_migrations")
            applied = {row[0] for row in await cursor.fetchall()}
            for migration in pending(migrations_for(self.migrations), applied):
                await conn.execute(
                    migration.sql.encode()
                )  # no parameters: may hold many statements
                await conn.execute(
                    "INSERT INTO convmem_schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                names.append(migration.name)
        return names

    async def ping(self) -> None:
        await self._fetch("SELECT 1", {})

    # -- reads -----------------------------------------------------------------

    async def _read(
        self, thread_id: str, owner: str | None, since: int
    ) -> tuple[dict[str, Any], tuple[Turn, ...]] | None:
        rows = await self._fetch(
            _LOAD, {"id": thread_id, "owner": owner, "since": since, "now": self.clock()}
        )
        if not rows:
            return None
        header = _header(rows[0])
        turns = tuple(
            _turn(row[len(THREAD_COLUMNS) :])
            for row in rows
            if row[len(THREAD_COLUMNS)] is not None
        )
        return header, turns

    async def list(
        self, *, owner: str | None, limit: int = 50, cursor: str | None = None
    ) -> ThreadPage:
        check_list_limit(limit)
        # `owner = x` / `owner IS NULL` rather than IS NOT DISTINCT FROM, so the index is used.
        sql = f"SELECT {_HEADER} FROM convmem_threads th WHERE th.expires_at > %(now)s AND "
        sql += "th.owner IS NULL" if owner is None else "th.owner = %(owner)s"
        params: dict[str, Any] = {"owner": owner, "now": self.clock(), "limit": limit + 1}
        if cursor is not None:
            params["after_at"], params["after_id"] = decode_cursor(cursor)
            sql += " AND (th.updated_at, th.id) < (%(after_at)s, %(after_id)s::uuid)"
        sql += " ORDER BY th.updated_at DESC, th.id DESC LIMIT %(limit)s"
        rows = await self._fetch(sql, params)
        summaries = tuple(summary_from_values(_header(r)) for r in rows[:limit])
        last = summaries[-1] if len(rows) > limit else None
        return ThreadPage(summaries, encode_cursor(last.updated_at, last.id) if last else None)

    # -- writes ----------------------------------------------------------------

    async def create(self, thread: NewThread, turns: Sequence[Turn] = ()) -> Thread:
        if len(turns) > self.limits.max_turns:
            raise ThreadFullError(
                f"a thread holds at most {self.limits.max_turns} turns; {len(turns)} were given",
                thread_id=thread.id,
                max_turns=self.limits.max_turns,
            )
        now = self.clock()
        expires = now + self.limits.ttl
        params = {
            "id": thread.id,
            "version": len(turns),
            "tool_name": thread.tool_name,
            "parent_id": thread.parent_id,
            "owner": thread.owner,
            "metadata": Jsonb(dict(thread.metadata), dumps=orjson.dumps),
            "now": now,
            "expires": expires,
            "turns": _turns_json(turns),
        }
        try:
            async with self._connection() as conn:
                await conn.execute(_CREATE, params)
        except StoreError as exc:
            if isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                raise InvalidInputError(f"a thread with id {thread.id} already exists") from None
            raise
        stored = tuple(stored_turn(turn, seq, now) for seq, turn in enumerate(turns, 1))
        return Thread(
            thread.id,
            stored,
            thread.tool_name,
            thread.parent_id,
            thread.owner,
            thread.metadata,
            now,
            now,
            expires,
        )

    async def append(
        self, thread_id: str, turns: Sequence[Turn], *, owner: str | None
    ) -> AppendResult:
        # A second attempt only when the first lost a race it could not see in its
        # snapshot: the same new key committed concurrently, or a refusal the
        # snapshot cannot explain.
        for attempt in (1, 2):
            now = self.clock()
            expires = now + self.limits.ttl
            params: dict[str, Any] = {
                "id": thread_id,
                "owner": owner,
                "now": now,
                "expires": expires,
                "max_turns": self.limits.max_turns,
                "turns": _turns_json(turns),
            }
            try:
                rows = await self._fetch(_APPEND, params)
            except StoreError as exc:
                if attempt == 1 and isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                    continue
                raise
            version, fresh, cur_version, cur_expires_at, conflict_key, stored_json = rows[0]
            if version is not None:
                stored = [turn_from_json(item) for item in stored_json]
                return AppendResult(
                    thread_id,
                    version,
                    fresh,
                    order_append_result(turns, stored),
                    now,
                    expires,
                )
            if cur_version is None:
                raise ThreadNotFoundError(f"no thread {thread_id}", thread_id=thread_id)
            if conflict_key is not None:
                raise key_conflict(thread_id, conflict_key)
            if cur_expires_at <= now:
                raise ThreadExpiredError(f"thread {thread_id} has expired", thread_id=thread_id)
            if cur_version + fresh > self.limits.max_turns or attempt == 2:
                raise ThreadFullError(
                    f"thread {thread_id} has {cur_version} of at most {self.limits.max_turns} "
                    f"turns; {fresh} more do not fit",
                    thread_id=thread_id,
                    max_turns=self.limits.max_turns,
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def delete(self, thread_id: str, *, owner: str | None) -> bool:
        async with self._connection() as conn:
            cursor = await conn.execute(
                "DELETE FROM convmem_threads WHERE id = %s AND owner IS NOT DISTINCT FROM %s",
                (thread_id, owner),
            )
            return cursor.rowcount > 0

    async def purge_expired(self) -> int:
        async with self._connection() as conn:
            cursor = await conn.execute(
                "DELETE FROM convmem_threads WHERE expires_at <= %s", (self.clock(),)
            )
            return cursor.rowcount


async def _configure(conn: AsyncConnection[Any]) -> None:
    # Decode json/jsonb with orjson: no I/O, only this connection's adapters.
    set_json_loads(orjson.loads, conn)


def _turns_json(turns: Sequence[Turn]) -> Jsonb:
    return Jsonb([{"ord": i, **turn_params(t)} for i, t in enumerate(turns, 1)], dumps=orjson.dumps)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _header(row: Sequence[Any]) -> dict[str, Any]:
    header = dict(zip(THREAD_COLUMNS, row[: len(THREAD_COLUMNS)], strict=True))
    for name in ("created_at", "updated_at", "expires_at"):
        header[name] = _utc(header[name])
    return header


def _turn(values: Sequence[Any]) -> Turn:
    *rest, created_at = values
    return turn_from_values((*rest, _utc(created_at)))
