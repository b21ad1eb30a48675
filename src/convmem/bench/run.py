"""``convmem bench``: every flow side by side in one run, on the same PostgreSQL and Redis.

Latency is injected per round trip by a proxy in front of PostgreSQL, and round trips
are counted at that proxy, on the wire. Figures are medians of many runs; the machine
is noisy, so only ratios measured in the same run are compared.
"""

from __future__ import annotations

import asyncio
import platform
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from convmem.bench.flows import ConvMemFlow, Flow, SeedBefore, SeedFixAsBuilt, SeedQueries, exchange
from convmem.bench.net import PgWireProxy
from convmem.export import turn_to_dict
from convmem.memory import Memory
from convmem.models import Turn
from convmem.settings import Settings
from convmem.stores.base import NewThread


@dataclass
class FlowResult:
    flow: str
    latency_ms: float
    p50_ms: float
    p99_ms: float
    round_trips: float  # per request, counted at the proxy
    requests_per_second: float
    turns: int = 50  # turns in each thread before the run


@dataclass
class ConcurrencyResult:
    flow: str
    latency_ms: float
    conversations: int
    requests_per_second: float
    round_trips: float  # per request


@dataclass
class LayerResult:
    operation: str
    p50_us: float
    floor: str | None = None
    floor_p50_us: float | None = None


@dataclass
class Report:
    machine: str
    quick: bool
    flows: list[FlowResult] = field(default_factory=list)
    layers: list[LayerResult] = field(default_factory=list)
    append_by_length: dict[int, float] = field(default_factory=dict)  # turns -> p50 µs
    concurrency: list[ConcurrencyResult] = field(default_factory=list)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)

    @classmethod
    def from_json(cls, data: bytes) -> Report:
        """A report read back from ``to_json`` (to re-render BENCHMARKS.md without a rerun)."""
        raw = orjson.loads(data)
        return cls(
            machine=raw["machine"],
            quick=raw["quick"],
            flows=[FlowResult(**f) for f in raw["flows"]],
            layers=[LayerResult(**layer) for layer in raw["layers"]],
            append_by_length={int(k): v for k, v in raw["append_by_length"].items()},
            concurrency=[ConcurrencyResult(**c) for c in raw.get("concurrency", [])],
        )


@dataclass(frozen=True)
class Plan:
    latencies_ms: tuple[float, ...]
    requests: int
    threads: int
    layer_runs: int
    lengths: tuple[int, ...]
    conversations: int = 32  # concurrent conversations over a Zipf-popular set of threads
    concurrent_requests: int = 256
    concurrent_latencies_ms: tuple[float, ...] = (0.0, 10.0)
    popular_threads: int = 64
    thread_lengths: tuple[int, ...] = (10, 1000)  # besides 50, at the length latency
    length_latency_ms: float = 10.0


QUICK = Plan(
    latencies_ms=(0.0, 2.0),
    requests=8,
    threads=2,
    layer_runs=30,
    lengths=(10, 100),
    conversations=4,
    concurrent_requests=16,
    concurrent_latencies_ms=(0.0,),
    popular_threads=8,
    thread_lengths=(10,),
    length_latency_ms=0.0,
)
FULL = Plan(
    latencies_ms=(0.0, 1.0, 10.0, 50.0),
    requests=40,
    threads=8,
    layer_runs=400,
    lengths=(10, 50, 1000),
)


async def run(
    admin_dsn: str, redis_url: str, *, quick: bool, log: Callable[[str], None] = print
) -> Report:
    plan = QUICK if quick else FULL
    database = f"convmem_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    host, port = _host_port(admin_dsn)
    proxy = PgWireProxy(host, port).start()
    report = Report(machine=_machine(), quick=quick)
    try:
        await _run(report, plan, _with(admin_dsn, database, port=proxy.port), redis_url, proxy, log)
    finally:
        proxy.stop()
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return report


