"""The systems compared, each opened with its own clients on the rig's endpoints.

A ``System`` is a flow, the store its threads are created in before it is measured,
and the counter of its store round trips (the proxy in front of its store, or
SQLite's own count). ``open_seed_scenario`` opens the seed's scenario on PostgreSQL:
convmem, the seed before and after its fix, and the peers. ``open_convmem_by_store``
opens convmem on one store in every cache state.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from convmem.memory import Memory
from convmem.sealing import NO_SEALING, Sealing
from convmem.settings import Settings
from convmem.stores import store_from_url
from convmem_bench import peers
from convmem_bench.flows import ConvMemFlow, Flow, Forget, SeedBefore, SeedFixAsBuilt, SeedQueries

if TYPE_CHECKING:
    from convmem.stores.base import Store
    from convmem_bench.rig import Endpoint, Rig

POOL_SIZE = 10  # every system's pool: the same as convmem's default


@dataclass
class System:
    flow: Flow
    store: Store  # where threads are created for it (directly, not through the proxy)
    round_trips: Callable[[], int]  # store round trips so far, counted on the wire
    sealing: Sealing = NO_SEALING  # how the flow's Memory seals what it stores

    @property
    def name(self) -> str:
        return self.flow.name

    @property
    def steady(self) -> bool:
        """False for a flow that forgets its caches before each request (a cold cache,
        a new instance): not a state many conversations at once can be in."""
        return getattr(self.flow, "forget", "nothing") == "nothing"


@dataclass(frozen=True)
class CacheState:
    label: str
    redis: bool
    forget: Forget  # before each request: nothing, all (cold) or local (a new instance)


CACHE_STATES = (
    CacheState("cold", redis=False, forget="all"),
    CacheState("warm (L1)", redis=False, forget="nothing"),
    CacheState("+ Redis, cold", redis=True, forget="all"),
    CacheState("+ Redis, warm (L1)", redis=True, forget="nothing"),
    CacheState("+ Redis, L2 hit (new instance)", redis=True, forget="local"),
)


def convmem_settings(store_url: str, redis_url: str | None, prefix: str, **more: Any) -> Settings:
    return Settings.of(
        store_url=store_url,
        cache_url=redis_url,
        cache_prefix=prefix,
        max_turns=100_000,  # the 1000-turn threads
        # The watch for unannounced writes reads the store four times a second whatever
        # the load, not per request: counted apart (tests/test_partition.py), it would
        # only blur the per-request round trips counted here at the store's proxy.
        watch_unannounced=False,
        **more,
    )


async def open_memory(
    stack: contextlib.AsyncExitStack,
    endpoint: Endpoint,
    redis_url: str | None,
    prefix: str,
    **more: Any,
) -> Memory:
    settings = convmem_settings(endpoint.url, redis_url, prefix, **more)
    store = await stack.enter_async_context(endpoint.open_store(limits=settings.thread_limits))
    return await stack.enter_async_context(Memory.from_settings(settings, store=store))


async def open_pool(
    stack: contextlib.AsyncExitStack, url: str, **kwargs: Any
) -> AsyncConnectionPool[Any]:
    """A psycopg pool the size of convmem's, autocommit, closed with ``stack``."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url, min_size=1, max_size=POOL_SIZE, kwargs={"autocommit": True, **kwargs}, open=False
    )
    await pool.open()
    stack.push_async_callback(pool.close)
    return pool


@contextlib.asynccontextmanager
async def open_setup_store(rig: Rig, store: str) -> AsyncIterator[Store]:
    """Where the threads a system reads are created: straight to the database (fast at
    any latency), or SQLite's own file."""
    url = rig.endpoints["sqlite"].url if store == "sqlite" else rig.direct_dsn
    limits = convmem_settings(url, None, "convmem-bench:").thread_limits
    async with store_from_url(url, limits=limits) as setup:
        yield setup


@contextlib.asynccontextmanager
async def open_convmem_by_store(
    rig: Rig, store: str, redis_url: str, prefix: str, setup: Store
) -> AsyncIterator[list[System]]:
    """convmem on ``store`` in every cache state; one Memory with and one without Redis."""
    endpoint = rig.endpoints[store]
    async with contextlib.AsyncExitStack() as stack:
        plain = await open_memory(stack, endpoint, None, prefix)
        cached = await open_memory(stack, endpoint, redis_url, prefix)
        systems = []
        for state in CACHE_STATES:
            memory = cached if state.redis else plain
            flow = ConvMemFlow(f"{state.label} · {store}", memory, forget=state.forget)
            systems.append(System(flow, setup, round_trip_counter(endpoint, memory.store)))
        yield systems


