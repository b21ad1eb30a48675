"""``ConvmemSession`` under the OpenAI Agents SDK (installed from PyPI): a real ``Agent``
run by a real ``Runner``, its model the project's chat-completions stand-in (a hosted
model cannot run here) through the SDK's ``OpenAIChatCompletionsModel``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    Runner,
    SessionSettings,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from convmem import Memory
from convmem.integrations.openai_agents import ConvmemSession, session_thread_id
from convmem_bench.chat_standin import ChatCompletionsStandIn
from tests.support.services import pg_url
from tests.support.sides import run_two_sides
from tests.support.workers import share_agents_session


@pytest.fixture(autouse=True)
def no_tracing() -> Iterator[None]:
    set_tracing_disabled(True)  # the SDK would export traces to OpenAI's servers
    yield
    set_tracing_disabled(False)


@pytest.fixture
def standin() -> Iterator[ChatCompletionsStandIn]:
    server = ChatCompletionsStandIn().start()
    yield server
    server.stop()


@pytest.fixture
async def memory(clean_pg: str, redis_url: str, redis_prefix: str) -> AsyncIterator[Memory]:
    async with Memory.from_url(
        pg_url(clean_pg), redis_url, cache_prefix=redis_prefix, max_turns=1000
    ) as opened:
        yield opened


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@pytest.fixture
async def agent(standin: ChatCompletionsStandIn) -> AsyncIterator[Agent[Any]]:
    """An agent whose model is the stand-in, through the SDK's chat completions model."""
    client = AsyncOpenAI(base_url=standin.base_url, api_key="sk-test")
    yield Agent(
        name="assistant",
        instructions="be brief",
        model=OpenAIChatCompletionsModel(model="m1", openai_client=client),
        tools=[get_weather],
    )
    await client.close()


def texts(items: Sequence[Any]) -> list[Any]:
    """The content of each item."""
    return [item["content"] for item in items]


def sent(standin: ChatCompletionsStandIn, request: int = -1) -> list[tuple[str, Any]]:
    """The (role, content) of each message the model received in a request."""
    return [(m["role"], m.get("content")) for m in standin.requests[request]["body"]["messages"]]


async def test_a_runner_continues_the_conversation_kept_in_convmem(
    memory: Memory,
    standin: ChatCompletionsStandIn,
    agent: Agent[Any],
    clean_pg: str,
    redis_url: str,
    redis_prefix: str,
) -> None:
    session = ConvmemSession("user-42", memory)
    first = await Runner.run(agent, "What city is the Golden Gate Bridge in?", session=session)
    assert first.final_output == "stand-in reply to: What city is the Golden Gate Bridge in?"
    streamed = Runner.run_streamed(agent, "And its state?", session=session)
    async for _ in streamed.stream_events():
        pass
    assert streamed.final_output == "stand-in reply to: And its state?"
    await Runner.run(agent, "Thanks", session=session)
    assert sent(standin) == [
        ("system", "be brief"),
        ("user", "What city is the Golden Gate Bridge in?"),
        ("assistant", "stand-in reply to: What city is the Golden Gate Bridge in?"),
        ("user", "And its state?"),
        ("assistant", "stand-in reply to: And its state?"),
        ("user", "Thanks"),
    ]
    thread = await session.thread()
    assert thread is not None
    assert thread.id == session_thread_id("user-42", None)
    assert [(t.role, t.content) for t in thread.turns][:2] == [
        ("user", "What city is the Golden Gate Bridge in?"),
        ("assistant", "stand-in reply to: What city is the Golden Gate Bridge in?"),
    ]
    # Another instance (a new Memory: its own L1) finds the same session by its name.
    async with Memory.from_url(
        pg_url(clean_pg), redis_url, cache_prefix=redis_prefix, max_turns=1000
    ) as other:
        assert await ConvmemSession("user-42", other).get_items() == await session.get_items()


async def test_tool_calls_and_their_results_round_trip_exactly(
    memory: Memory, standin: ChatCompletionsStandIn, agent: Agent[Any]
) -> None:
    session = ConvmemSession("tools", memory)
    result = await Runner.run(agent, '[tool:get_weather {"city": "Paris"}]', session=session)
    assert result.final_output == "stand-in reply to the tool result: sunny in Paris"
    items = await session.get_items()
    assert items == result.to_input_list()  # the same dicts back, in the same order
    assert [i.get("type", "message") for i in items] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    thread = await session.thread()
    assert thread is not None
    assert [(t.role, t.tool_name, t.content) for t in thread.turns[1:3]] == [
        ("assistant", "get_weather", 'get_weather({"city": "Paris"})'),
        ("tool", None, "sunny in Paris"),
    ]
    await Runner.run(agent, "and tomorrow?", session=session)
    history = standin.requests[-1]["body"]["messages"]
    assert [m["role"] for m in history] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert history[2]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert history[3]["content"] == "sunny in Paris"


