"""Fixtures: every store set-up the contract runs on, with round trips counted on the wire.

Services are real: SQLite files, the machine's PostgreSQL (a database of this
run's own), and PgBouncer in transaction mode started here. A missing service is
a failure with the command that starts it, never a skip.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from convmem import Memory, Settings
from convmem.cache.protocol import L2Tier
from convmem.limits import ThreadLimits
from convmem.options import MemoryOptions
from convmem.stores.base import Store
from convmem.stores.postgres import PostgresStore
from convmem.stores.sqlite import SqliteStore
from convmem.stores.supabase import SupabaseStore
from convmem_bench.net import PgWireProxy
from convmem_bench.pgbouncer import PgBouncer
from convmem_bench.postgrest_standin import PostgrestStandIn
from tests.support.clock import FakeClock
from tests.support.services import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    RedisClusterServers,
    admin_connect,
    create_database,
    create_supabase_roles,
    delete_prefixed,
    drop_database,
    pg_url,
)

LIMITS = ThreadLimits(ttl=timedelta(hours=3), max_turns=50)
BACKENDS = ["sqlite", "postgres", "pgbouncer", "supabase"]


@dataclass
class Backend:
    """A store under test and a way to count its round trips where they happen."""

    name: str
    store: Store
    url: str
    clock: FakeClock
    round_trips: Callable[[], int]


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    name = create_database()
    yield name
    drop_database(name)


@pytest.fixture(scope="session")
def pg_proxy() -> Iterator[PgWireProxy]:
    proxy = PgWireProxy(PG_HOST, PG_PORT).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[PgBouncer]:
    bouncer = PgBouncer(PG_HOST, PG_PORT, PG_USER).start()
    yield bouncer
    bouncer.stop()


@pytest.fixture(scope="session")
def pgbouncer_proxy(pgbouncer: PgBouncer) -> Iterator[PgWireProxy]:
    proxy = PgWireProxy("127.0.0.1", pgbouncer.port).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def postgrest(pg_database: str) -> Iterator[PostgrestStandIn]:
    """The PostgREST stand-in over the run's database, with Supabase's roles and functions."""
    create_supabase_roles()

    async def migrate() -> None:  # the functions, RLS and grants, as `convmem migrate` does
        async with PostgresStore.from_url(pg_url(pg_database, migrations="supabase")):
            pass

    # Session fixtures may be set up from inside a test's event loop: migrate on a thread.
    with ThreadPoolExecutor(1) as worker:
        worker.submit(asyncio.run, migrate()).result()
    standin = PostgrestStandIn(pg_url(pg_database)).start()
    os.environ["SUPABASE_SERVICE_ROLE_KEY"] = standin.service_key  # child processes too
    yield standin
    standin.stop()


@pytest.fixture
def clean_pg(pg_database: str) -> str:
    """The run's database, migrated and emptied for this test."""
    with admin_connect(pg_database) as conn:
        exists = conn.execute("SELECT to_regclass('convmem_threads') IS NOT NULL").fetchone()
        if exists and exists[0]:
            conn.execute("TRUNCATE convmem_threads CASCADE")
        for table in ("convmem_sealing_keys", "convmem_unannounced"):
            found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
            if found and found[0]:
                conn.execute(f"TRUNCATE {table}")
    return pg_database


