"""Every input bounded, refused in plain words, and nothing read whole before a client
has shown its token: against ``convmem serve`` as a process, and ``Memory`` itself."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from convmem import LimitExceededError, Memory, Turn
from convmem.server.service import ConversationService
from convmem.stores.supabase import SupabaseStore
from convmem_bench.postgrest_standin import PostgrestStandIn
from tests.conftest import LIMITS
from tests.support.live import LiveServer, frame, hello, http_client
from tests.test_server_live import live, standin

__all__ = ["live", "standin"]  # the live server's fixtures, shared with test_server_live

INTERNALS = ("pydantic", "input_value", "validation error for", "errors.pydantic.dev")


@pytest.mark.parametrize(
    ("arguments", "field", "limit"),
    [
        ({"prompt": "hi", "model": "m" * 3_000_000}, "model", "200"),
        ({"prompt": "hi", "files": ["a.py"] * 10_000}, "files", "100"),
        ({"prompt": "hi", "files": ["p" * 5000]}, "files.0", "1024"),
        ({"prompt": "hi", "system_prompt": "s" * 200_000}, "system_prompt", "100000"),
        ({"prompt": "hi", "continuation_id": "c" * 1000}, "continuation_id", "64"),
        ({"prompt": 5}, "prompt", "string"),
    ],
)
async def test_oversized_or_mistyped_tool_arguments_are_refused_in_plain_words(
    live: LiveServer, arguments: dict[str, object], field: str, limit: str
) -> None:
    async with http_client(live, "token-alice") as client:
        result = await client.call_tool("chat", arguments)
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert text.startswith("invalid arguments for chat:")
    assert field in text
    assert limit in text
    assert not any(internal in text for internal in INTERNALS), text
    assert len(text) < 500  # the offending value is not echoed back


async def test_every_turn_field_is_bounded_before_any_io(tmp_path: Path) -> None:
    async with Memory.from_url(f"sqlite:///{tmp_path}/h.db") as memory:
        thread = await memory.create_thread(turns=[Turn(role="user", content="hi")])
        cases = [
            (Turn(role="user", content="x", model_name="m" * 201), "model_name"),
            (Turn(role="user", content="x", tool_name="t" * 201), "tool_name"),
            (Turn(role="user", content="x", key="k" * 201), "key"),
            (Turn(role="user", content="x", files=("a",) * 101), "files"),
            (Turn(role="user", content="x", images=("p" * 1025,)), "images"),
        ]
        for turn, field in cases:
            with pytest.raises(LimitExceededError, match=f"{field}.*limit is") as caught:
                await memory.add_turns(thread.id, [turn])
            assert "limit" in str(caught.value)
        with pytest.raises(LimitExceededError, match="owner"):
            await memory.get_thread(thread.id, owner="o" * 201)
        with pytest.raises(LimitExceededError, match="turns in one call"):
            await memory.add_turns(thread.id, [Turn(role="user", content="x")] * 1001)
        assert memory.stats.store_writes == 1  # only the create reached the store
        unchanged = await memory.get_thread(thread.id)
        assert unchanged is not None
        assert unchanged.version == 1


async def test_l1_counts_everything_a_thread_holds(tmp_path: Path) -> None:
    async with Memory.from_url(f"sqlite:///{tmp_path}/h.db") as memory:
        paths = tuple(f"{i:04d}" + "p" * 1000 for i in range(100))
        thread = await memory.create_thread(
            turns=[Turn(role="user", content="x", files=paths, model_name="m" * 200)],
            metadata={"note": "n" * 50_000},
        )
        assert await memory.get_thread(thread.id) is not None
        assert memory.stats.l1_bytes > 100 * 1000 + 50_000  # paths and metadata, not "x"


async def test_ws_a_large_frame_before_hello_is_refused_unread(live: LiveServer) -> None:
    async with connect(live.ws_url, max_size=None) as ws:
        await ws.send("x" * 200_000)  # before any token: far past the hello limit
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009  # message too big, refused by the protocol


async def test_ws_a_binary_frame_gets_an_error_and_the_connection_lives(live: LiveServer) -> None:
    ws = await hello(live)
    try:
        await ws.send(b"\x00\x01binary")
        error = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["op"] == "error"
        assert error["code"] == "bad_frame"
        assert (await frame(ws, {"op": "ping", "request_id": 1}))["op"] == "pong"
    finally:
        await ws.close()


@pytest.mark.parametrize("request_id", [1.5, 2**64, "abc"])
async def test_ws_any_json_number_or_string_is_a_request_id(
    live: LiveServer, request_id: object
) -> None:
    ws = await hello(live)
    try:
        call = {"op": "call_tool", "name": "health", "arguments": {}, "request_id": request_id}
        await ws.send(json.dumps(call))  # the standard library writes any integer
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert (ack["op"], ack["request_id"], ack["id"]) == (
            "call_tool_ack",
            request_id,
            request_id,
        )
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["op"] == "call_tool_res"
        assert reply["request_id"] == reply["id"] == request_id
    finally:
        await ws.close()


async def test_unauthenticated_health_shows_a_status_word_only(live: LiveServer) -> None:
    import httpx2

    async with httpx2.AsyncClient() as http:
        body = (await http.get(f"{live.url}/health")).json()
    assert body == {"ok": True, "status": "ok", "store": "ok", "redis": "disabled"}


async def test_health_when_supabase_refuses_the_key_is_a_word_not_a_crash(
    postgrest: PostgrestStandIn, clean_pg: str
) -> None:
    store = SupabaseStore.from_url(postgrest.url, service_key=postgrest.service_key, limits=LIMITS)
    async with Memory(store) as memory, store:
        service = ConversationService(memory, provider=None)  # type: ignore[arg-type]
        assert (await service.health()).ok
        key, postgrest.service_key = postgrest.service_key, "revoked"
        try:
            public = await asyncio.wait_for(service.health(detailed=False), 1.5)
            private = await service.health(detailed=True)
        finally:
            postgrest.service_key = key
    assert (public.ok, public.store, public.detail) == (False, "error", None)
    assert private.detail is not None
    assert "refused the service key" in private.detail
