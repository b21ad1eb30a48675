"""Three ``convmem serve`` processes behind HAProxy (round robin, ``/health`` as its
check), sharing one PostgreSQL and one Redis, reached by the official MCP client and by
WebSocket clients through the balancer."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from convmem import Memory
from convmem_bench.chat_standin import ChatCompletionsStandIn
from convmem_bench.haproxy import HAProxy
from tests.support.live import LiveServer, chat, http_client, live_server, server_env
from tests.support.services import pg_url
from tests.support.ws_clients import CallFailed, RequestIdClient

INSTANCES = ("a", "b", "c")


@pytest.fixture(scope="module")
def standin() -> Iterator[ChatCompletionsStandIn]:
    server = ChatCompletionsStandIn().start()
    yield server
    server.stop()


@dataclass
class Cluster:
    balancer: HAProxy
    instances: dict[str, LiveServer]
    env: dict[str, str]
    standin: ChatCompletionsStandIn
    stack: contextlib.ExitStack

    @property
    def url(self) -> str:
        return self.balancer.url

    def kill(self, name: str) -> None:
        """SIGKILL one instance: no goodbye to its clients, HAProxy or Redis."""
        self.instances[name].process.send_signal(signal.SIGKILL)
        self.instances[name].process.wait(10)

    def restart(self, name: str) -> None:
        port = self.instances[name].port
        self.instances[name] = self.stack.enter_context(
            live_server(self.env, self.standin, port=port)
        )


@pytest.fixture
def cluster(
    tmp_path: Path,
    standin: ChatCompletionsStandIn,
    clean_pg: str,
    redis_url: str,
    redis_prefix: str,
) -> Iterator[Cluster]:
    env = server_env(
        tmp_path,
        standin,
        CONVMEM_STORE_URL=pg_url(clean_pg),
        CONVMEM_CACHE_URL=redis_url,
        CONVMEM_CACHE_PREFIX=redis_prefix,
        CONVMEM_WS_PROGRESS_SECONDS="1",
    )
    with contextlib.ExitStack() as stack:
        instances = {name: stack.enter_context(live_server(env, standin)) for name in INSTANCES}
        balancer = HAProxy({name: server.port for name, server in instances.items()}).start()
        stack.callback(balancer.stop)
        yield Cluster(balancer, instances, env, standin, stack)


def sent_to_model(standin: ChatCompletionsStandIn) -> str:
    return "\n".join(str(m["content"]) for m in standin.requests[-1]["body"]["messages"])


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_conversation_continues_across_instances(cluster: Cluster, mode: str) -> None:
    """Clients of the 2026-07-28 revision and of the 2025 ones (``legacy``: a protocol
    session, as the mcp 1.x clients have) alike: any instance answers any request."""
    prompts = [f"prompt number {n}" for n in range(6)]
    sources = []
    async with http_client(cluster.url, "token-alice", mode=mode) as client:
        first = await chat(client, prompts[0])
        cid = first["continuation_id"]
        for prompt in prompts[1:]:
            reply = await chat(client, prompt, cid)
            assert reply["continuation_id"] == cid
            sources.append(reply["thread_source"])
    history = sent_to_model(cluster.standin)
    assert all(p in history for p in prompts[:-1])  # the model saw every earlier turn
    served = cluster.balancer.sessions()
    assert all(count > 0 for count in served.values()), served  # round robin reached all
    assert {"l2", "store"} & set(sources), sources  # some call landed on another instance


async def test_an_instance_killed_mid_load_loses_no_acknowledged_turn(cluster: Cluster) -> None:
    """SIGKILL one instance while six conversations run through the balancer: calls in
    flight on it may fail, every other call succeeds, HAProxy takes it out and puts it
    back when it restarts, and every acknowledged turn is in the store."""
    acknowledged: dict[str, list[str]] = {}
    failed: list[str] = []
    stop = asyncio.Event()

    async def conversation(n: int) -> None:
        """Chats on, as a client would: a call that fails (its client with it, as the
        SDK's transport fails on a dropped connection) is counted, and a new client
        continues the same conversation."""
        cid: str | None = None
        turn = 0
        while not stop.is_set():
            try:
                async with http_client(cluster.url, "token-alice") as client:
                    while not stop.is_set():
                        prompt = f"conversation {n} turn {turn}"
                        turn += 1
                        reply = await chat(client, prompt, cid)
                        acknowledged.setdefault(reply["continuation_id"], []).append(prompt)
                        # A full thread ends its conversation: the next one starts anew.
                        cid = reply["continuation_id"] if reply["remaining_turns"] >= 2 else None
            except Exception as exc:  # a call in flight on the killed instance
                failed.append(f"conversation {n}, turn {turn - 1}: {exc!r}")

    load = asyncio.gather(*(conversation(n) for n in range(6)))
    await asyncio.sleep(1.5)
    cluster.kill("b")
    await asyncio.to_thread(cluster.balancer.wait_until, lambda s: s["b"] == "DOWN", "b DOWN")
    await asyncio.sleep(1.0)  # load on the two left
    before_restart = cluster.balancer.sessions()["b"]
    await asyncio.to_thread(cluster.restart, "b")
    await asyncio.to_thread(cluster.balancer.wait_until, lambda s: s["b"] == "UP", "b UP")
    await asyncio.sleep(1.5)  # load on all three again
    stop.set()
    await load

    assert len(failed) <= 6, failed  # at most the one call each conversation had in flight
    assert cluster.balancer.sessions()["b"] > before_restart  # b serves again
    assert sum(len(p) for p in acknowledged.values()) > 30
    async with Memory.from_url(cluster.env["CONVMEM_STORE_URL"]) as memory:
        for cid, prompts in acknowledged.items():
            thread = await memory.get_thread(cid, owner="alice")
            assert thread is not None
            stored = {t.content for t in thread.turns if t.role == "user"}
            assert set(prompts) <= stored, set(prompts) - stored


async def test_a_websocket_client_reconnects_through_the_balancer(cluster: Cluster) -> None:
    ws_url = cluster.url.replace("http://", "ws://")
    async with RequestIdClient(ws_url, "token-alice", idle_timeout=10) as client:
        first = await client.chat({"prompt": "the websocket remembers 99"})
        cid = first["continuation_id"]
        holding = [n for n, current in cluster.balancer.sessions("scur").items() if current]
        assert len(holding) == 1, holding
        cluster.kill(holding[0])
        with pytest.raises((ConnectionClosed, CallFailed)):
            await client.chat({"prompt": "lost with its instance", "continuation_id": cid})
    async with RequestIdClient(ws_url, "token-alice", idle_timeout=10) as again:
        reply = await again.chat({"prompt": "which number?", "continuation_id": cid})
    assert reply["continuation_id"] == cid
    assert "the websocket remembers 99" in sent_to_model(cluster.standin)
