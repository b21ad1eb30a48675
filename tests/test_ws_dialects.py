"""The WebSocket daemon as each generation of the original daemon's clients speaks to it
(tests/support/ws_clients.py), against ``convmem serve`` as a process with the daemon's
default limits and a stand-in model that streams."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from convmem_bench.chat_standin import ChatCompletionsStandIn
from tests.support.live import LiveServer, hello, live_server, server_env, until
from tests.support.ws_clients import CallFailed, JsonRpcClient, NextFrameClient, RequestIdClient
from tests.support.ws_clients import shown as shown_by_older_shims

Client = NextFrameClient | RequestIdClient | JsonRpcClient
DIALECTS: dict[str, Callable[[str, str], Client]] = {
    "next-frame": lambda url, token: NextFrameClient(url, token),
    "request_id": lambda url, token: RequestIdClient(url, token),
    "tool_call": lambda url, token: RequestIdClient(url, token, op="tool_call"),
    "json-rpc": lambda url, token: JsonRpcClient(url, token),
}


@pytest.fixture(scope="module")
def standin() -> Iterator[ChatCompletionsStandIn]:
    server = ChatCompletionsStandIn(slow_seconds=3.0).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, standin: ChatCompletionsStandIn
) -> Iterator[LiveServer]:
    """The daemon's default frame limit (32 MiB); progress every second."""
    env = server_env(tmp_path_factory.mktemp("dialects"), standin, CONVMEM_WS_PROGRESS_SECONDS="1")
    with live_server(env, standin) as server:
        yield server


def root_url(live: LiveServer) -> str:
    return live.url.replace("http://", "ws://")  # ws://HOST:PORT, no path, as the shims dial


def prompts_seen(standin: ChatCompletionsStandIn) -> str:
    """Everything the model was sent in its last request."""
    return "\n".join(str(m["content"]) for m in standin.requests[-1]["body"]["messages"])


@pytest.mark.parametrize("path", ["", "/ws"])
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_each_dialect_chats_continues_and_sees_a_tool_error(
    daemon: LiveServer, dialect: str, path: str
) -> None:
    async with DIALECTS[dialect](root_url(daemon) + path, "token-alice") as client:
        assert "chat" in await client.list_tools()
        first = await client.chat({"prompt": f"{dialect} remembers the number 41"})
        assert first["status"] == "continuation_available"
        assert first["continuation_offer"]["continuation_id"] == first["continuation_id"]
        second = await client.chat(
            {"prompt": "what number?", "continuation_id": first["continuation_id"]}
        )
        assert second["continuation_id"] == first["continuation_id"]
        assert f"{dialect} remembers the number 41" in prompts_seen(daemon.standin)
        with pytest.raises(CallFailed, match="unknown or has expired"):
            await client.chat(
                {"prompt": "x", "continuation_id": "00000000-0000-0000-0000-000000000000"}
            )


UUID_IN_TEXT = re.compile(r"continuation_id ([0-9a-f-]{36})")


@pytest.mark.parametrize("op", ["call_tool", "tool_call"])
async def test_an_older_shim_shows_its_client_how_to_continue_and_the_client_continues(
    daemon: LiveServer, op: str
) -> None:
    """The older shims show only the ``content`` of the top-level ``text``: the reply, then
    the continuation note, from which their client takes the id to continue."""
    async with RequestIdClient(root_url(daemon), "token-alice", op=op) as client:
        first = await client.chat_shown({"prompt": f"{op}: the shown text keeps the number 17"})
        found = UUID_IN_TEXT.search(first)
        assert found is not None, first
        reply, _, note = first.partition("\n\n---\n")  # the model's reply, then the note
        assert reply, first
        assert not reply.startswith("{"), first
        assert found.group(0) in note, first
        second = await client.chat_shown(
            {"prompt": "what number?", "continuation_id": found.group(1)}
        )
        assert UUID_IN_TEXT.search(second).group(1) == found.group(1)  # type: ignore[union-attr]
        assert f"{op}: the shown text keeps the number 17" in prompts_seen(daemon.standin)


