"""``convmem serve`` as a real process on a free port, reached by real clients: the SDK's
Streamable HTTP client, a WebSocket client speaking the daemon protocol, plain HTTP for
/health and /metrics; and ``convmem mcp`` over stdio as a subprocess."""

from __future__ import annotations

import asyncio
import base64
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from mcp import Client, StdioServerParameters
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from convmem_bench.chat_standin import ChatCompletionsStandIn
from tests.support.live import (
    LiveServer,
    chat,
    frame,
    hello,
    http_client,
    live_server,
    server_env,
    until,
)
from tests.support.ws_clients import JsonRpcClient


@pytest.fixture(scope="module")
def standin() -> Iterator[ChatCompletionsStandIn]:
    server = ChatCompletionsStandIn(slow_seconds=3.0).start()
    yield server
    server.stop()


def small_limits_env(tmp: Path, standin: ChatCompletionsStandIn) -> dict[str, str]:
    return server_env(
        tmp,
        standin,
        CONVMEM_MAX_FRAME_BYTES="100000",
        CONVMEM_WS_HELLO_TIMEOUT_SECONDS="1",
    )


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, standin: ChatCompletionsStandIn
) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("live")
    with live_server(small_limits_env(tmp, standin), standin) as server:
        yield server


# -- Streamable HTTP -----------------------------------------------------------------


async def test_chat_and_continue_over_streamable_http(live: LiveServer) -> None:
    async with http_client(live, "token-alice") as client:
        first = await chat(client, "first question")
        second = await chat(client, "second question", first["continuation_id"])
    assert second["continuation_id"] == first["continuation_id"]
    assert second["content"] == "stand-in reply to: second question"
    assert second["provider"] == "custom"
    assert second["model"] == "standin-model"
    sent = live.standin.requests[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]  # native messages
    assert sent[0]["content"] == "first question"  # the continuation's history reached it


async def test_one_client_cannot_read_another_clients_thread(live: LiveServer) -> None:
    async with http_client(live, "token-alice") as alice:
        mine = await chat(alice, "secret plans")
    async with http_client(live, "token-bob") as bob:
        peek = await bob.call_tool("thread_get", {"continuation_id": mine["continuation_id"]})
        assert peek.is_error
        hijack = await bob.call_tool(
            "chat", {"prompt": "x", "continuation_id": mine["continuation_id"]}
        )
        assert hijack.is_error
        listed = await bob.call_tool("thread_list", {})
        assert listed.structured_content is not None
        assert mine["continuation_id"] not in str(listed.structured_content)


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_a_missing_or_wrong_token_is_refused(live: LiveServer, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            f"{live.url}/mcp",
            headers={**headers, "Accept": "application/json, text/event-stream"},
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        )
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


async def test_bad_tool_input_over_http_is_a_clear_error(live: LiveServer) -> None:
    async with http_client(live, "token-alice") as client:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"prompt": "x", "continuation_id": "not-a-uuid"}, "UUID"),
            ({"prompt": "x" * 250_000}, "limit"),
            ({}, "prompt"),
            ({"prompt": ["a", "list"]}, "prompt"),
        ]
        for arguments, message in cases:
            result = await client.call_tool("chat", arguments)
            assert result.is_error
            assert message in result.content[0].text  # type: ignore[union-attr]
        assert (await chat(client, "and the server still serves"))["content"]


async def test_malformed_json_rpc_gets_an_error_and_the_server_keeps_serving(
    live: LiveServer,
) -> None:
    async with httpx2.AsyncClient(headers={"Authorization": "Bearer token-alice"}) as http:
        response = await http.post(
            f"{live.url}/mcp",
            headers={
                "Accept": "application/json, text/event-stream",
                "Content-Type": "application/json",
            },
            content=b"{not json",
        )
        assert 400 <= response.status_code < 500
    async with http_client(live, "token-alice") as client:
        assert (await chat(client, "still there?"))["content"]