async def _run(
    report: Report,
    plan: Plan,
    dsn: str,
    redis_url: str,
    proxy: PgWireProxy,
    log: Callable[[str], None],
) -> None:
    prefix = f"convmem-bench-{uuid.uuid4().hex[:8]}:"
    base = {"store_url": dsn, "max_turns": 100_000, "cache_prefix": prefix}
    redis = aioredis.Redis.from_url(redis_url)
    async with (
        Memory(settings=Settings.load(**base, cache_url=None)) as plain,
        Memory(settings=Settings.load(**base, cache_url=redis_url)) as cached,
        AsyncConnectionPool(dsn, min_size=1, max_size=10, kwargs={"autocommit": True}) as pool,
    ):
        store = plain.store
        queries = SeedQueries(pool)
        peers = await _peers(dsn, store, redis_url, prefix)
        flows: list[Flow] = [
            ConvMemFlow("convmem, warm (L1)", plain, cold=False),
            ConvMemFlow("convmem, cold", plain, cold=True),
            ConvMemFlow("convmem + Redis, warm", cached, cold=False),
            SeedBefore(queries, store),
            SeedFixAsBuilt(queries, store, redis, prefix + "seedfix:"),
            *peers.flows,
        ]
        for latency in plan.latencies_ms:
            proxy.delay = latency / 1000
            for flow in flows:
                result = await _measure_flow(flow, store, proxy, plan, latency)
                report.flows.append(result)
                log(
                    f"{latency:>5.0f} ms  {flow.name:34} p50 {result.p50_ms:8.2f} ms  "
                    f"{result.round_trips:.1f} round trips"
                )
        proxy.delay = plan.length_latency_ms / 1000
        for length in plan.thread_lengths:
            for flow in flows:
                result = await _measure_flow(
                    flow, store, proxy, plan, plan.length_latency_ms, turns=length
                )
                report.flows.append(result)
                log(f"{length:>5} turns {flow.name:34} p50 {result.p50_ms:8.2f} ms")
        for latency in plan.concurrent_latencies_ms:
            proxy.delay = latency / 1000
            for flow in flows:
                if flow.name == "convmem, cold":
                    continue  # a cold cache under 32 concurrent conversations is not a state
                concurrent = await _measure_concurrency(flow, store, proxy, plan, latency)
                report.concurrency.append(concurrent)
                log(
                    f"{latency:>5.0f} ms  {flow.name:34} "
                    f"{concurrent.requests_per_second:8.0f} req/s, "
                    f"{plan.conversations} conversations"
                )
        proxy.delay = 0.0
        report.layers = await _measure_layers(cached, pool, redis, plan)
        for layer in report.layers:
            log(f"{layer.operation:40} p50 {layer.p50_us:9.1f} µs")
        report.append_by_length = await _measure_append(plain, store, plan)
        log(f"append p50 by thread length: {report.append_by_length}")
        await peers.aclose()
    for key in [k async for k in redis.scan_iter(match=f"{prefix}*")]:
        await redis.delete(key)
    await redis.aclose()


