"""PostgresStore: PostgreSQL through psycopg 3 and an async connection pool.

Every contract call is one statement, ``SELECT * FROM convmem_<call>(...)``, on an
autocommit connection: one round trip, and it works behind a transaction-mode pooler
(PgBouncer, Supabase's Supavisor on 6543). The semantics are the SQL functions that
``SupabaseStore`` calls too (``stores.functions``); this module is only the transport.
Prepared statements are on by default and off behind such poolers: set
``?prepared_statements=false`` in the URL (automatic on port 6543). The functions'
own plans are cached by the server connection either way.
"""

from __future__ import annotations

import logging
import math
import select
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import psycopg
from psycopg.types.datetime import TimestamptzBinaryLoader, TimestamptzLoader
from psycopg.types.json import Jsonb, set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from convmem.clocks import WallClock, utc_now
from convmem.errors import ConfigurationError, StoreError, StoreUnavailableError
from convmem.stores import redact_url
from convmem.stores.functions import Call, FunctionStore, Row, refusal
from convmem.stores.migrations import check_readable, postgres_plan, unknown

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from psycopg import AsyncConnection

    from convmem.limits import ThreadLimits

# Serialises concurrent migrators (pg_advisory_xact_lock works in transaction-mode poolers).
_MIGRATION_LOCK: Final = 0x636F6E766D656D  # "convmem"
_SUPAVISOR_TRANSACTION_PORT: Final = 6543
_DIALECTS: Final = ("postgres", "supabase")