async def test_health_and_metrics(live: LiveServer) -> None:
    async with httpx2.AsyncClient() as http:
        health = await http.get(f"{live.url}/health")
        metrics = (await http.get(f"{live.url}/metrics")).text
    assert health.json() == {"ok": True, "status": "ok", "store": "ok", "redis": "disabled"}
    assert 'convmem_requests_total{outcome="ok",tool="chat",transport="http"}' in metrics
    assert 'convmem_store_round_trips_total{kind="write"}' in metrics
    assert 'convmem_cache_hits_total{layer="l1"}' in metrics
    assert 'convmem_redis_circuit{state="closed"} 1.0' in metrics


# -- the WebSocket daemon -----------------------------------------------------------------


async def test_ws_a_bad_token_gets_the_original_refusal_then_4003(live: LiveServer) -> None:
    async with connect(live.ws_url) as ws:
        await ws.send(orjson.dumps({"op": "hello", "token": "nope"}).decode())
        refusal = orjson.loads(await ws.recv())
        assert refusal == {"op": "hello_ack", "ok": False, "error": "unauthorized"}
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4003


@pytest.mark.parametrize("path", ["", "/", "/anything"])
async def test_ws_upgrades_on_any_path_reach_the_daemon(live: LiveServer, path: str) -> None:
    """The original daemon's clients dial ws://HOST:PORT with no path."""
    async with connect(live.url.replace("http://", "ws://") + path) as ws:
        await ws.send(orjson.dumps({"op": "hello", "token": "token-alice"}).decode())
        assert orjson.loads(await ws.recv())["ok"] is True
        tools = await frame(ws, {"op": "list_tools", "request_id": 1})
        assert "chat" in {t["name"] for t in tools["tools"]}


async def test_ws_list_call_continue_and_ping(live: LiveServer) -> None:
    ws = await hello(live)
    try:
        tools = await frame(ws, {"op": "list_tools"})
        assert tools["op"] == "list_tools_res"
        assert {"chat", "thread_get", "health"} <= {t["name"] for t in tools["tools"]}
        await ws.send(
            orjson.dumps(
                {
                    "op": "call_tool",
                    "name": "chat",
                    "arguments": {"prompt": "ws one"},
                    "request_id": "r1",
                }
            ).decode()
        )
        first = await until(ws, "call_tool_res", "r1")
        assert first["op"] == "call_tool_res"
        assert first["request_id"] == "r1"
        assert first["outputs"][0]["type"] == "text"
        cid = first["structured"]["continuation_id"]
        await ws.send(
            orjson.dumps(
                {
                    "op": "call_tool",
                    "name": "chat",
                    "arguments": {"prompt": "ws two", "continuation_id": cid},
                    "request_id": 2,
                }
            ).decode()
        )
        second = await until(ws, "call_tool_res", 2)
        assert second["request_id"] == 2
        assert second["structured"]["continuation_id"] == cid
        assert "ws one" in live.standin.requests[-1]["body"]["messages"][0]["content"]
        assert await frame(ws, {"op": "ping"}) == {"op": "pong", "request_id": None, "id": None}
    finally:
        await ws.close()


@pytest.mark.parametrize(
    ("message", "op", "code", "request_id"),
    [
        ("{not json", "error", "bad_json", None),
        ("[1, 2]", "error", "bad_request", None),
        ({"op": "fly", "id": 4}, "error", "unknown_op", 4),
        (
            {"op": "call_tool", "name": "chat", "arguments": "prompt", "request_id": "a"},
            "call_tool_res",
            "bad_request",
            "a",
        ),
        (
            {"op": "call_tool", "name": "chat", "arguments": {}},
            "call_tool_res",
            "bad_request",
            None,
        ),
        ("x" * 200_000, "error", "too_large", None),
        (
            {
                "op": "call_tool",
                "request_id": "big",
                "name": "chat",
                "arguments": {"p": "x" * 150_000},
            },
            "call_tool_res",
            "too_large",
            "big",
        ),
    ],
)
async def test_ws_bad_frames_get_an_error_frame_and_the_connection_lives(
    live: LiveServer, message: dict[str, Any] | str, op: str, code: str, request_id: object
) -> None:
    """Every refusal carries the request's id when it can be read, and an ``error``
    object; a refused call is a ``call_tool_res``, so a client waiting for it sees it."""
    ws = await hello(live)
    try:
        error = await frame(ws, message)
        assert error["op"] == op
        assert error["code"] == code
        assert error["error"]["code"] == code
        assert error["request_id"] == error["id"] == request_id
        assert (await frame(ws, {"op": "ping", "request_id": 9}))["op"] == "pong"
    finally:
        await ws.close()


