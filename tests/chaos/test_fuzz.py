"""Fuzzing with hypothesis: WebSocket frames and JSON-RPC bodies against ``convmem serve``,
and tool arguments against the MCP server in process. Whatever arrives, the answer is an
answer (never a crash, a 500 or a dropped connection) and the server serves on.
A few hundred cases in ``make test``; ``make chaos`` runs ten thousand of each."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from websockets.sync.client import connect
from websockets.sync.connection import Connection

from convmem import Memory
from convmem.providers.echo import EchoProvider
from convmem.server.mcp_app import build_mcp
from convmem.server.metrics import Metrics
from convmem.server.service import ConversationService
from tests.chaos.harness import FULL, Outcome
from tests.support.live import LiveServer
from tests.test_server_live import live, standin

__all__ = ["live", "standin"]  # the live server's fixtures, shared with test_server_live

EXAMPLES = 10_000 if FULL else 150
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=not FULL,
)
INTERNALS = ("pydantic", "input_value", "Traceback")
FUZZ_CLIENT = {"name": "fuzz", "version": "1"}
RAN: dict[str, int] = {
    "websocket": 0,
    "websocket json-rpc": 0,
    "json-rpc": 0,
    "tools": 0,
}  # cases, for the report

# Ten thousand cases take minutes: beyond the suite's per-test timeout in make chaos.
pytestmark = pytest.mark.timeout(3600 if FULL else 300)
TOOLS = ["chat", "thread_get", "thread_list", "thread_export", "thread_delete", "health"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
ops = st.sampled_from(["call_tool", "tool_call", "list_tools", "cancel", "ping", "hello", "nope"])
frames = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64),
    json_values.map(json.dumps),
    st.fixed_dictionaries(
        {"op": ops},
        optional={
            "request_id": scalars,
            "id": scalars,
            "name": st.sampled_from([*TOOLS, "nope"]) | st.text(max_size=10),
            "arguments": json_values,
        },
    ).map(json.dumps),
)
arguments = st.dictionaries(
    st.sampled_from(
        [
            "prompt",
            "continuation_id",
            "model",
            "files",
            "system_prompt",
            "limit",
            "cursor",
            "format",
            "other",
        ]
    ),
    json_values,
    max_size=5,
)


@pytest.fixture
def socket(live: LiveServer) -> Iterator[Connection]:
    # No keepalive thread: its pings draw on the global `random`, which hypothesis forbids
    # while it draws cases (seen at 10,000 cases, once a keepalive ping came due).
    with connect(live.ws_url, max_size=None, ping_interval=None) as ws:
        ws.send(json.dumps({"op": "hello", "token": "token-alice"}))
        assert json.loads(ws.recv(10))["ok"] is True
        yield ws


def _alive(ws: Connection, marker: int) -> None:
    """A ping after the fuzzed frame is answered: the connection and its server live."""
    ws.send(json.dumps({"op": "ping", "request_id": f"alive-{marker}"}))
    while True:
        reply = json.loads(ws.recv(15))
        if reply.get("op") == "pong" and reply.get("request_id") == f"alive-{marker}":
            return


@FUZZ
@given(frame=frames)
def test_websocket_frames_never_break_the_connection(
    socket: Connection, frame: str | bytes
) -> None:
    socket.send(frame)
    _alive(socket, hash(frame) & 0xFFFFFF)
    RAN["websocket"] += 1


@pytest.fixture
def rpc_socket(live: LiveServer) -> Iterator[Connection]:
    """A WebSocket whose first frame was an MCP initialize: plain JSON-RPC from then on."""
    bearer = {"Authorization": "Bearer token-alice"}
    with connect(live.ws_url, max_size=None, ping_interval=None, additional_headers=bearer) as ws:
        params = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": FUZZ_CLIENT}
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}))
        assert "result" in json.loads(ws.recv(10))
        ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        yield ws


@FUZZ
@given(body=json_values, method=st.sampled_from(["tools/call", "tools/list", "ping", "x"]))
def test_json_rpc_frames_over_websocket_never_break_the_connection(
    rpc_socket: Connection, body: Any, method: str
) -> None:
    marker = hash((json.dumps(body), method)) & 0xFFFFFF
    for payload in (body, {"jsonrpc": "2.0", "id": -1, "method": method, "params": body}):
        rpc_socket.send(json.dumps(payload))
    rpc_socket.send(json.dumps({"jsonrpc": "2.0", "id": f"alive-{marker}", "method": "ping"}))
    while True:  # the ping is answered: the connection and its server live
        reply = json.loads(rpc_socket.recv(15))
        if reply.get("id") == f"alive-{marker}":
            assert reply.get("result") == {}, reply
            break
    RAN["websocket json-rpc"] += 1


@pytest.fixture(scope="module")
def http(live: LiveServer) -> Iterator[httpx2.Client]:
    headers = {
        "Authorization": "Bearer token-alice",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2025-06-18",
    }
    with httpx2.Client(base_url=live.url, headers=headers, timeout=30) as client:
        yield client


@FUZZ
@given(body=json_values, method=st.sampled_from(["tools/call", "tools/list", "initialize", "x"]))
def test_json_rpc_bodies_never_get_a_500(http: httpx2.Client, body: Any, method: str) -> None:
    for payload in (body, {"jsonrpc": "2.0", "id": 1, "method": method, "params": body}):
        response = http.post("/mcp", content=json.dumps(payload))
        assert response.status_code < 500, (payload, response.status_code, response.text[:200])
    RAN["json-rpc"] += 1


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    running = asyncio.new_event_loop()
    yield running
    running.close()


@pytest.fixture(scope="module")
def mcp_server(
    loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    memory = Memory.from_url(f"sqlite:///{folder}/fuzz.db")
    loop.run_until_complete(memory.open())
    service = ConversationService(memory, EchoProvider())
    yield build_mcp(service, metrics=Metrics(memory), transport="stdio")
    loop.run_until_complete(memory.aclose())


@FUZZ
@given(tool=st.sampled_from([*TOOLS, "nope"]), args=arguments)
def test_tool_arguments_get_a_result_or_a_plain_error(
    loop: asyncio.AbstractEventLoop, mcp_server: Any, tool: str, args: dict[str, Any]
) -> None:
    refusal = ""
    try:
        loop.run_until_complete(mcp_server.call_tool(tool, args))
    except UnexpectedToolError as exc:  # a crash inside a tool: never
        raise AssertionError(f"{tool}({args!r}) crashed: {exc.__cause__!r}") from exc
    except ToolError as exc:  # a refusal: in plain words
        refusal = str(exc)
    assert not any(internal in refusal for internal in INTERNALS), refusal
    RAN["tools"] += 1


def test_the_fuzzed_cases_are_reported(live: LiveServer) -> None:
    """Runs last in this module: one row per fuzz target, then the server still serves."""
    assert httpx2.get(f"{live.url}/health", timeout=5).status_code == 200
    targets = {
        "websocket": "WebSocket frames (text, binary, JSON, daemon ops) to convmem serve",
        "websocket json-rpc": "JSON-RPC frames on a WebSocket opened with initialize",
        "json-rpc": "JSON-RPC bodies POSTed to /mcp",
        "tools": "tool arguments to every MCP tool (in process)",
    }
    for target, what in targets.items():
        Outcome(
            scenario=f"fuzz: {what}",
            load=f"{RAN[target]} hypothesis cases",
            faults="arbitrary input; no 500, no crash, no dropped connection",
            calls=RAN[target],
        ).record()
