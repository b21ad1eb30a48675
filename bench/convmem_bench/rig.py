"""The benchmark's rig: a database of its own, the stores' endpoints and their proxies.

Every networked store is reached through a counting proxy in a process of its own:

- PostgreSQL directly, and through PgBouncer in transaction mode (Debian's
  ``pgbouncer``, as ``make deps`` installs it), each behind a ``PgWireProxy``;
- the Supabase store through the PostgREST stand-in (``postgrest_standin``, also in its
  own process, on the same database), behind an ``HttpWireProxy``.

Setting ``latency`` delays each round trip at all three proxies. SQLite is a file in a
temporary folder: it has no network, so no latency, and its round trips are the store's
own hops to its worker thread.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis.asyncio as aioredis

from convmem.stores import store_from_url
from convmem.stores.postgres import PostgresStore
from convmem_bench.net import HttpWireProxy, PgWireProxy, ServerProcess, metered_proxy_process
from convmem_bench.pgbouncer import PgBouncer
from convmem_bench.postgrest_standin import (
    SERVICE_KEY,
    PostgrestStandIn,
    create_supabase_roles,
)

if TYPE_CHECKING:
    from convmem.stores.base import Store
    from convmem_bench.net import SharedMeter


@dataclass
class Endpoint:
    """One store as the bench reaches it, and how its round trips are counted."""

    store: str  # "postgres", "pgbouncer", "supabase", "sqlite"
    url: str  # the store URL
    meter: SharedMeter | None  # None: counted by the store itself (SQLite)
    options: dict[str, Any] = field(default_factory=dict)  # for store_from_url

    def open_store(self, **options: Any) -> Store:
        """A new store on this endpoint (no I/O until it is opened); the caller closes it."""
        return store_from_url(self.url, **self.options, **options)

    def round_trips(self, store: Store) -> int:
        """Round trips so far: at the proxy, or SQLite's own count of worker hops."""
        if self.meter is not None:
            return self.meter.round_trips
        return int(getattr(store, "round_trips", 0))


class Rig:
    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.database = f"convmem_bench_{uuid.uuid4().hex[:10]}"
        self.folder = Path(tempfile.mkdtemp(prefix="convmem-bench-"))
        self.endpoints: dict[str, Endpoint] = {}
        self._stack = contextlib.ExitStack()

    async def __aenter__(self) -> Rig:
        try:
            await self._open()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stack.close()
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def direct_dsn(self) -> str:
        """The bench database without a proxy (set-up and the memory probe use it)."""
        host, port = _host_port(self.admin_dsn)
        return _with(self.admin_dsn, self.database, host=host, port=port)

    def set_latency(self, milliseconds: float) -> None:
        """Hold every round trip to every networked store this long from now on."""
        for endpoint in self.endpoints.values():
            if endpoint.meter is not None:
                endpoint.meter.delay = milliseconds / 1000

    async def _open(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.database}"')
            create_supabase_roles(admin)
        # The schema with Supabase's functions, grants and row-level security; the
        # Postgres store's tables are the same.
        async with PostgresStore.from_url(_with_query(self.direct_dsn, "migrations=supabase")):
            pass
        host, port = _host_port(self.admin_dsn)
        user = urlsplit(self.admin_dsn).username or "postgres"
        self.endpoints["postgres"] = self._proxied_pg("postgres", host, port)
        bouncer = PgBouncer(host, port, user).start()
        self._stack.callback(bouncer.stop)
        self.endpoints["pgbouncer"] = self._proxied_pg("pgbouncer", "127.0.0.1", bouncer.port)
        standin = self._process(ServerProcess(partial(PostgrestStandIn, self.direct_dsn)))
        proxy, meter = metered_proxy_process(HttpWireProxy, "127.0.0.1", standin.port)
        self._process(proxy)
        self.endpoints["supabase"] = Endpoint(
            "supabase",
            f"supabase+http://127.0.0.1:{proxy.port}",
            meter,
            {"service_key": SERVICE_KEY},
        )
        self.endpoints["sqlite"] = Endpoint("sqlite", f"sqlite:///{self.folder}/bench.db", None)

    def _proxied_pg(self, name: str, host: str, port: int) -> Endpoint:
        proxy, meter = metered_proxy_process(PgWireProxy, host, port)
        self._process(proxy)
        dsn = _with(self.admin_dsn, self.database, host="127.0.0.1", port=proxy.port)
        if name == "pgbouncer":  # transaction pooling: no session state
            dsn = _with_query(dsn, "prepared_statements=false")
        return Endpoint(name, dsn, meter)

    def _process(self, server: ServerProcess) -> ServerProcess:
        server.start()
        self._stack.callback(server.stop)
        return server


async def drop_redis_keys(redis_url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (the bench's keys on the shared Redis)."""
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async for key in redis.scan_iter(match=f"{prefix}*"):
            await redis.delete(key)
    finally:
        await redis.aclose()


def _with_query(dsn: str, parameter: str) -> str:
    return f"{dsn}{'&' if urlsplit(dsn).query else '?'}{parameter}"


def _host_port(dsn: str) -> tuple[str, int]:
    parts = urlsplit(dsn)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def _with(dsn: str, database: str, *, host: str, port: int) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = f"{netloc[0]}@" if len(netloc) == 2 else ""
    return urlunsplit((parts.scheme, f"{userinfo}{host}:{port}", f"/{database}", parts.query, ""))
