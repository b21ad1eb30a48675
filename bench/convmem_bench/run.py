"""``convmem bench``: every system side by side in one run, on the same PostgreSQL and Redis.

Latency is injected per round trip by proxies in processes of their own, in front of
PostgreSQL, PgBouncer and the PostgREST stand-in, and round trips are counted there,
on the wire. Figures are medians of many runs; the machine is noisy, so only ratios
measured in the same run are compared.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from convmem_bench import measure, memory_use
from convmem_bench.agents_bench import AGENTS_FULL, AGENTS_QUICK, measure_agents_sessions
from convmem_bench.compaction_bench import measure_compaction_overhead, measure_prompts
from convmem_bench.encryption_bench import measure_encryption
from convmem_bench.measure import FULL, QUICK, Plan
from convmem_bench.pal_bench import measure_pal
from convmem_bench.prefix import measure_prefix
from convmem_bench.results import Report, StoreAppendResult
from convmem_bench.rig import Rig, drop_redis_keys
from convmem_bench.systems import (
    SEED_SCENARIO,
    System,
    convmem_settings,
    open_convmem_by_store,
    open_memory,
    open_pool,
    open_seed_scenario,
    open_setup_store,
)

if TYPE_CHECKING:
    from convmem.stores.base import Store

STORES = ("sqlite", "postgres", "pgbouncer", "supabase")
# Not a state many conversations at once can be in (System.steady, for systems not yet open).
NOT_STEADY = ("convmem, cold",)


async def run(
    admin_dsn: str, redis_url: str, *, quick: bool, log: Callable[[str], None] = print
) -> Report:
    plan = QUICK if quick else FULL
    report = Report(machine=_machine(), quick=quick)
    report.prefix = measure_prefix(exchanges=plan.prefix_exchanges)
    report.prompt_sizes = await measure_prompts(
        report.prefix, plan.prefix_exchanges, plan.prompt_exchanges
    )
    prefix = f"convmem-bench-{uuid.uuid4().hex[:8]}:"
    try:
        async with Rig(admin_dsn) as rig:
            async with open_setup_store(rig, "postgres") as setup:
                endpoint = rig.endpoints["postgres"]
                async with open_seed_scenario(endpoint, redis_url, prefix, setup) as systems:
                    await _seed_scenario(report, plan, rig, systems, log)
                await _layers(report, plan, rig, redis_url, prefix, log)
                await _memory(report, plan, rig, redis_url, prefix, setup, log)
            report.encryption = await measure_encryption(rig, redis_url, prefix, plan, log)
            report.compaction = await measure_compaction_overhead(rig, redis_url, prefix, plan, log)
            report.agents = await measure_agents_sessions(
                rig, redis_url, prefix, AGENTS_QUICK if quick else AGENTS_FULL, log
            )
            report.pal = await measure_pal(
                rig.endpoints["postgres"], redis_url, prefix, repeats=plan.pal_repeats, log=log
            )
            for store in STORES:
                async with (
                    open_setup_store(rig, store) as setup,
                    open_convmem_by_store(rig, store, redis_url, prefix, setup) as systems,
                ):
                    await _by_store(report, plan, rig, store, systems, log)
    finally:
        await drop_redis_keys(redis_url, prefix)
    return report


async def _seed_scenario(
    report: Report, plan: Plan, rig: Rig, systems: list[System], log: Callable[[str], None]
) -> None:
    for latency in plan.latencies_ms:
        rig.set_latency(latency)
        for system in systems:
            result = await measure.request_latency(system, plan, latency)
            report.flows.append(result)
            log(
                f"{latency:>5.0f} ms  {system.name:34} p50 {result.p50_ms:8.2f} ms  "
                f"{result.round_trips:.1f} round trips"
            )
    rig.set_latency(plan.length_latency_ms)
    for length in plan.thread_lengths:
        for system in systems:
            result = await measure.request_latency(
                system, plan, plan.length_latency_ms, turns=length
            )
            report.flows.append(result)
            log(f"{length:>5} turns {system.name:34} p50 {result.p50_ms:8.2f} ms")
    for latency in plan.concurrent_latencies_ms:
        rig.set_latency(latency)
        for system in systems:
            if not system.steady:
                continue
            concurrent = await measure.throughput(system, plan, latency)
            report.concurrency.append(concurrent)
            log(
                f"{latency:>5.0f} ms  {system.name:34} "
                f"{concurrent.requests_per_second:8.0f} req/s, {plan.conversations} conversations"
            )
    rig.set_latency(0.0)


async def _by_store(
    report: Report,
    plan: Plan,
    rig: Rig,
    store: str,
    systems: list[System],
    log: Callable[[str], None],
) -> None:
    # SQLite is a local file: there is no network to add latency to.
    latencies = plan.latencies_ms if rig.endpoints[store].meter is not None else (0.0,)
    for latency in latencies:
        rig.set_latency(latency)
        for system in systems:
            result = await measure.request_latency(system, plan, latency)
            result.store = store
            report.stores.append(result)
            log(
                f"{latency:>5.0f} ms  {system.name:44} p50 {result.p50_ms:8.2f} ms  "
                f"{result.round_trips:.1f} round trips"
            )
    for latency in plan.concurrent_latencies_ms if len(latencies) > 1 else (0.0,):
        rig.set_latency(latency)
        for system in systems:
            if not system.steady:
                continue
            concurrent = await measure.throughput(system, plan, latency)
            concurrent.store = store
            report.concurrency.append(concurrent)
            log(f"{latency:>5.0f} ms  {system.name:44} {concurrent.requests_per_second:8.0f} req/s")
    rig.set_latency(0.0)


async def _layers(
    report: Report, plan: Plan, rig: Rig, redis_url: str, prefix: str, log: Callable[[str], None]
) -> None:
    endpoint = rig.endpoints["postgres"]
    redis = aioredis.Redis.from_url(redis_url)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(redis.aclose)
        cached = await open_memory(stack, endpoint, redis_url, prefix)
        plain = await open_memory(stack, endpoint, None, prefix)
        pool = await open_pool(stack, endpoint.url)
        report.layers = await measure.layers(cached, pool, redis, prefix, plan.layer_runs)
        for layer in report.layers:
            log(f"{layer.operation:48} p50 {layer.p50_us:9.1f} µs")
        report.append_by_length = await measure.append_by_length(
            plain, plan.lengths, plan.layer_runs
        )
        log(f"append p50 by thread length: {report.append_by_length}")
    for path in ("postgres", "pgbouncer"):
        report.store_appends.append(await _store_appends(rig, path, plan.layer_runs))


async def _store_appends(rig: Rig, path: str, runs: int) -> StoreAppendResult:
    """Store.append alone (no Memory, no cache) on one path, against its floor there."""
    endpoint = rig.endpoints[path]
    # The floor's driver is set up as the store's is on this path: no prepared
    # statements behind the transaction-mode pooler.
    prepare = {"prepare_threshold": None} if path == "pgbouncer" else {}
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(
            endpoint.open_store(limits=convmem_settings(endpoint.url, None, "-").thread_limits)
        )
        pool = await open_pool(stack, endpoint.url.partition("?")[0], **prepare)
        return await measure.store_appends(path, store, pool, runs)


async def _memory(
    report: Report,
    plan: Plan,
    rig: Rig,
    redis_url: str,
    prefix: str,
    setup: Store,
    log: Callable[[str], None],
) -> None:
    threads = [await measure.new_thread(setup, 50) for _ in range(plan.popular_threads)]
    picks = measure.zipf_picks(threads, plan.memory_requests)
    work = memory_use.Workload(threads, picks, plan.conversations)
    for name in SEED_SCENARIO:
        if name in NOT_STEADY:
            continue
        result = await asyncio.to_thread(
            memory_use.measure, name, rig.direct_dsn, redis_url, f"{prefix}memory:", work
        )
        report.memory.append(result)
        log(
            f"memory {name:34} baseline {result.baseline_mib:6.1f} MiB, "
            f"peak {result.peak_mib:6.1f} MiB"
        )


def _machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def main_sync(admin_dsn: str, redis_url: str, quick: bool) -> Report:
    return asyncio.run(run(admin_dsn, redis_url, quick=quick))