async def test_pop_then_rerun_and_clear(
    memory: Memory, standin: ChatCompletionsStandIn, agent: Agent[Any]
) -> None:
    session = ConvmemSession("rewind", memory)
    await Runner.run(agent, "one", session=session)
    await Runner.run(agent, "two", session=session)
    popped = await session.pop_item()
    assert popped is not None
    assert dict(popped)["role"] == "assistant"
    user_turn = await session.pop_item()
    assert user_turn == {"role": "user", "content": "two"}
    await Runner.run(agent, "two, again", session=session)
    assert sent(standin)[1:] == [
        ("user", "one"),
        ("assistant", "stand-in reply to: one"),
        ("user", "two, again"),
    ]
    await session.clear_session()
    assert await session.get_items() == []
    await Runner.run(agent, "fresh", session=session)
    assert sent(standin)[1:] == [("user", "fresh")]
    empty = ConvmemSession("never-used", memory)
    assert await empty.pop_item() is None
    await empty.clear_session()
    assert await empty.get_items() == []


async def test_limits_return_the_newest_items_oldest_first(memory: Memory) -> None:
    session = ConvmemSession("limits", memory, session_settings=SessionSettings(limit=2))
    await session.add_items([{"role": "user", "content": f"m{i}"} for i in range(5)])
    assert texts(await session.get_items()) == ["m3", "m4"]
    assert texts(await session.get_items(limit=1)) == ["m4"]
    assert len(await ConvmemSession("limits", memory).get_items()) == 5
    assert await session.get_items(limit=0) == []


async def test_every_kind_of_item_comes_back_exactly(memory: Memory) -> None:
    items: list[Any] = [
        {"role": "developer", "content": "Ünïcødé, emoji 🚀, quotes ' \" and '; DROP TABLE x; --"},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {
                    "type": "input_image",
                    "image_url": "data:image/png;base64,AAAA",
                    "detail": "auto",
                },
            ],
        },
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "thinking"}],
        },
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "f",
            "arguments": '{"x": [1, 2.5, null]}',
            "id": "fc_1",
            "status": "completed",
        },
        {"type": "function_call_output", "call_id": "c1", "output": ""},
        {
            "type": "message",
            "role": "assistant",
            "id": "msg_1",
            "status": "completed",
            "content": [{"type": "output_text", "text": "done", "annotations": []}],
        },
        {"role": "assistant", "content": "%s %(x)s \\x00-free \\\\ backslashes"},
    ]
    session = ConvmemSession("kinds", memory, owner="alice")
    await session.add_items(items)
    assert await session.get_items() == items
    returned: list[Any] = await session.get_items()
    returned[1]["content"][0]["text"] = "changed by the caller"
    assert await session.get_items() == items  # a caller's edits never reach the cache
    assert await ConvmemSession("kinds", memory, owner="bob").get_items() == []
    thread = await session.thread()
    assert thread is not None
    assert [t.role for t in thread.turns] == [
        "system",
        "user",
        "assistant",
        "assistant",
        "tool",
        "assistant",
        "assistant",
    ]
    assert thread.turns[1].content == "look"


async def test_round_trips_per_call(memory: Memory) -> None:
    session = ConvmemSession("budget", memory)
    await session.add_items([{"role": "user", "content": "hi"}])  # creates the thread
    before = memory.stats
    await session.get_items()
    await session.add_items(
        [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]
    )
    await session.get_items()
    after_add = memory.stats
    assert (
        after_add.store_reads - before.store_reads,
        after_add.store_writes - before.store_writes,
    ) == (0, 1)
    await session.pop_item()
    await session.clear_session()
    await session.get_items()
    end = memory.stats
    assert (end.store_reads - after_add.store_reads, end.store_writes - after_add.store_writes) == (
        0,
        2,
    )


async def test_many_tasks_adding_at_once_keep_every_item_once(memory: Memory) -> None:
    session = ConvmemSession("crowd", memory)
    await asyncio.gather(
        *(
            session.add_items([{"role": "user", "content": f"{n}.{i}"} for i in range(3)])
            for n in range(20)
        )
    )
    kept = texts(await session.get_items())
    assert sorted(kept) == sorted(f"{n}.{i}" for n in range(20) for i in range(3))
    for n in range(20):  # each call's items stay together, in order
        start = kept.index(f"{n}.0")
        assert kept[start : start + 3] == [f"{n}.0", f"{n}.1", f"{n}.2"]


async def test_two_processes_share_one_session_through_redis(
    clean_pg: str, redis_url: str, redis_prefix: str
) -> None:
    exits = await run_two_sides(
        share_agents_session, pg_url(clean_pg), redis_url, redis_prefix, "shared", 30
    )
    assert exits == [0, 0]
    async with Memory.from_url(pg_url(clean_pg), max_turns=1000) as memory:
        items = await ConvmemSession("shared", memory).get_items()
    assert texts(items) == [f"step {s}" for s in range(30)]
