"""What an unauthenticated or careless client can make ``convmem serve`` hold: measured as
the server process' resident memory (VmRSS) before and after each abuse."""

from __future__ import annotations

import asyncio
import contextlib

from websockets.asyncio.client import connect

from tests.chaos.harness import Outcome, memory_mib, scaled
from tests.support.live import LiveServer, http_client
from tests.test_server_live import live, standin

__all__ = ["live", "standin"]  # the live server's fixtures, shared with test_server_live

GROWTH_LIMIT_MIB = 60.0


async def _big_hello(url: str) -> None:
    with contextlib.suppress(Exception):
        async with connect(url, max_size=None, open_timeout=10) as ws:
            await ws.send("h" * 7_900_000)  # a hello as large as the old frame limit
            await asyncio.wait_for(ws.recv(), 10)


async def test_unauthenticated_large_hellos_do_not_grow_the_server(live: LiveServer) -> None:
    clients = int(scaled(30, 100))
    before = memory_mib(live.process.pid)
    await asyncio.gather(*(_big_hello(live.ws_url) for _ in range(clients)))
    grown = memory_mib(live.process.pid) - before
    Outcome(
        scenario="unauthenticated WebSocket hellos of 7.9 MB",
        load=f"{clients} clients at once",
        faults=f"server RSS grew {grown:.1f} MiB (reported before the fix: +798 MB for 100)",
    ).record()
    assert grown < GROWTH_LIMIT_MIB, grown


async def test_oversized_tool_fields_do_not_grow_the_server(live: LiveServer) -> None:
    calls = int(scaled(20, 60))
    before = memory_mib(live.process.pid)
    async with http_client(live, "token-alice") as client:
        for _ in range(calls):
            result = await client.call_tool(
                "chat", {"prompt": "hi", "model": "m" * 3_000_000, "files": ["f"] * 10_000}
            )
            assert result.is_error
    grown = memory_mib(live.process.pid) - before
    Outcome(
        scenario="chats with a 3 MB model name and 10,000 files",
        load=f"{calls} calls",
        faults=f"server RSS grew {grown:.1f} MiB (reported before the fix: +256 MB for 60)",
        calls=calls,
        failed_calls=calls,
    ).record()
    assert grown < GROWTH_LIMIT_MIB, grown
