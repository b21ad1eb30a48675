"""How each figure is measured: request latency, throughput, each layer against its floor."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from convmem.cache.codec import encode_turn
from convmem.export import turn_to_dict
from convmem.models import Turn
from convmem.sealing import NO_SEALING, Sealing
from convmem.stores.base import NewThread
from convmem_bench.flows import Flow, exchange
from convmem_bench.results import ConcurrencyResult, FlowResult, LayerResult, StoreAppendResult

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from psycopg_pool import AsyncConnectionPool

    from convmem.memory import Memory
    from convmem.stores.base import Store
    from convmem_bench.systems import System


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
    memory_requests: int = 512
    pal_repeats: int = 5  # continued pal requests (and new pal processes) per storage
    prefix_exchanges: int = 200  # the conversation the prompt-prefix figure is taken over
    encryption_latencies_ms: tuple[float, ...] = (0.0, 1.0)
    encryption_rounds: int = 5  # off and on alternate this many times
    prompt_exchanges: int = 300  # the conversation prompt sizes are plotted over
    compaction_latencies_ms: tuple[float, ...] = (0.0, 1.0)
    compaction_requests: int = 120  # chat requests per mode and latency


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
    memory_requests=16,
    pal_repeats=1,
    encryption_latencies_ms=(1.0,),
    encryption_rounds=1,
    prefix_exchanges=30,
    prompt_exchanges=40,
    compaction_latencies_ms=(1.0,),
    compaction_requests=12,
)
FULL = Plan(
    latencies_ms=(0.0, 1.0, 10.0, 50.0),
    requests=40,
    threads=8,
    layer_runs=400,
    lengths=(10, 50, 1000),
)


WARM_UP_REQUESTS = 8


def history_turns(turns: int) -> list[Turn]:
    return [t for n in range(turns // 2) for t in exchange(-n - 1)]


async def new_thread(store: Store, turns: int, sealing: Sealing = NO_SEALING) -> str:
    """A thread of ``turns`` turns, created straight in ``store``, sealed as ``sealing`` does."""
    thread_id = str(uuid.uuid4())
    metadata = sealing.seal_metadata(thread_id, {})
    await store.create(NewThread(thread_id, "chat", None, None, metadata), [])
    batch = sealing.seal_turns(thread_id, history_turns(turns), first_seq=1)
    for start in range(0, len(batch), 500):
        await store.append(
            thread_id, batch[start : start + 500], owner=None, seqs_bound=sealing.encrypts
        )
    return thread_id


async def new_threads(system: System, count: int, turns: int) -> list[str]:
    """Threads of ``turns`` turns, kept by the system its own way where it has one."""
    threads = [await new_thread(system.store, turns, system.sealing) for _ in range(count)]
    await keep_own_copies(system.flow, threads, turns)
    return threads


async def keep_own_copies(flow: Flow, threads: list[str], turns: int) -> None:
    """A peer keeps the same history its own way (LangGraph as a checkpoint, say)."""
    setup = getattr(flow, "setup", None)
    if setup is not None:
        for thread_id in threads:
            await setup(thread_id, history_turns(turns))


async def request_latency(
    system: System, plan: Plan, latency: float, turns: int = 50
) -> FlowResult:
    """One request at a time; p50/p99 and the store round trips each made."""
    flow = system.flow
    threads = await new_threads(system, plan.threads, turns)
    # Warm-up, unmeasured, until the steady state: psycopg prepares a statement at its
    # sixth use on a connection, which costs one extra round trip, once.
    for i in range(max(WARM_UP_REQUESTS, len(threads))):
        thread_id = threads[i % len(threads)]
        await flow.prepare(thread_id)
        await flow.request(thread_id, 10_000 + i)
    await steady_cache(flow)
    times: list[float] = []
    trips: list[int] = []
    for n in range(plan.requests):
        thread_id = threads[n % len(threads)]
        await flow.prepare(thread_id)
        before = system.round_trips()
        start = time.perf_counter()
        await flow.request(thread_id, n)
        times.append((time.perf_counter() - start) * 1000)
        trips.append(system.round_trips() - before)
    return FlowResult(
        flow=flow.name,
        latency_ms=latency,
        p50_ms=statistics.median(times),
        p99_ms=quantile(times, 0.99),
        round_trips=statistics.mean(trips),
        requests_per_second=1000 / statistics.mean(times),
        turns=turns,
    )


async def steady_cache(flow: Flow) -> None:
    """A convmem instance whose event loop was blocked longer than its lease (the bench's own
    set-up can do that) serves from the store until a whole lease of contact with Redis has
    passed: wait for that, so the figures are of the steady state."""
    memory = getattr(flow, "memory", None)
    if memory is None:
        return
    for _ in range(100):
        if memory.stats.cache_trusted:
            return
        await asyncio.sleep(0.05)


def zipf_picks(threads: list[str], requests: int) -> list[str]:
    """Which thread each request continues: a Zipf law (s = 1.1), the same every run."""
    weights = [1 / rank**1.1 for rank in range(1, len(threads) + 1)]
    return random.Random(7).choices(threads, weights, k=requests)


async def throughput(system: System, plan: Plan, latency: float) -> ConcurrencyResult:
    """``conversations`` workers continue threads picked by a Zipf law."""
    flow = system.flow
    threads = await new_threads(system, plan.popular_threads, 50)
    await serve_each(flow, threads, first=20_000)  # caches warm
    await steady_cache(flow)
    picks = zipf_picks(threads, plan.concurrent_requests)
    before = system.round_trips()
    start = time.perf_counter()
    await serve_concurrently(flow, picks, plan.conversations, first=30_000)
    elapsed = time.perf_counter() - start
    return ConcurrencyResult(
        flow=flow.name,
        latency_ms=latency,
        conversations=plan.conversations,
        requests_per_second=plan.concurrent_requests / elapsed,
        round_trips=(system.round_trips() - before) / plan.concurrent_requests,
    )


async def serve_each(flow: Flow, threads: list[str], *, first: int) -> None:
    """One request on every thread, in turn (request numbers from ``first``)."""
    for n, thread_id in enumerate(threads, first):
        await flow.request(thread_id, n)


async def serve_concurrently(
    flow: Flow, picks: list[str], conversations: int, *, first: int
) -> None:
    """One request per pick, in order, by ``conversations`` workers at once."""
    queue = iter(enumerate(picks, first))

    async def worker() -> None:
        for n, thread_id in queue:
            await flow.request(thread_id, n)

    await asyncio.gather(*(worker() for _ in range(conversations)))


async def p50_us(
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


async def layers(
    memory: Memory,
    pool: AsyncConnectionPool[Any],
    redis: aioredis.Redis,
    prefix: str,
    runs: int,
) -> list[LayerResult]:
    """Reads on one 50-turn thread, appends on another, each against the raw drivers."""
    store = memory.store
    thread_id = await new_thread(store, 50)
    writes_to = await new_thread(store, 50)
    thread = await memory.get_thread(thread_id)
    assert thread is not None
    # The floor reads the very bytes convmem keeps for these turns, as one value.
    floor_key = f"{prefix}floor"
    await redis.set(
        floor_key, b"[" + b",".join(encode_turn(t, thread_id, None) for t in thread.turns) + b"]"
    )
    # ... and the thread as JSON objects, the floor of earlier runs (and a plain design's).
    objects_key = f"{prefix}floor-objects"
    await redis.set(objects_key, orjson.dumps([turn_to_dict(t) for t in thread.turns]))
    table: dict[str, object] = {thread_id: thread}

    async def dict_get() -> object:
        return table.get(thread_id)

    async def redis_get() -> object:
        return orjson.loads(await redis.get(floor_key) or b"[]")

    async def redis_get_objects() -> object:
        return orjson.loads(await redis.get(objects_key) or b"[]")

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
        return await append_floor(pool, writes_to)

    async def forget_local() -> None:
        await memory.evict(thread_id, local_only=True)

    async def forget_all() -> None:
        await memory.evict(thread_id)

    def get() -> Awaitable[object]:
        return memory.get_thread(thread_id)

    reads = [
        LayerResult(
            "get_thread, L1 hit (50 turns)",
            await p50_us(get, runs),
            "dict lookup",
            await p50_us(dict_get, runs),
        ),
        *_l2_hit(
            await p50_us(get, runs, forget_local),
            await p50_us(redis_get, runs),
            await p50_us(redis_get_objects, runs),
        ),
        LayerResult(
            "get_thread, store read + L2 install (50 turns)", await p50_us(get, runs, forget_all)
        ),
        LayerResult(
            "Store.load (50 turns)",
            await p50_us(lambda: store.load(thread_id, owner=None), runs),
            "one psycopg SELECT of the turns",
            await p50_us(raw_load, runs),
        ),
    ]
    turn = [Turn(role="user", content="x" * 300)]
    appends = min(runs, 200)
    await memory.get_thread(writes_to)
    return [
        *reads,
        LayerResult(
            "add_turns, 1 turn (store, L2 in place, publish)",
            await p50_us(lambda: memory.add_turns(writes_to, turn), appends),
        ),
        LayerResult(
            "Store.append, 1 turn",
            await p50_us(lambda: store.append(writes_to, turn, owner=None), appends),
            "one psycopg INSERT",
            await p50_us(raw_append, appends),
        ),
    ]


def _l2_hit(ours: float, floor: float, objects_floor: float) -> list[LayerResult]:
    name = "get_thread, L2 hit (50 turns)"
    return [
        LayerResult(name, ours, "redis GET + orjson decode of the same turns as one value", floor),
        LayerResult(
            name, ours, "redis GET + orjson decode of the turns as JSON objects", objects_floor
        ),
    ]


async def append_by_length(memory: Memory, lengths: tuple[int, ...], runs: int) -> dict[int, float]:
    results: dict[int, float] = {}
    for length in lengths:
        thread_id = await new_thread(memory.store, length)
        await memory.get_thread(thread_id)  # warm
        turn = [Turn(role="user", content="y" * 300)]

        async def append(thread_id: str = thread_id, turn: list[Turn] = turn) -> object:
            return await memory.add_turns(thread_id, turn)

        results[length] = await p50_us(append, min(runs, 100))
    return results


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def append_floor(pool: AsyncConnectionPool[Any], thread_id: str) -> object:
    """The least one psycopg statement can do for an append: bump the version, insert."""
    async with pool.connection() as conn:
        return await conn.execute(
            "WITH v AS (UPDATE convmem_threads SET version = version + 1 WHERE id = %s"
            " RETURNING version) INSERT INTO convmem_turns (thread_id, seq, role, content,"
            " created_at) SELECT %s, v.version, 'user', %s, now() FROM v",
            (thread_id, thread_id, "x" * 300),
        )


async def p50s_interleaved(
    calls: dict[str, Callable[[], Awaitable[object]]], runs: int
) -> dict[str, float]:
    """Each call's median, the calls taken in turn, so drift on a noisy machine hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            start = time.perf_counter_ns()
            await call()
            samples[name].append((time.perf_counter_ns() - start) / 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


async def store_appends(
    path: str, store: Store, pool: AsyncConnectionPool[Any], runs: int
) -> StoreAppendResult:
    """``Store.append`` of one turn, no cache: on a 10- and a 1000-turn thread, and its floor.

    The floor is the least one psycopg statement can do for an append on the same path
    (bump the version, insert the turn): what any store call has to pay.
    """
    short, long, floor_thread = (
        await new_thread(store, 10),
        await new_thread(store, 1000),
        await new_thread(store, 10),
    )
    turn = [Turn(role="user", content="x" * 300)]

    async def raw_append() -> object:
        return await append_floor(pool, floor_thread)

    medians = await p50s_interleaved(
        {
            "10": lambda: store.append(short, turn, owner=None),
            "1000": lambda: store.append(long, turn, owner=None),
            "floor": raw_append,
        },
        runs,
    )
    return StoreAppendResult(path, medians["10"], medians["1000"], medians["floor"])