def _history_turns(turns: int) -> list[Turn]:
    return [t for n in range(turns // 2) for t in exchange(-n - 1)]


async def _new_thread(store: Any, turns: int) -> str:
    thread_id = str(uuid.uuid4())
    await store.create(NewThread(thread_id, "chat", None, None, {}), [])
    batch = _history_turns(turns)
    for start in range(0, len(batch), 500):
        await store.append(thread_id, batch[start : start + 500], owner=None)
    return thread_id


@dataclass
class _Peers:
    flows: list[Flow]
    closers: list[Callable[[], Awaitable[object]]]

    async def aclose(self) -> None:
        for close in self.closers:
            await close()


async def _peers(dsn: str, store: Any, redis_url: str, prefix: str) -> _Peers:
    """The peers' own clients, on the same database (through the same proxy) and Redis."""
    from langchain_postgres import PostgresChatMessageHistory
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row

    from convmem.bench.peers import CashewsFlow, LangChainHistoryFlow, LangGraphFlow

    # As LangGraph's docs set the saver up: autocommit, no prepared statements, dict rows.
    graph_pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn,
        min_size=1,
        max_size=10,  # the same pool size as convmem's
        open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    )
    await graph_pool.open()
    saver = AsyncPostgresSaver(graph_pool)
    await saver.setup()
    connection = await psycopg.AsyncConnection.connect(dsn)
    await PostgresChatMessageHistory.acreate_tables(connection, LangChainHistoryFlow.table)
    cashews = CashewsFlow(store, redis_url, prefix + "cashews:")
    return _Peers(
        flows=[LangGraphFlow(saver), LangChainHistoryFlow(connection), cashews],
        closers=[graph_pool.close, connection.close, cashews.aclose],
    )


async def _measure_flow(
    flow: Flow, store: Any, proxy: PgWireProxy, plan: Plan, latency: float, turns: int = 50
) -> FlowResult:
    threads = [await _new_thread(store, turns) for _ in range(plan.threads)]
    setup = getattr(flow, "setup", None)  # a peer keeps the same history its own way
    for thread_id in threads:
        if setup is not None:
            await setup(thread_id, _history_turns(turns))
    for i, thread_id in enumerate(threads):  # warm-up, unmeasured
        await flow.request(thread_id, 10_000 + i)
    times: list[float] = []
    trips: list[int] = []
    for n in range(plan.requests):
        thread_id = threads[n % len(threads)]
        await flow.prepare(thread_id)
        before = proxy.round_trips
        start = time.perf_counter()
        await flow.request(thread_id, n)
        times.append((time.perf_counter() - start) * 1000)
        trips.append(proxy.round_trips - before)
    return FlowResult(
        flow=flow.name,
        latency_ms=latency,
        p50_ms=statistics.median(times),
        p99_ms=_quantile(times, 0.99),
        round_trips=statistics.mean(trips),
        requests_per_second=1000 / statistics.mean(times),
        turns=turns,
    )


async def _measure_concurrency(
    flow: Flow, store: Any, proxy: PgWireProxy, plan: Plan, latency: float
) -> ConcurrencyResult:
    """``conversations`` workers continue threads picked by a Zipf law (s = 1.1)."""
    import random

    threads = [await _new_thread(store, 50) for _ in range(plan.popular_threads)]
    setup = getattr(flow, "setup", None)
    for i, thread_id in enumerate(threads):
        if setup is not None:
            await setup(thread_id, _history_turns(50))
        await flow.request(thread_id, 20_000 + i)  # every thread served once: caches warm
    weights = [1 / rank**1.1 for rank in range(1, len(threads) + 1)]
    picks = random.Random(7).choices(threads, weights, k=plan.concurrent_requests)
    queue = iter(enumerate(picks, 30_000))
    before = proxy.round_trips

    async def worker() -> None:
        for n, thread_id in queue:
            await flow.request(thread_id, n)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(plan.conversations)))
    elapsed = time.perf_counter() - start
    return ConcurrencyResult(
        flow=flow.name,
        latency_ms=latency,
        conversations=plan.conversations,
        requests_per_second=plan.concurrent_requests / elapsed,
        round_trips=(proxy.round_trips - before) / plan.concurrent_requests,
    )


async def _p50_us(
    call: Callable[[], Awaitable[object]],
    runs: int,
    before: Callable[[], Awaitable[object]] | None = None,
) -> float:
    samples = []
    for _ in range(runs):
        if before is not None:
            await before()
        start = time.perf_counter_ns()
        await call()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(samples)