SEED_SCENARIO = (
    "convmem, warm (L1)",
    "convmem, cold",
    "convmem + Redis, warm",
    SeedBefore.name,
    SeedFixAsBuilt.name,
    peers.LangGraphFlow.name,
    peers.LangChainHistoryFlow.name,
    peers.CashewsFlow.name,
)


@contextlib.asynccontextmanager
async def open_seed_scenario(
    endpoint: Endpoint,
    redis_url: str,
    prefix: str,
    setup: Store,
    names: tuple[str, ...] = SEED_SCENARIO,
) -> AsyncIterator[list[System]]:
    """The seed's request on PostgreSQL (the systems ``names`` lists): convmem, the seed
    before and after its fix, and the peers, each on its own clients, all through the
    same proxy. Only what the systems asked for is opened (the memory probe opens one)."""
    async with contextlib.AsyncExitStack() as stack:
        parts = _SeedParts(stack, endpoint, redis_url, prefix)
        flows = [await parts.flow(name) for name in names]
        meter = endpoint.meter
        count = (lambda: meter.round_trips) if meter is not None else (lambda: 0)
        yield [System(flow, setup, count) for flow in flows]


class _SeedParts:
    """The clients the seed scenario's systems are built from, each opened when first asked."""

    def __init__(
        self, stack: contextlib.AsyncExitStack, endpoint: Endpoint, redis_url: str, prefix: str
    ) -> None:
        self.stack = stack
        self.endpoint = endpoint
        self.redis_url = redis_url
        self.prefix = prefix
        self._memories: dict[bool, Memory] = {}
        self._seed_queries: SeedQueries | None = None

    async def memory(self, *, redis: bool) -> Memory:
        if redis not in self._memories:
            url = self.redis_url if redis else None
            self._memories[redis] = await open_memory(self.stack, self.endpoint, url, self.prefix)
        return self._memories[redis]

    async def store(self) -> Store:
        """The store the seed's flows and cashews write through (convmem's own)."""
        return (await self.memory(redis=False)).store

    async def seed_queries(self) -> SeedQueries:
        """The seed's queries, on one pool both of its flows share (as the seed did)."""
        if self._seed_queries is None:
            self._seed_queries = SeedQueries(await self.pool())
        return self._seed_queries

    async def pool(self, **kwargs: Any) -> AsyncConnectionPool[Any]:
        return await open_pool(self.stack, self.endpoint.url, **kwargs)

    async def redis(self) -> aioredis.Redis:
        client = aioredis.Redis.from_url(self.redis_url)
        self.stack.push_async_callback(client.aclose)
        return client

    async def flow(self, name: str) -> Flow:
        if name == "convmem, warm (L1)":
            return ConvMemFlow(name, await self.memory(redis=False), forget="nothing")
        if name == "convmem, cold":
            return ConvMemFlow(name, await self.memory(redis=False), forget="all")
        if name == "convmem + Redis, warm":
            return ConvMemFlow(name, await self.memory(redis=True), forget="nothing")
        if name == SeedBefore.name:
            return SeedBefore(await self.seed_queries(), await self.store())
        if name == SeedFixAsBuilt.name:
            queries, store = await self.seed_queries(), await self.store()
            return SeedFixAsBuilt(queries, store, await self.redis(), self.prefix + "seedfix:")
        if name == peers.LangGraphFlow.name:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
            from psycopg.rows import dict_row

            # As LangGraph's docs set the saver up: autocommit, no prepared statements,
            # dict rows; a pool the size of convmem's.
            saver = AsyncPostgresSaver(await self.pool(prepare_threshold=0, row_factory=dict_row))
            await saver.setup()
            return peers.LangGraphFlow(saver)
        if name == peers.LangChainHistoryFlow.name:
            from langchain_postgres import PostgresChatMessageHistory

            connection = await psycopg.AsyncConnection.connect(self.endpoint.url)
            self.stack.push_async_callback(connection.close)
            await PostgresChatMessageHistory.acreate_tables(
                connection, peers.LangChainHistoryFlow.table
            )
            return peers.LangChainHistoryFlow(connection)
        if name == peers.CashewsFlow.name:
            cashews = peers.CashewsFlow(
                await self.store(), self.redis_url, self.prefix + "cashews:"
            )
            self.stack.push_async_callback(cashews.aclose)
            return cashews
        raise ValueError(f"no system named {name!r}; the seed scenario has {SEED_SCENARIO}")


def round_trip_counter(endpoint: Endpoint, store: Store) -> Callable[[], int]:
    return lambda: endpoint.round_trips(store)