def make_backend(
    name: str, request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Backend:
    if name == "sqlite":
        url = f"sqlite:///{tmp_path}/convmem.db"
        sqlite = SqliteStore.from_url(url, limits=LIMITS, clock=clock)
        return Backend(name, sqlite, url, clock, lambda: sqlite.round_trips)
    database = request.getfixturevalue("clean_pg")
    if name == "supabase":
        standin: PostgrestStandIn = request.getfixturevalue("postgrest")
        supabase = SupabaseStore.from_url(
            standin.url, service_key=standin.service_key, limits=LIMITS, clock=clock
        )
        return Backend(name, supabase, standin.url, clock, lambda: standin.total)
    if name == "postgres":
        proxy: PgWireProxy = request.getfixturevalue("pg_proxy")
        url = pg_url(database, port=proxy.port)
    else:
        proxy = request.getfixturevalue("pgbouncer_proxy")
        url = pg_url(database, port=proxy.port, prepared_statements="false")
    store = PostgresStore.from_url(url, limits=LIMITS, clock=clock)
    return Backend(name, store, url, clock, lambda: proxy.round_trips)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A Redis Cluster of this run's own: three primaries, three replicas."""
    cluster = RedisClusterServers().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def single_redis_url() -> str:
    url = os.environ.get("CONVMEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
    except redis.RedisError as exc:
        raise RuntimeError(
            f"Redis is not answering at {url} ({exc}); start it with scripts/ensure-services.sh"
        ) from exc
    return url


@pytest.fixture(scope="session")
def redis_url(single_redis_url: str) -> str:
    """The Redis the cache tests use; modules that also run on a cluster override it."""
    return single_redis_url


@pytest.fixture(params=["redis", "redis-cluster"])
def redis_or_cluster_url(request: pytest.FixtureRequest, single_redis_url: str) -> Iterator[str]:
    """A single Redis, then the run's 3-primary, 3-replica cluster: modules whose tests
    must hold on both override ``redis_url`` with this. A cluster test collects garbage
    as it ends (after its instances closed), so what redis-py left open is closed within
    the test that tolerates it (``CLUSTER_LEAKS``), not in the next one."""
    if request.param == "redis-cluster":
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        yield cluster.url
        gc.collect()
    else:
        yield single_redis_url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix (and channel) of this test's own on the shared Redis."""
    prefix = f"convmem-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    delete_prefixed(redis_url, prefix)


MemoryFactory = Callable[..., Awaitable[Memory]]


@pytest.fixture(params=["sqlite", "postgres"])
async def cache_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """A store for the cache tests: the embedded one and Postgres (wire-counted)."""
    made = make_backend(request.param, request, tmp_path, FakeClock())
    async with made.store:
        yield made


@pytest.fixture
async def memories(
    cache_backend: Backend, redis_url: str, redis_prefix: str
) -> AsyncIterator[MemoryFactory]:
    """Build open Memory instances sharing the store and Redis: one per simulated process."""
    made: list[Memory] = []

    async def make(
        store: Any = None,
        *,
        breaker_clock: Callable[[], float] = time.monotonic,
        cache: L2Tier | None = None,
        **overrides: Any,
    ) -> Memory:
        """An instance from settings; or, given ``cache``, one on that L2 tier as passed."""
        store = store or cache_backend.store
        if cache is not None:
            overrides.setdefault("options", MemoryOptions(watch_unannounced=False))
            memory = Memory(store, cache=cache, timer=breaker_clock, **overrides)
        else:
            # The watch for unannounced writes polls the store every quarter lease, at
            # moments no test controls: it would land in the round trips these tests
            # count. The partition tests, and every test through `convmem serve`, run it.
            defaults = {
                "cache_url": redis_url,
                "cache_prefix": redis_prefix,
                "max_turns": 50,
                "watch_unannounced": False,
            }
            settings = Settings.of(store_url="sqlite:///unused", **{**defaults, **overrides})
            memory = Memory.from_settings(settings, store=store, timer=breaker_clock)
        await memory.open()
        made.append(memory)
        return memory

    yield make
    for memory in made:
        await memory.aclose()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made = make_backend(request.param, request, tmp_path, FakeClock())
    async with made.store:
        yield made


@pytest.fixture
def pg_name(backend: Backend, request: pytest.FixtureRequest) -> str | None:
    """The PostgreSQL database behind ``backend`` (None for SQLite), for raw statements."""
    return None if backend.name == "sqlite" else request.getfixturevalue("clean_pg")


@pytest.fixture
async def store(backend: Backend) -> Store:
    return backend.store


# redis-py's asyncio cluster client can leave connections and ClusterNode objects open
# when its start-up or a slot refresh meets a slow node (under the full suite's load a
# 0.25 s socket timeout is reached now and then; redis-py #3572, #4053), and the garbage
# collector closes them later with a ResourceWarning. The cluster variants of the cache
# tests tolerate those warnings and collect garbage when they end; their single-Redis
# variants, which run the same convmem code, keep every warning an error.
CLUSTER_LEAKS = (
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("redis_or_cluster_url") == "redis-cluster":
            for mark in CLUSTER_LEAKS:
                item.add_marker(mark)
