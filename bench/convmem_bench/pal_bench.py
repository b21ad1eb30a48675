"""Round trips of a continued pal-mcp-server request, counted on the wire.

pal runs as a real stdio process (its own server, its own ``chat`` tool, driven by the
official MCP client; the model is the local chat stand-in) on three storages:

- pal's own in-process dict (nothing on the wire, and nothing left after a restart);
- a whole-thread key-value store in Redis (``convmem_bench.pal_peers``: ``GET`` and
  ``SETEX`` of the whole thread, as pal's Redis backend once was);
- convmem, ``convmem pal``, on PostgreSQL and Redis.

PostgreSQL is reached through the rig's ``PgWireProxy``, Redis through a ``RespProxy``;
both count what crosses them while one request runs. Each row is the median of several
requests: warm (the process served the thread before), in a new process (Redis warm),
and cold (a new process and an empty Redis: only the store knows the thread).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp import Client, StdioServerParameters

from convmem_bench.chat_standin import ChatCompletionsStandIn
from convmem_bench.net import RespProxy
from convmem_bench.results import PalResult
from convmem_bench.rig import drop_redis_keys

if TYPE_CHECKING:
    from convmem_bench.rig import Endpoint

MODEL = "local-llama"  # declared by pal's own custom_models.json for its custom provider
BENCH_ROOT = Path(__file__).resolve().parents[1]
SYSTEMS: dict[str, list[str]] = {
    "pal's own dict (in process)": ["-c", "import server; server.run()"],
    "whole-thread key-value store (Redis GET/SETEX)": ["-m", "convmem_bench.pal_peers"],
    "convmem pal (PostgreSQL + Redis)": ["-m", "convmem", "pal"],
}


class _Meters:
    def __init__(self, endpoint: Endpoint, redis_proxy: RespProxy) -> None:
        self.endpoint = endpoint
        self.redis_proxy = redis_proxy

    def now(self) -> tuple[int, int, int, int]:
        """Store round trips, Redis commands, and pal's GETs and SETEXes on the
        key-value store (its storage calls, when that store serves it)."""
        assert self.endpoint.meter is not None
        watched = self.redis_proxy.watched
        return (
            self.endpoint.meter.round_trips,
            self.redis_proxy.round_trips,
            watched["GET"],
            watched["SETEX"],
        )


async def measure_pal(
    endpoint: Endpoint, redis_url: str, prefix: str, *, repeats: int, log: Callable[[str], None]
) -> list[PalResult]:
    host, _, port = redis_url.removeprefix("redis://").partition("/")[0].partition(":")
    redis_proxy = RespProxy(host, int(port or 6379), watch_prefix=f"{prefix}pal-kv:".encode())
    redis_proxy.start()
    standin = ChatCompletionsStandIn().start()
    meters = _Meters(endpoint, redis_proxy)
    proxied_redis = f"redis://127.0.0.1:{redis_proxy.port}/0"
    try:
        with tempfile.TemporaryDirectory(prefix="convmem-pal-") as folder:
            results = []
            for system, args in SYSTEMS.items():
                log(f"pal on {system}")
                env = {
                    **os.environ,
                    "PYTHONPATH": os.pathsep.join(
                        [str(BENCH_ROOT), os.environ.get("PYTHONPATH", "")]
                    ),
                    "CUSTOM_API_URL": standin.base_url,
                    "CUSTOM_API_KEY": "sk-standin",
                    "DEFAULT_MODEL": MODEL,
                    "LOG_LEVEL": "WARNING",
                    "CONVMEM_STORE_URL": endpoint.url,
                    "CONVMEM_CACHE_URL": proxied_redis,
                    "CONVMEM_CACHE_PREFIX": f"{prefix}pal:",
                    # Fewer liveness heartbeats on the wire while a request is counted.
                    "CONVMEM_CACHE_LEASE_SECONDS": "30",
                    "PAL_KV_REDIS_URL": proxied_redis,
                    "PAL_KV_PREFIX": f"{prefix}pal-kv:",
                }
                flow = _Flow(args, env, Path(folder), meters, repeats)
                results.append(
                    await flow.run(system, lambda: drop_redis_keys(redis_url, f"{prefix}pal"))
                )
            return results
    finally:
        standin.stop()
        redis_proxy.stop()


class _Flow:
    def __init__(
        self, args: list[str], env: dict[str, str], folder: Path, meters: _Meters, repeats: int
    ) -> None:
        self.args = args
        self.env = env
        self.folder = folder
        self.meters = meters
        self.repeats = repeats

    def _client(self) -> Client:
        params = StdioServerParameters(
            command=sys.executable, args=self.args, env=self.env, cwd=str(self.folder)
        )
        return Client(params)

    async def run(self, system: str, empty_redis: Callable[[], Awaitable[None]]) -> PalResult:
        async with self._client() as pal:
            cid = await self._chat(pal, "start", None)
            assert cid is not None
            await self._chat(pal, "warm up", cid)
            warm = [await self._counted(pal, cid) for _ in range(self.repeats)]
        new_process = []
        for _ in range(self.repeats):
            async with self._client() as pal:
                new_process.append(await self._counted(pal, cid))
        await empty_redis()
        cold = []
        async with self._client() as pal:
            cold.append(await self._counted(pal, cid))
        return PalResult(
            system=system,
            warm_store=_median(warm, 0),
            warm_redis=_median(warm, 1),
            new_process_store=_median(new_process, 0),
            new_process_redis=_median(new_process, 1),
            cold_store=_median(cold, 0),
            cold_redis=_median(cold, 1),
            pal_gets_warm=_median(warm, 2),
            pal_sets_warm=_median(warm, 3),
            pal_gets_new_process=_median(new_process, 2),
            pal_sets_new_process=_median(new_process, 3),
        )

    async def _counted(self, pal: Client, cid: str) -> tuple[int, ...] | None:
        """What one continued request cost (``_Meters.now``'s counts); None when pal had
        lost the thread."""
        await asyncio.sleep(0.2)  # let start-up traffic settle before counting
        before = self.meters.now()
        if await self._chat(pal, "continue", cid) is None:
            return None
        return tuple(a - b for a, b in zip(self.meters.now(), before, strict=True))

    async def _chat(self, pal: Client, prompt: str, cid: str | None) -> str | None:
        arguments: dict[str, Any] = {
            "prompt": prompt,
            "model": MODEL,
            "working_directory_absolute_path": str(self.folder),
        }
        if cid is not None:
            arguments["continuation_id"] = cid
        result = await pal.call_tool("chat", arguments)
        if result.is_error:
            return None
        reply = json.loads(result.content[0].text)  # type: ignore[union-attr]
        offer = reply.get("continuation_offer") or {}
        found: str | None = offer.get("continuation_id")
        return found


def _median(samples: list[tuple[int, ...] | None], index: int) -> float | None:
    values = [s[index] for s in samples if s is not None]
    if len(values) < len(samples) or not values:
        return None  # the thread was lost: no count
    return float(statistics.median(values))