class PostgresStore(FunctionStore):
    """The PostgreSQL store: ``postgresql://user@host:5432/db[?prepared_statements=false]``.

    ``migrations="supabase"`` (``?migrations=supabase``) adds the row-level security and
    grants of a Supabase project to the schema ``convmem migrate`` applies.
    """

    scheme = "postgresql"

    def __init__(
        self,
        conninfo: str,
        *,
        limits: ThreadLimits | None = None,
        clock: WallClock = utc_now,
        min_size: int = 1,
        max_size: int = 10,
        prepared_statements: bool = True,
        connect_timeout: float = 3.0,
        pool_timeout: float = 2.0,
        migrations: str = "postgres",
    ) -> None:
        super().__init__(limits=limits, clock=clock)
        if migrations not in _DIALECTS:
            raise ConfigurationError(
                f"migrations={migrations!r}: use 'postgres', or 'supabase' to add the "
                "row-level security and grants of a Supabase project"
            )
        self.migrations = migrations
        self.conninfo = conninfo
        self.prepared_statements = prepared_statements
        self.connect_timeout = connect_timeout
        self.pool_timeout = pool_timeout
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={
                "autocommit": True,
                # None turns server-side prepared statements off (transaction-mode poolers).
                "prepare_threshold": 5 if prepared_statements else None,
                # Bounds for a server that does not answer: connecting, and a dead peer
                # found by TCP keepalives (libpq options, not startup parameters, so
                # PgBouncer and Supavisor accept them).
                "connect_timeout": max(1, math.ceil(connect_timeout)),
                "keepalives": 1,
                "keepalives_idle": 5,
                "keepalives_interval": 2,
                "keepalives_count": 2,
            },
            configure=_configure,
            timeout=pool_timeout,  # the longest a call waits for a connection
            # Stop retrying a failed connection soon: the next call that needs one then
            # connects at once, instead of waiting out the pool's growing backoff (seconds
            # after a restart).
            reconnect_timeout=connect_timeout,
            name="convmem",
            open=False,
        )
        self._opened = False
        self.dropped_connections = 0  # pooled connections found closed by the server
        self._statements: dict[tuple[str, tuple[str, ...]], str] = {}

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
            with _pool_warnings_muted():  # the failure is raised with its cause, once
                await self._pool.open(
                    wait=True, timeout=max(self.connect_timeout, self.pool_timeout)
                )
        except PoolTimeout as exc:
            await self._pool.close()
            raise StoreUnavailableError(
                f"cannot connect to PostgreSQL at {redact_url(self.conninfo)}:"
                f" {await self._why_not_connected() or exc}"
            ) from exc
        self._opened = True
        if migrate:
            await self.migrate()

    async def _why_not_connected(self) -> str | None:
        """The server's or the network's own words for a pool that could not connect (the
        pool says only that it timed out; psycopg logs the cause as a warning): one
        direct attempt, its error on one line."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.conninfo, connect_timeout=max(1, math.ceil(self.connect_timeout))
            )
        except psycopg.Error as exc:
            return " ".join(str(exc).split()).removeprefix("connection failed: ")
        await conn.close()
        return None

    async def aclose(self) -> None:
        if self._opened:
            self._opened = False
            await self._pool.close()

    @asynccontextmanager
    async def _connection(self, thread_id: str = "") -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection, with driver errors translated in this one place."""
        if not self._opened:
            raise StoreError("the PostgreSQL store is not open: use 'async with' or call open()")
        try:
            conn = await self._live_connection()
            try:
                yield conn
            finally:
                await self._pool.putconn(conn)
        except PoolTimeout as exc:
            raise StoreUnavailableError(
                f"no PostgreSQL connection available: {exc}; retry later"
            ) from exc
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(f"PostgreSQL is unavailable: {exc}; retry later") from exc
        except psycopg.Error as exc:
            refused = refusal(
                exc.diag.sqlstate,
                exc.diag.message_detail,
                thread_id=thread_id,
                max_turns=self.limits.max_turns,
            )
            if refused is not None:
                raise refused from None
            raise StoreError(f"PostgreSQL error: {exc}") from exc

    async def _live_connection(self) -> AsyncConnection[Any]:
        """A pooled connection the server has not closed.

        After a server restart every idle connection in the pool is dead; each would
        fail its first call. A server that closes a connection says so on its socket
        (a FATAL message, then EOF), while an idle connection of ours has nothing to
        read: so a readable socket marks a dead one, found without a round trip, and
        it is dropped for the next (the pool connects anew when none is left).
        """
        for _ in range(self._pool.max_size + 1):
            conn = await self._pool.getconn()
            if not _closed_by_server(conn):
                return conn
            self.dropped_connections += 1
            await conn.close()
            await self._pool.putconn(conn)  # a closed connection is discarded
        return await self._pool.getconn()

    # -- the transport -----------------------------------------------------------

    async def _rows(self, call: Call, *, thread_id: str = "") -> list[Row]:
        async with self._connection(thread_id) as conn:
            cursor = await conn.execute(self._statement(call), _params(call))
            return await cursor.fetchall()

    async def _value(self, call: Call) -> Any:
        async with self._connection() as conn:
            cursor = await conn.execute(self._statement(call), _params(call))
            row = await cursor.fetchone()
            return None if row is None else row[0]

    def _statement(self, call: Call) -> str:
        """``SELECT * FROM f(p_a => %(p_a)s, ...)``, built once per function and argument set."""
        key = (call.function, tuple(call.args))
        statement = self._statements.get(key)
        if statement is None:
            named = ", ".join(f"{name} => %({name})s" for name in call.args)
            select = "SELECT * FROM" if call.returns_rows else "SELECT"
            statement = self._statements[key] = f"{select} {call.function}({named})"
        return statement

    # -- schema ----------------------------------------------------------------

    async def migrate(self) -> list[str]:
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS convmem_schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute("SELECT version FROM convmem_schema_migrations")
            applied = {row[0] for row in await cursor.fetchall()}
            if unknown(applied):
                cursor = await conn.execute("SELECT convmem_readable_by()")
                found = await cursor.fetchone()
                check_readable(int(found[0]) if found else 0, applied)
            plan = postgres_plan(self.migrations, applied)
            for script in plan.scripts:
                # No parameters: a script holds many statements (and records itself).
                await conn.execute(script.encode())
        return plan.names

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.execute("SELECT 1")


def _closed_by_server(conn: AsyncConnection[Any]) -> bool:
    if conn.closed or conn.broken:
        return True
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError):  # no socket any more
        return True
    return bool(readable)


def _params(call: Call) -> dict[str, Any]:
    return {
        name: Jsonb(value, dumps=orjson.dumps) if isinstance(value, dict | list) else value
        for name, value in call.args.items()
    }


class _UtcTimestamptzLoader(TimestamptzLoader):
    def load(self, data: Any) -> datetime:
        return super().load(data).astimezone(UTC)


class _UtcTimestamptzBinaryLoader(TimestamptzBinaryLoader):
    def load(self, data: Any) -> datetime:
        return super().load(data).astimezone(UTC)


@contextmanager
def _pool_warnings_muted() -> Iterator[None]:
    """psycopg-pool logs each failed connection attempt as a warning of several lines;
    while opening, the one error that says why replaces them."""
    logger = logging.getLogger("psycopg.pool")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


async def _configure(conn: AsyncConnection[Any]) -> None:
    # Only this connection's adapters, no I/O: JSON decoded by orjson, times in UTC
    # whatever the server's TimeZone.
    set_json_loads(orjson.loads, conn)
    conn.adapters.register_loader("timestamptz", _UtcTimestamptzLoader)
    conn.adapters.register_loader("timestamptz", _UtcTimestamptzBinaryLoader)
