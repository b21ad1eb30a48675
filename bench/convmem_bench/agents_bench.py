"""OpenAI Agents SDK sessions side by side: the SDK's own (``SQLiteSession``,
``SQLAlchemySession`` on PostgreSQL with asyncpg, ``RedisSession``) against
``ConvmemSession`` (SQLite; PostgreSQL + Redis), on the same database and Redis.

An agent turn is what ``Runner.run`` does with a session: ``get_items()``, then
``add_items`` of the input, then ``add_items`` of the outputs. PostgreSQL is reached
through the rig's counting proxy and Redis through one of its own (round trips, not
commands: a pipeline counts once), both holding each round trip ``latency`` ms. SQLite
files have no network: convmem's count is its worker hops, the SDK's SQLiteSession's is
not taken (it runs its statements on a thread of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from agents import SQLiteSession
from agents.extensions.memory.redis_session import RedisSession
from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
from sqlalchemy.ext.asyncio import create_async_engine

from convmem.integrations.openai_agents import ConvmemSession
from convmem_bench.measure import quantile
from convmem_bench.net import RedisRoundTripProxy, ServerProcess, metered_proxy_process
from convmem_bench.results import AgentsSessionResult
from convmem_bench.systems import open_memory, round_trip_counter

if TYPE_CHECKING:
    from agents.memory import Session

    from convmem_bench.net import SharedMeter
    from convmem_bench.rig import Rig


@dataclass(frozen=True)
class AgentsPlan:
    sizes: tuple[int, ...]  # items in a session before the measured turns
    latencies_ms: tuple[float, ...]
    turns: int  # measured one at a time
    concurrency: int  # sessions at once
    concurrent_turns: int  # per session, at once


AGENTS_QUICK: Final = AgentsPlan(
    sizes=(10,), latencies_ms=(0.0,), turns=3, concurrency=4, concurrent_turns=1
)
AGENTS_FULL: Final = AgentsPlan(
    sizes=(10, 200), latencies_ms=(0.0, 1.0, 10.0), turns=30, concurrency=32, concurrent_turns=3
)
SESSIONS: Final = 10  # sequential turns go round-robin over this many sessions


@dataclass
class SessionSystem:
    name: str
    make: Callable[[str], Session]
    round_trips: Callable[[], int] | None  # on the wire; None: not countable


def _input(n: int) -> list[Any]:
    return [{"role": "user", "content": f"question {n}: what is the weather in Paris?"}]


def _outputs(n: int) -> list[Any]:
    """What a model answers, as the Runner adds it: one Responses-API message."""
    return [
        {
            "id": f"msg_{n}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [
                {"type": "output_text", "text": f"answer {n}: sunny, 21 °C.", "annotations": []}
            ],
        }
    ]


async def agent_turn(session: Session, n: int) -> None:
    await session.get_items()
    await session.add_items(_input(n))
    await session.add_items(_outputs(n))


async def measure_agents_sessions(
    rig: Rig, redis_url: str, prefix: str, plan: AgentsPlan, log: Callable[[str], None] = print
) -> list[AgentsSessionResult]:
    results: list[AgentsSessionResult] = []
    async with _systems(rig, redis_url, prefix) as (systems, meters):
        for latency in plan.latencies_ms:
            for meter in meters:
                meter.delay = latency / 1000
            for size in plan.sizes:
                for system in systems:
                    result = await _measure(system, plan, size, latency)
                    results.append(result)
                    trips = "-" if result.round_trips < 0 else f"{result.round_trips:.1f}"
                    log(
                        f"{latency:>5.0f} ms  {size:>4} items  {system.name:46} p50"
                        f" {result.p50_ms:8.2f} ms  {trips:>5} round trips"
                        f"  {result.turns_per_second_concurrent:8.0f} turns/s"
                        f" at {plan.concurrency}"
                    )
        for meter in meters:
            meter.delay = 0.0
    return results


async def _measure(
    system: SessionSystem, plan: AgentsPlan, size: int, latency: float
) -> AgentsSessionResult:
    run = uuid.uuid4().hex[:8]
    sessions = await _filled(system, [f"{run}-{size}-{i}" for i in range(SESSIONS)], size)
    for i, session in enumerate(sessions):  # warm up: connections, caches, prepared plans
        await agent_turn(session, 10_000 + i)
    start_trips = system.round_trips() if system.round_trips else 0
    times = []
    for n in range(plan.turns):
        began = time.perf_counter()
        await agent_turn(sessions[n % SESSIONS], n)
        times.append(time.perf_counter() - began)
    trips = (system.round_trips() - start_trips) / plan.turns if system.round_trips else -1.0

    crowd = await _filled(system, [f"{run}-{size}-c{i}" for i in range(plan.concurrency)], size)
    concurrent_times: list[float] = []

    async def one(session: Session) -> None:
        for n in range(plan.concurrent_turns):
            began = time.perf_counter()
            await agent_turn(session, n)
            concurrent_times.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(one(s) for s in crowd))
    elapsed = time.perf_counter() - began
    for session in (*sessions, *crowd):
        if isinstance(session, SQLiteSession):
            session.close()  # each holds a connection of its own
    return AgentsSessionResult(
        system=system.name,
        items=size,
        latency_ms=latency,
        round_trips=trips,
        p50_ms=statistics.median(times) * 1000,
        p99_ms=quantile(times, 0.99) * 1000,
        turns_per_second=1 / statistics.fmean(times),
        concurrency=plan.concurrency,
        p50_ms_concurrent=statistics.median(concurrent_times) * 1000,
        p99_ms_concurrent=quantile(concurrent_times, 0.99) * 1000,
        turns_per_second_concurrent=len(concurrent_times) / elapsed,
    )


async def _filled(system: SessionSystem, names: list[str], size: int) -> list[Session]:
    """New sessions of ``system``, each holding ``size`` items already."""
    sessions = [system.make(name) for name in names]
    for session in sessions:
        await session.add_items([*_input(0), *_outputs(0)] * (size // 2))
    return sessions


@contextlib.asynccontextmanager
async def _systems(
    rig: Rig, redis_url: str, prefix: str
) -> AsyncIterator[tuple[list[SessionSystem], list[SharedMeter]]]:
    postgres = rig.endpoints["postgres"]
    assert postgres.meter is not None
    target = urlsplit(redis_url)
    proxy, redis_meter = metered_proxy_process(
        RedisRoundTripProxy, target.hostname or "127.0.0.1", target.port or 6379
    )
    process: ServerProcess = proxy.start()
    proxied_redis = urlunsplit(target._replace(netloc=f"127.0.0.1:{process.port}"))
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(process.stop)
        pg_meter = postgres.meter

        def wire() -> int:
            return pg_meter.round_trips + redis_meter.round_trips

        sqlite_memory = await open_memory(stack, rig.endpoints["sqlite"], None, prefix)
        shared = await open_memory(stack, postgres, proxied_redis, f"{prefix}agents:")
        engine = create_async_engine(
            urlunsplit(urlsplit(postgres.url)._replace(scheme="postgresql+asyncpg")),
            pool_size=10,
        )
        stack.push_async_callback(engine.dispose)
        await SQLAlchemySession("setup", engine=engine, create_tables=True).get_items()
        client = aioredis.Redis.from_url(proxied_redis)
        stack.push_async_callback(client.aclose)
        sdk_sqlite = str(rig.folder / "agents-sdk.db")
        key_prefix = f"{prefix}agents-sdk"
        systems = [
            SessionSystem(
                "Agents SDK SQLiteSession (file)",
                lambda sid: SQLiteSession(sid, sdk_sqlite),
                None,
            ),
            SessionSystem(
                "Agents SDK SQLAlchemySession (PostgreSQL, asyncpg)",
                lambda sid: SQLAlchemySession(sid, engine=engine),
                lambda: pg_meter.round_trips,
            ),
            SessionSystem(
                "Agents SDK RedisSession",
                lambda sid: RedisSession(sid, redis_client=client, key_prefix=key_prefix),
                lambda: redis_meter.round_trips,
            ),
            SessionSystem(
                "ConvmemSession (SQLite, L1)",
                lambda sid: ConvmemSession(sid, sqlite_memory),
                round_trip_counter(rig.endpoints["sqlite"], sqlite_memory.store),
            ),
            SessionSystem(
                "ConvmemSession (PostgreSQL + Redis)",
                lambda sid: ConvmemSession(sid, shared),
                wire,
            ),
        ]
        yield systems, [pg_meter, redis_meter]