async def test_the_newest_shims_result_is_the_tools_own_output(daemon: LiveServer) -> None:
    """The continuation note is added to the top-level ``text`` only: ``result`` (what
    the newest shim reads), ``outputs`` and ``structured`` are the tool's own."""
    async with RequestIdClient(root_url(daemon), "token-alice") as client:
        reply = await client.call("chat", {"prompt": "leave my result alone"})
    structured = reply["structured"]
    assert orjson.loads(reply["result"][0]["text"]) == structured
    assert reply["outputs"] == reply["result"]
    assert "---" not in structured["content"]
    note = structured["continuation_offer"]["note"]
    assert shown_by_older_shims(reply) == f"{structured['content']}\n\n---\n{note}"


async def test_a_request_id_call_gets_ack_progress_stream_then_its_result(
    daemon: LiveServer,
) -> None:
    async with RequestIdClient(root_url(daemon), "token-alice") as client:
        reply = await client.call("chat", {"prompt": "[slow:3] stream this"})
    ops = [frame["op"] for frame in client.seen]
    assert ops[0] == "call_tool_ack"
    assert client.seen[0]["accepted"] is True
    assert "progress" in ops  # a 3 s call, progress every second
    assert ops[-2:] == ["stream_complete", "call_tool_res"]
    chunks = [frame["chunk"] for frame in client.seen if frame["op"] == "stream_chunk"]
    assert len(chunks) >= 3
    content = reply["structured"]["content"]
    assert "".join(chunks) == content == "stand-in reply to: [slow:3] stream this"
    assert orjson.loads(reply["result"][0]["text"])["content"] == content
    assert reply["outputs"] == reply["result"]
    assert reply["ok"] is True
    assert reply["request_id"] == reply["id"]


async def test_an_id_only_call_gets_exactly_one_frame(daemon: LiveServer) -> None:
    """The newest client reads the next frame as its answer: nothing else may come."""
    ws = await connect(root_url(daemon))
    try:
        await ws.send(orjson.dumps({"op": "hello", "token": "token-alice"}).decode())
        assert orjson.loads(await ws.recv())["ok"] is True
        call = {"op": "call_tool", "id": 7, "name": "chat", "arguments": {"prompt": "[slow:2] x"}}
        await ws.send(orjson.dumps(call).decode())
        reply = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
        assert (reply["op"], reply["id"], reply["ok"]) == ("call_tool_res", 7, True)
        await ws.send(orjson.dumps({"op": "ping", "id": 8}).decode())
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["op"] == "pong"
    finally:
        await ws.close()


async def test_a_hello_may_ask_for_every_frame_even_for_id_only_calls(daemon: LiveServer) -> None:
    ws = await connect(root_url(daemon))
    try:
        hello_frame = {"op": "hello", "token": "token-alice", "capabilities": {"streaming": True}}
        await ws.send(orjson.dumps(hello_frame).decode())
        assert orjson.loads(await ws.recv())["ok"] is True
        call = {"op": "call_tool", "id": "s", "name": "chat", "arguments": {"prompt": "stream"}}
        await ws.send(orjson.dumps(call).decode())
        ops: list[str] = []
        while not ops or ops[-1] != "call_tool_res":
            ops.append(orjson.loads(await asyncio.wait_for(ws.recv(), 10))["op"])
        assert ops[0] == "call_tool_ack"
        assert "stream_chunk" in ops
        assert ops[-2] == "stream_complete"
    finally:
        await ws.close()


async def test_cancel_is_answered_with_cancelled_and_stops_the_model(
    daemon: LiveServer,
) -> None:
    prompt = "[slow:30] cancel me"
    ws = await hello(daemon)
    try:
        call = {
            "op": "call_tool",
            "request_id": "c",
            "name": "chat",
            "arguments": {"prompt": prompt},
        }
        await ws.send(orjson.dumps(call).decode())
        await until(ws, "stream_chunk", "c")  # the model is answering
        await ws.send(orjson.dumps({"op": "cancel", "request_id": "c"}).decode())
        cancelled = await until(ws, "cancelled", "c")
        assert cancelled["cancelled"] is True
        ended = await until(ws, "call_tool_res", "c")
        assert ended["error"]["code"] == "cancelled"
    finally:
        await ws.close()
    deadline = time.monotonic() + 10
    while prompt not in daemon.standin.aborted:  # the stand-in notices at its next chunk
        assert time.monotonic() < deadline, "the model's stream was not closed"
        await asyncio.sleep(0.1)