async def test_ws_wrong_argument_types_are_an_error_result(live: LiveServer) -> None:
    ws = await hello(live)
    try:
        reply = await frame(
            ws, {"op": "call_tool", "name": "chat", "arguments": {"prompt": 5}, "id": "t"}
        )
        assert reply["request_id"] == "t"
        assert reply["is_error"] is True
        assert "prompt" in reply["error"]["message"]
        unknown = await frame(ws, {"op": "call_tool", "name": "nope", "arguments": {}, "id": "u"})
        assert unknown["is_error"] is True
        assert unknown["error"]["code"] == "tool_error"
    finally:
        await ws.close()


async def test_ws_calls_run_concurrently_and_can_be_cancelled(live: LiveServer) -> None:
    ws = await hello(live)
    try:
        slow = {
            "op": "call_tool",
            "name": "chat",
            "arguments": {"prompt": "[slow] think"},
            "request_id": "slow",
        }
        await ws.send(orjson.dumps(slow).decode())
        await until(ws, "call_tool_ack", "slow")
        health = {"op": "call_tool", "name": "health", "arguments": {}, "request_id": "fast"}
        await ws.send(orjson.dumps(health).decode())
        fast = await until(ws, "call_tool_res", "fast")
        assert fast["ok"] is True  # answered while the slow call still runs
        await ws.send(orjson.dumps({"op": "cancel", "request_id": "slow"}).decode())
        ack = await until(ws, "cancelled", "slow")
        assert ack == {"op": "cancelled", "request_id": "slow", "id": "slow", "cancelled": True}
        ended = await until(ws, "call_tool_res", "slow")
        assert ended["error"] == {"code": "cancelled", "message": "the call was cancelled"}
    finally:
        await ws.close()


async def test_the_daemon_survives_a_client_that_leaves_mid_call(live: LiveServer) -> None:
    ws = await hello(live)
    slow = {
        "op": "call_tool",
        "name": "chat",
        "arguments": {"prompt": "[slow] bye"},
        "request_id": "x",
    }
    await ws.send(orjson.dumps(slow).decode())
    await ws.close()
    async with httpx2.AsyncClient() as http:
        assert (await http.get(f"{live.url}/health")).status_code == 200
    again = await hello(live)
    try:
        assert (await frame(again, {"op": "ping"}))["op"] == "pong"
    finally:
        await again.close()


async def test_ws_a_silent_client_is_closed_after_the_hello_timeout(live: LiveServer) -> None:
    async with connect(live.ws_url) as ws:
        error = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["op"] == "error"
        assert error["error"] == {"code": "hello_timeout", "message": "no hello frame in time"}
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4002  # the original daemon's code for a hello timeout


async def test_ws_hello_must_come_first(live: LiveServer) -> None:
    async with connect(live.ws_url) as ws:
        await ws.send(orjson.dumps({"op": "list_tools"}).decode())
        error = orjson.loads(await ws.recv())
        assert error["code"] == "bad_hello"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4001  # the original daemon's code for a bad first frame


# -- stdio -------------------------------------------------------------------------------