async def _measure_layers(
    memory: Memory, pool: AsyncConnectionPool[Any], redis: aioredis.Redis, plan: Plan
) -> list[LayerResult]:
    """Reads on one 50-turn thread; appends on another, measured after every read."""
    store, runs = memory.store, plan.layer_runs
    thread_id = await _new_thread(store, 50)
    writes_to = await _new_thread(store, 50)
    thread = await memory.get_thread(thread_id)
    assert thread is not None
    floor_key = f"{memory.settings.cache_prefix}floor"
    await redis.set(floor_key, orjson.dumps([turn_to_dict(t) for t in thread.turns]))
    table: dict[str, object] = {thread_id: thread}

    async def dict_get() -> object:
        return table.get(thread_id)

    async def redis_get() -> object:
        return orjson.loads(await redis.get(floor_key) or b"[]")

    async def raw_load() -> object:
        async with pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT seq, role, content, tool_name, model_provider, model_name, files,"
                " images, metadata, key, created_at FROM convmem_turns WHERE thread_id = %s"
                " ORDER BY seq",
                (thread_id,),
            )
            return await cursor.fetchall()

    async def raw_append() -> object:
        async with pool.connection() as conn:
            return await conn.execute(
                "WITH v AS (UPDATE convmem_threads SET version = version + 1 WHERE id = %s"
                " RETURNING version) INSERT INTO convmem_turns (thread_id, seq, role, content,"
                " created_at) SELECT %s, v.version, 'user', %s, now() FROM v",
                (writes_to, writes_to, "x" * 300),
            )

    async def forget_l1() -> None:
        memory._cache.l1.discard(thread_id)

    async def forget_all() -> None:
        await memory.evict(thread_id)

    def get() -> Awaitable[object]:
        return memory.get_thread(thread_id)

    reads = [
        LayerResult(
            "get_thread, L1 hit (50 turns)",
            await _p50_us(get, runs),
            "dict lookup",
            await _p50_us(dict_get, runs),
        ),
        LayerResult(
            "get_thread, L2 hit (50 turns)",
            await _p50_us(get, runs, forget_l1),
            "redis GET + orjson decode of the thread",
            await _p50_us(redis_get, runs),
        ),
        LayerResult(
            "get_thread, store read + L2 install (50 turns)", await _p50_us(get, runs, forget_all)
        ),
        LayerResult(
            "Store.load (50 turns)",
            await _p50_us(lambda: store.load(thread_id, owner=None), runs),
            "one psycopg SELECT of the turns",
            await _p50_us(raw_load, runs),
        ),
    ]
    turn = [Turn(role="user", content="x" * 300)]
    appends = min(runs, 200)
    await memory.get_thread(writes_to)
    return [
        *reads,
        LayerResult(
            "add_turns, 1 turn (store, L2 in place, publish)",
            await _p50_us(lambda: memory.add_turns(writes_to, turn), appends),
        ),
        LayerResult(
            "Store.append, 1 turn",
            await _p50_us(lambda: store.append(writes_to, turn, owner=None), appends),
            "one psycopg INSERT",
            await _p50_us(raw_append, appends),
        ),
    ]


async def _measure_append(memory: Memory, store: Any, plan: Plan) -> dict[int, float]:
    results: dict[int, float] = {}
    for length in plan.lengths:
        thread_id = await _new_thread(store, length)
        await memory.get_thread(thread_id)  # warm
        turn = [Turn(role="user", content="y" * 300)]

        async def append(thread_id: str = thread_id, turn: list[Turn] = turn) -> object:
            return await memory.add_turns(thread_id, turn)

        results[length] = await _p50_us(append, min(plan.layer_runs, 100))
    return results


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _host_port(dsn: str) -> tuple[str, int]:
    parts = urlsplit(dsn)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def _with(dsn: str, database: str, *, port: int) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = f"{netloc[0]}@" if len(netloc) == 2 else ""
    return urlunsplit(
        (parts.scheme, f"{userinfo}127.0.0.1:{port}", f"/{database}", parts.query, "")
    )


def _machine() -> str:
    import os

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def main_sync(admin_dsn: str, redis_url: str, quick: bool) -> Report:
    return asyncio.run(run(admin_dsn, redis_url, quick=quick))