async def test_a_20_mb_frame_is_read_a_33_mb_one_refused_with_its_id_a_40_mb_one_closed(
    daemon: LiveServer,
) -> None:
    """Up to the 32 MiB limit a frame is read; up to 1 MiB over it, refused with its id;
    past that, closed with 1009 on its header (as the original daemon), never read."""
    async with RequestIdClient(root_url(daemon), "token-alice") as client:
        with pytest.raises(CallFailed, match="limit"):  # read whole, refused by the tool
            await client.call("chat", {"prompt": "x" * 20_000_000})
        assert client.seen[-1]["error"]["code"] == "tool_error"
        with pytest.raises(CallFailed, match="frames are limited to 33554432 bytes"):
            await client.call("chat", {"prompt": "x" * 34_000_000})
        assert client.seen[-1]["error"]["code"] == "too_large"
        assert (await client.chat({"prompt": "still here"}))["content"]
        with pytest.raises(ConnectionClosed) as closed:
            await client.call("chat", {"prompt": "x" * 40_000_000})
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009


async def test_json_rpc_streams_progress_notifications_with_the_text_so_far(
    daemon: LiveServer,
) -> None:
    async with JsonRpcClient(root_url(daemon), "token-alice") as client:
        result = await client.chat({"prompt": "[slow:2] tell me"})
    assert client.progress, "no progress notification arrived"
    assert all(p["progressToken"] == "p-1" for p in client.progress)
    progress = [p["progress"] for p in client.progress]
    assert progress == sorted(progress)
    assert client.progress[-1]["message"] == result["content"]


async def test_json_rpc_with_a_bad_token_is_refused_then_closed_4003(daemon: LiveServer) -> None:
    async with JsonRpcClient(root_url(daemon), "token-alice") as good:
        assert "chat" in await good.list_tools()
    async with connect(root_url(daemon) + "?token=wrong") as ws:
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
        await ws.send(orjson.dumps(initialize).decode())
        refusal = orjson.loads(await ws.recv())
        assert refusal["id"] == 1
        assert refusal["error"]["message"] == "unauthorized"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4003


async def test_every_dialect_survives_a_60_s_model_call(daemon: LiveServer) -> None:
    """The older client gives up after 20 s without a frame about its call: only the
    daemon's progress frames keep it waiting through a 60 s call."""

    async def one(dialect: str, client: Client) -> dict[str, Any]:
        async with client:
            return await client.chat({"prompt": f"[slow:60] {dialect} waits"})

    url = root_url(daemon)
    clients: dict[str, Client] = {
        "next-frame": NextFrameClient(url, "token-alice"),
        "request_id": RequestIdClient(url, "token-alice", idle_timeout=20),
        "tool_call": RequestIdClient(url, "token-alice", op="tool_call", idle_timeout=20),
        "json-rpc": JsonRpcClient(url, "token-alice"),
    }
    started = time.monotonic()
    results = await asyncio.gather(*(one(name, c) for name, c in clients.items()))
    assert time.monotonic() - started >= 55  # they really waited for the model
    for name, result in zip(clients, results, strict=True):
        assert result["content"] == f"stand-in reply to: [slow:60] {name} waits"


async def test_calls_in_flight_on_one_connection_are_bounded(daemon: LiveServer) -> None:
    """Pipelined calls beyond the connection's bound are refused at once, each with its
    id, while those running go on; the connection lives."""
    async with connect(root_url(daemon), max_size=None) as ws:
        await ws.send(orjson.dumps({"op": "hello", "token": "token-alice"}).decode())
        assert orjson.loads(await ws.recv())["ok"]
        for n in range(33):
            call = {
                "op": "call_tool",
                "id": f"c{n}",
                "name": "chat",
                "arguments": {"prompt": "[slow:3] wait"},
            }
            await ws.send(orjson.dumps(call).decode())
        refused = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert refused["id"] == "c32"
        assert "32 calls are running on this connection" in refused["error"]["message"]
        results = [orjson.loads(await asyncio.wait_for(ws.recv(), 60)) for _ in range(32)]
        assert sorted(r["id"] for r in results) == sorted(f"c{n}" for n in range(32))
        assert all(r["ok"] for r in results)