async def test_stdio_chat_and_continue(tmp_path: Path, standin: ChatCompletionsStandIn) -> None:
    env = small_limits_env(tmp_path, standin)
    env.pop("CONVMEM_CLIENT_TOKENS")
    params = StdioServerParameters(command=sys.executable, args=["-m", "convmem", "mcp"], env=env)
    async with Client(params) as client:
        first = await chat(client, "over stdio")
        second = await chat(client, "and again", first["continuation_id"])
        bad = await client.call_tool("chat", {"prompt": "x", "continuation_id": "nope"})
        assert bad.is_error
        assert (await chat(client, "still serving"))["content"]
    assert second["continuation_id"] == first["continuation_id"]
    assert "over stdio" in standin.requests[-2]["body"]["messages"][0]["content"]


# -- MCP progress notifications ------------------------------------------------------------


class ProgressSeen:
    """The SDK client's progress callback: every notification of one call."""

    def __init__(self) -> None:
        self.notes: list[tuple[float, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.notes.append((progress, message))


async def chat_with_progress(client: Client, prompt: str) -> tuple[str, ProgressSeen]:
    seen = ProgressSeen()
    result = await client.call_tool("chat", {"prompt": prompt}, progress_callback=seen)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    content: str = result.structured_content["content"]
    return content, seen


def assert_streamed(content: str, seen: ProgressSeen) -> None:
    """Notifications came while the model streamed: the characters so far, rising, and
    the text so far, the last one the whole reply."""
    assert len(seen.notes) >= 2, seen.notes  # a 2 s streamed reply, one every 0.25 s at most
    progress = [p for p, _ in seen.notes]
    assert progress == sorted(progress)
    for chars, message in seen.notes:
        assert message is not None
        assert content.startswith(message)
        assert chars == len(message)
    assert seen.notes[-1][1] == content


async def test_streamable_http_chat_sends_progress_with_the_text_so_far(live: LiveServer) -> None:
    async with http_client(live, "token-alice") as client:
        content, seen = await chat_with_progress(client, "[slow:2] over http")
        quiet = await client.call_tool("chat", {"prompt": "no token, no stream"})
    assert_streamed(content, seen)
    # Without a progressToken the model is asked for a whole reply, not a stream.
    assert not quiet.is_error
    assert "stream" not in live.standin.requests[-1]["body"]


async def test_stdio_chat_sends_progress_with_the_text_so_far(
    tmp_path: Path, standin: ChatCompletionsStandIn
) -> None:
    env = small_limits_env(tmp_path, standin)
    env.pop("CONVMEM_CLIENT_TOKENS")
    params = StdioServerParameters(command=sys.executable, args=["-m", "convmem", "mcp"], env=env)
    async with Client(params) as client:
        content, seen = await chat_with_progress(client, "[slow:2] over stdio")
    assert_streamed(content, seen)


# -- MCP sessions (the stateful mode) -------------------------------------------------------


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-06-18",
}


def session_headers(token: str, session_id: str | None = None) -> dict[str, str]:
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {token}"}
    return headers | ({"Mcp-Session-Id": session_id} if session_id else {})


LISTING = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


async def open_session(http: httpx2.AsyncClient, token: str) -> str:
    """A stateful session opened by ``token``'s client: its id."""
    opened = await http.post("/mcp", json=INITIALIZE, headers=session_headers(token))
    session: str = opened.headers["mcp-session-id"]
    return session


async def test_by_default_no_session_is_kept(live: LiveServer) -> None:
    """Stateless: an initialize opens no session, so any instance can take the next call."""
    async with httpx2.AsyncClient(base_url=live.url) as http:
        response = await http.post("/mcp", json=INITIALIZE, headers=session_headers("token-alice"))
    assert response.status_code == 200
    assert "mcp-session-id" not in response.headers


async def test_a_stateful_session_belongs_to_the_client_that_opened_it(
    tmp_path: Path, standin: ChatCompletionsStandIn
) -> None:
    env = server_env(tmp_path, standin, CONVMEM_HTTP_SESSIONS="stateful")
    with live_server(env, standin) as server:
        async with httpx2.AsyncClient(base_url=server.url) as http:
            session = await open_session(http, "token-alice")
            # Bob knows Alice's session id: to him it does not exist.
            bob = session_headers("token-bob", session)
            as_bob = await http.post("/mcp", json=LISTING, headers=bob)
            assert as_bob.status_code == 404
            ended = await http.delete("/mcp", headers=bob)
            assert ended.status_code == 404
            # Alice's session lives on, and is hers to end.
            initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            alice = session_headers("token-alice", session)
            assert (await http.post("/mcp", json=initialized, headers=alice)).status_code == 202
            as_alice = await http.post("/mcp", json=LISTING, headers=alice)
            assert as_alice.status_code == 200
            assert "chat" in as_alice.text
            assert (await http.delete("/mcp", headers=alice)).status_code < 300
            gone = await http.post("/mcp", json=LISTING, headers=alice)
            assert gone.status_code == 404


async def test_a_browsers_get_of_the_root_says_where_things_are(live: LiveServer) -> None:
    async with httpx2.AsyncClient(base_url=live.url) as http:
        response = await http.get("/")
    assert response.status_code == 200
    assert response.json()["mcp"].startswith("/mcp")


async def test_a_get_of_mcp_on_the_stateless_server_is_405_at_once(live: LiveServer) -> None:
    """The specification lets a server without an event stream at GET answer 405; the
    stateless server has nothing to stream, so the answer comes at once (no hang)."""
    async with httpx2.AsyncClient(base_url=live.url, timeout=5.0) as http:
        plain = await http.get("/mcp", headers={"Authorization": "Bearer token-alice"})
        streaming = await http.get(
            "/mcp",
            headers={"Authorization": "Bearer token-alice", "Accept": "text/event-stream"},
        )
    for response in (plain, streaming):
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert "stateless" in response.json()["error"]["message"]


# -- security: headers read one way ----------------------------------------------------


async def test_a_repeated_session_header_is_refused_and_the_session_stays_its_owners(
    tmp_path: Path, standin: ChatCompletionsStandIn
) -> None:
    """The attack: bob presents alice's session id and a second, bogus one. The request is
    refused (400) before any part reads either, and alice's session lives on."""
    env = server_env(tmp_path, standin, CONVMEM_HTTP_SESSIONS="stateful")
    with live_server(env, standin) as server:
        async with httpx2.AsyncClient(base_url=server.url) as http:
            session = await open_session(http, "token-alice")
            twice = [
                *session_headers("token-bob").items(),
                ("Mcp-Session-Id", session),
                ("Mcp-Session-Id", "bogus"),
            ]
            posted = await http.post("/mcp", json=LISTING, headers=twice)
            assert posted.status_code == 400
            assert "mcp-session-id more than once" in posted.json()["error"]["message"]
            ended = await http.request("DELETE", "/mcp", headers=twice)
            assert ended.status_code == 400
            # The other order, and a repeated Authorization, are refused alike.
            reversed_twice = [*twice[:-2], ("Mcp-Session-Id", "bogus"), ("Mcp-Session-Id", session)]
            assert (
                await http.post("/mcp", json=LISTING, headers=reversed_twice)
            ).status_code == 400
            two_tokens = [
                *MCP_HEADERS.items(),
                ("Authorization", "Bearer token-bob"),
                ("Authorization", "Bearer token-alice"),
            ]
            refused = await http.post("/mcp", json=INITIALIZE, headers=two_tokens)
            assert refused.status_code == 400
            # Alice's session is hers, and alive.
            alice = session_headers("token-alice", session)
            initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            assert (await http.post("/mcp", json=initialized, headers=alice)).status_code == 202
            assert (await http.post("/mcp", json=LISTING, headers=alice)).status_code == 200


async def test_a_websocket_upgrade_with_a_repeated_authorization_is_refused(
    live: LiveServer,
) -> None:
    headers = [("Authorization", "Bearer token-bob"), ("Authorization", "Bearer token-alice")]
    with pytest.raises(InvalidStatus) as refused:
        await connect(live.ws_url, additional_headers=headers)
    assert refused.value.response.status_code == 403


# -- security: frames nested past any parser's depth -----------------------------------

NESTED = "[" * 1025 + "]" * 1025
NESTED_OBJECT = '{"op":"call_tool","request_id":7,"name":"chat","arguments":{"a":' + NESTED + "}}"


async def test_a_nested_first_frame_is_a_bad_hello_not_a_dropped_connection(
    live: LiveServer,
) -> None:
    """Before authentication: the nesting that made the parser raise RecursionError (a
    1006 drop) is answered like any other bad first frame, and closed with 4001."""
    for first in (NESTED, NESTED_OBJECT):
        ws = await connect(live.ws_url)
        await ws.send(first)
        refusal = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert refusal["code"] == "bad_hello"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4001


async def test_a_nested_frame_after_hello_is_an_error_frame_and_the_connection_lives(
    live: LiveServer,
) -> None:
    ws = await hello(live)
    try:
        for nested in (NESTED, NESTED_OBJECT):
            error = await frame(ws, nested)
            assert error["code"] == "bad_json"
            assert "deeper than 1024 levels" in error["message"]
        assert (await frame(ws, {"op": "ping", "request_id": 9}))["op"] == "pong"
    finally:
        await ws.close()


async def test_a_nested_json_rpc_message_is_a_parse_error_and_the_session_lives(
    live: LiveServer,
) -> None:
    async with JsonRpcClient(live.ws_url, "token-alice") as client:
        assert client.ws is not None
        await client.ws.send(NESTED)
        error = orjson.loads(await asyncio.wait_for(client.ws.recv(), 10))
        assert error["error"]["code"] == -32700
        await client.ws.send(
            '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"chat",'
            '"arguments":{"prompt":' + NESTED + "}}}"
        )
        error = orjson.loads(await asyncio.wait_for(client.ws.recv(), 10))
        assert error["id"] is None or error["id"] == 5
        assert "error" in error
        assert "chat" in await client.list_tools()


# -- security: numbers, ids and cursors out of range -----------------------------------


@pytest.mark.parametrize(
    ("request_id", "code"),
    [("{}", -32600), ("NaN", -32700), ("1.5", -32600), ("true", -32600), ("[1]", -32600)],
)
async def test_a_json_rpc_request_whose_id_is_not_an_id_gets_an_error_not_a_silent_202(
    live: LiveServer, request_id: str, code: int
) -> None:
    body = f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/list"}}'
    async with httpx2.AsyncClient(base_url=live.url) as http:
        alone = await http.post("/mcp", content=body, headers=session_headers("token-alice"))
        batch = await http.post("/mcp", content=f"[{body}]", headers=session_headers("token-alice"))
    for response in (alone, batch):
        assert response.status_code == 400
        assert response.json()["error"]["code"] == code


async def test_a_fork_point_or_a_count_out_of_range_is_refused_in_words(
    live: LiveServer,
) -> None:
    async with http_client(live, "token-alice") as client:
        thread_id = (await chat(client, "fork me"))["continuation_id"]
        for at_seq, expected in (
            (2147483648, "less than or equal to 2147483647"),
            (2**63, "less than or equal to 2147483647"),
            (True, "valid integer"),
            ("3", "valid integer"),
        ):
            result = await client.call_tool(
                "thread_fork", {"continuation_id": thread_id, "at_seq": at_seq}
            )
            assert result.is_error
            text = result.content[0].text  # type: ignore[union-attr]
            assert "at_seq" in text
            assert expected in text
            assert "PostgreSQL" not in text
            assert "try again" not in text
        rewound = await client.call_tool(
            "thread_rewind", {"continuation_id": thread_id, "turns": True}
        )
        assert rewound.is_error


@pytest.mark.parametrize(
    "raw",
    [
        b"99999999999999999999999:0f8c2a4e-6b1d-4c3a-9e2f-5a7b8c9d0e1f",
        b"1796168886670346:not-a-uuid",
        b"-99999999999999999999:0f8c2a4e-6b1d-4c3a-9e2f-5a7b8c9d0e1f",
    ],
)
async def test_a_forged_listing_cursor_is_refused_in_words(live: LiveServer, raw: bytes) -> None:
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    async with http_client(live, "token-alice") as client:
        result = await client.call_tool("thread_list", {"cursor": cursor})
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert "invalid listing cursor: pass the next_cursor of a previous page unchanged" in text
    assert "uuid" not in text.lower().replace("invalid listing cursor", "")


# -- security: exhaustion --------------------------------------------------------------


async def test_stateful_sessions_are_bounded_per_client_not_for_everyone(
    tmp_path: Path, standin: ChatCompletionsStandIn
) -> None:
    """One client opening sessions in a loop reaches its own bound (429); another client
    still opens sessions; ending one of its sessions lets the first open another."""
    env = server_env(
        tmp_path, standin, CONVMEM_HTTP_SESSIONS="stateful", CONVMEM_HTTP_SESSIONS_PER_CLIENT="3"
    )
    with live_server(env, standin) as server:
        async with httpx2.AsyncClient(base_url=server.url) as http:

            async def open_session(token: str) -> httpx2.Response:
                return await http.post("/mcp", json=INITIALIZE, headers=session_headers(token))

            opened = [await open_session("token-alice") for _ in range(3)]
            assert all(r.status_code == 200 for r in opened)
            refused = await open_session("token-alice")
            assert refused.status_code == 429
            assert "3 open MCP sessions, its limit" in refused.json()["error"]["message"]
            assert (await open_session("token-bob")).status_code == 200
            first = opened[0].headers["mcp-session-id"]
            ended = await http.delete("/mcp", headers=session_headers("token-alice", first))
            assert ended.status_code < 300
            assert (await open_session("token-alice")).status_code == 200


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` (reads end) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


async def test_a_silent_or_half_sent_request_is_closed_after_the_header_deadline(
    tmp_path: Path, standin: ChatCompletionsStandIn
) -> None:
    """An unauthenticated client that says nothing, or half a header, no longer holds a
    connection (and a file descriptor) for good; a request sent in time is served."""
    env = server_env(tmp_path, standin, CONVMEM_HTTP_HEADER_TIMEOUT_SECONDS="1")
    with live_server(env, standin) as server:
        host, port = server.url.removeprefix("http://").split(":")
        silent = socket.create_connection((host, int(port)))
        partial = socket.create_connection((host, int(port)))
        partial.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        try:
            assert await asyncio.to_thread(closed_by_server, silent, 15)
            assert await asyncio.to_thread(closed_by_server, partial, 15)
        finally:
            silent.close()
            partial.close()
        async with httpx2.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/health")).status_code == 200
        ws = await hello(server)  # an upgraded connection is the daemon's: it stays
        try:
            await asyncio.sleep(1.5)
            assert (await frame(ws, {"op": "ping", "request_id": 1}))["op"] == "pong"
        finally:
            await ws.close()


async def test_the_whole_servers_counters_are_for_operators_only(
    live: LiveServer, tmp_path: Path, standin: ChatCompletionsStandIn
) -> None:
    async with http_client(live, "token-alice") as client:
        refused = await client.call_tool("memory_stats", {})
    assert refused.is_error
    assert "CONVMEM_OPERATORS" in refused.content[0].text  # type: ignore[union-attr]
    env = server_env(tmp_path, standin, CONVMEM_OPERATORS="alice")
    with live_server(env, standin) as server:
        async with http_client(server, "token-alice") as client:
            stats = await client.call_tool("memory_stats", {})
            assert not stats.is_error
            assert "store_reads" in (stats.structured_content or {})
        async with http_client(server, "token-bob") as client:
            assert (await client.call_tool("memory_stats", {})).is_error
