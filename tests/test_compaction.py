"""Compaction: old turns folded into a summary off the request's path, so a conversation
never runs out (issue 14).

The planner and the offline summariser on their own; ``Memory.compact`` through every
tier (the summary in L1 and in L2 in place, seen by another instance from L2); the
``chat`` tool with compaction on, its model (and the summaries' model) the local
chat-completions stand-in, over 300 exchanges; races between instances, a provider
failure and a stop in the middle.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from mcp import Client

from convmem import Memory, StaleSummaryError
from convmem.compaction import ExtractiveSummariser, ModelSummariser, plan_compaction
from convmem.compaction_policy import CompactionPolicy
from convmem.compactor import Compactor
from convmem.errors import InvalidInputError, ProviderError
from convmem.messages import SUMMARY_HEADING, ChatMessage, message_cost
from convmem.models import Turn
from convmem.providers.base import Completion
from convmem.providers.echo import EchoProvider
from convmem.providers.openai_compat import OpenAICompatibleProvider
from convmem.server.mcp_app import build_mcp
from convmem.server.metrics import Metrics
from convmem.server.service import ConversationService
from convmem.settings import Settings
from convmem.summaries import unsummarised
from convmem_bench.chat_standin import ChatCompletionsStandIn
from tests.conftest import Backend, MemoryFactory
from tests.support.flows import until
from tests.test_tiered_cache import memories, redis_url

__all__ = ["memories", "redis_url"]  # the cache suite's fixtures: one Redis and a Cluster,
# encryption off and on, for every test through the tiers

BUDGET = 600  # history tokens: small, so a few exchanges pass it
POLICY = CompactionPolicy(trigger_share=0.75, keep_share=0.3, summary_share=0.15)


def exchange(i: int, words: int = 30) -> list[Turn]:
    text = " ".join(f"w{i}" for _ in range(words))
    return [
        Turn(role="user", content=f"Question {i}. {text}"),
        Turn(role="assistant", content=f"Answer {i}. {text}"),
    ]


def tool_exchange(i: int) -> list[Turn]:
    call = {"id": f"call_{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    return [
        Turn(role="user", content=f"Use the tool {i}. " + "x " * 60),
        Turn(role="assistant", content="", metadata={"tool_calls": [call]}),
        Turn(
            role="tool", content=f"result {i} " + "y " * 60, metadata={"tool_call_id": f"call_{i}"}
        ),
        Turn(role="assistant", content=f"Done {i}."),
    ]


@pytest.fixture
def standin() -> Iterator[ChatCompletionsStandIn]:
    server = ChatCompletionsStandIn().start()
    yield server
    server.stop()


def standin_provider(standin: ChatCompletionsStandIn) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        name="standin",
        api_key="sk-test",
        base_url=standin.base_url,
        default_model="standin-model",
        max_retries=0,
    )


@pytest.fixture
async def memory(tmp_path: Path) -> AsyncIterator[Memory]:
    async with Memory.from_url(f"sqlite:///{tmp_path}/c.db", compaction=True) as m:
        yield m


# -- the planner and the offline summariser -------------------------------------------


async def test_under_the_threshold_nothing_is_planned(memory: Memory) -> None:
    thread = await memory.create_thread(turns=exchange(1))
    assert plan_compaction(thread, max_tokens=BUDGET, policy=POLICY) is None


async def test_a_plan_folds_old_blocks_and_keeps_the_newest_whole(memory: Memory) -> None:
    turns = [t for i in range(6) for t in tool_exchange(i)]
    thread = await memory.create_thread(turns=turns)
    plan = plan_compaction(thread, max_tokens=BUDGET, policy=POLICY)
    assert plan is not None
    assert plan.base_version == thread.version
    folded = [t for t in thread.turns if t.seq <= plan.covers_to_seq]
    kept = [t for t in thread.turns if t.seq > plan.covers_to_seq]
    assert len(folded) == plan.folded_turns
    # Never between a tool call and its result: each side holds whole pairs.
    for side in (folded, kept):
        calls = {c["id"] for t in side for c in t.metadata.get("tool_calls", ())}
        results = {t.metadata["tool_call_id"] for t in side if t.role == "tool"}
        assert calls == results
    assert kept[0].role != "tool"
    kept_cost = sum(message_cost({"role": t.role, "content": t.content}) for t in kept)
    assert kept_cost <= POLICY.keep_share * BUDGET + 200  # about the share, whole blocks
    assert [m["role"] for m in plan.messages][:4] == ["user", "assistant", "tool", "assistant"]
    assert plan.messages[1].get("tool_calls")
    assert plan.messages[2].get("tool_call_id") == "call_0"


def test_a_policy_that_would_compact_every_request_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="every request compacts"):
        CompactionPolicy(trigger_share=0.5, keep_share=0.4, summary_share=0.2)
    with pytest.raises(InvalidInputError):
        CompactionPolicy(trigger_share=1.5)
    settings_error = pytest.raises(Exception, match="compaction shares")
    with settings_error:
        Settings.of(compaction=True, compaction_keep_share=0.7)


async def test_the_extractive_summary_is_deterministic_and_bounded() -> None:
    summariser = ExtractiveSummariser()
    messages: list[ChatMessage] = [
        {"role": "system", "content": f"{SUMMARY_HEADING}\n- user: An earlier point."},
        {"role": "user", "content": "First sentence here. Second one is dropped."},
        {"role": "assistant", "content": "Réponse — claire! Then more."},
    ]
    first = await summariser.summarise(messages, max_tokens=100)
    again = await summariser.summarise(messages, max_tokens=100)
    assert first == again
    assert first.text.splitlines() == [
        "- user: An earlier point.",
        "- user: First sentence here.",
        "- assistant: Réponse — claire!",
    ]
    assert (first.provider, first.model) == ("convmem", "extractive")
    long = [{"role": "user", "content": f"Point {i}." + " z" * 50} for i in range(200)]
    tight = await summariser.summarise(long, max_tokens=50)  # type: ignore[arg-type]
    assert len(tight.text) <= 50 * 4
    assert tight.text.endswith("Point 199.")  # the newest points are kept


def test_the_turn_limit_depends_on_the_mode() -> None:
    assert Settings.of().turn_limit == 50
    assert Settings.of(compaction=True).turn_limit == 2000
    assert Settings.of(compaction=True, max_turns=300).turn_limit == 300


async def test_an_empty_summary_is_a_failure_and_saves_nothing(memory: Memory) -> None:
    class Silent(ExtractiveSummariser):
        async def summarise(
            self, messages: Sequence[ChatMessage], *, max_tokens: int
        ) -> Completion:
            return Completion(" \n", "standin", "mute")

    thread = await memory.create_thread(turns=[t for i in range(8) for t in exchange(i)])
    with pytest.raises(ProviderError, match="empty summary"):
        await memory.compact(thread.id, summariser=Silent(), max_tokens=BUDGET, policy=POLICY)
    assert memory.stats.compaction_failures == 1
    assert await memory.get_thread(thread.id) == thread


async def test_after_compaction_every_tool_result_still_follows_its_call(memory: Memory) -> None:
    thread = await memory.create_thread(turns=[t for i in range(10) for t in tool_exchange(i)])
    for i in range(10, 30):
        thread = await memory.add_turns(thread.id, tool_exchange(i))
        thread = (
            await memory.compact(
                thread.id, summariser=ExtractiveSummariser(), max_tokens=BUDGET, policy=POLICY
            )
            or thread
        )
        messages = memory.history_messages(thread, max_tokens=BUDGET)
        called: set[str] = set()
        for message in messages:
            called |= {call["id"] for call in message.get("tool_calls", ())}
            if message["role"] == "tool":
                assert message["tool_call_id"] in called  # a result never without its call
        answered = {m["tool_call_id"] for m in messages if m["role"] == "tool"}
        assert called == answered  # a call never without its result
        assert sum(message_cost(m) for m in messages) <= BUDGET
    assert memory.stats.compactions >= 3


async def test_a_fork_sees_its_parents_summary_only_when_it_is_within_the_cut(
    memory: Memory,
) -> None:
    parent = await memory.create_thread(turns=[t for i in range(8) for t in exchange(i)])
    compacted = await memory.compact(
        parent.id, summariser=ExtractiveSummariser(), max_tokens=BUDGET, policy=POLICY
    )
    assert compacted is not None
    assert compacted.summary is not None
    covered = compacted.summary.seq
    after = await memory.fork_thread(parent.id)  # at the newest turn: the summary applies
    before = await memory.fork_thread(parent.id, at_seq=covered - 1)  # inside it: it does not
    for fork, summarised in ((after, True), (before, False)):
        fork = await memory.add_turns(fork.id, exchange(100))
        ancestors = await memory.get_ancestors(fork)
        messages = memory.history_messages(fork, max_tokens=BUDGET, ancestors=ancestors)
        assert messages[0]["content"].startswith(SUMMARY_HEADING) is summarised
        assert messages[-1]["content"] == exchange(100)[1].content
        assert sum(message_cost(m) for m in messages) <= BUDGET
    shown = memory.history_messages(
        after, max_tokens=BUDGET, ancestors=await memory.get_ancestors(after)
    )
    assert [m["content"] for m in shown[1:]] == [
        t.content for t in compacted.turns if t.seq > covered
    ]


async def test_the_text_history_shows_the_summary_in_place_of_the_turns_it_covers(
    memory: Memory,
) -> None:
    thread = await memory.create_thread(
        turns=[t for i in range(8) for t in exchange(i)], tool_name="chat"
    )
    compacted = await memory.compact(
        thread.id, summariser=ExtractiveSummariser(), max_tokens=BUDGET, policy=POLICY
    )
    assert compacted is not None
    assert compacted.summary is not None
    text = memory.build_history(compacted, max_tokens=4000)
    covered = [t for t in compacted.turns if t.seq <= compacted.summary.seq]
    assert f"--- Summary of turns 1 to {len(covered)} (compacted) ---" in text
    assert compacted.summary.content in text
    assert "Question 0." not in text.split(compacted.summary.content)[1]  # covered: not shown
    first_shown = len(covered) + 1
    assert f"--- Turn {first_shown} (" in text  # numbering goes on from the conversation's start
    assert f"--- Turn {first_shown - 1} (" not in text


# -- Memory.compact through the tiers ----------------------------------------------------


async def test_compact_saves_a_summary_that_replaces_the_folded_turns_in_the_history(
    memories: MemoryFactory,
) -> None:
    writer = await memories()
    reader = await memories()
    thread = await writer.create_thread(turns=[t for i in range(8) for t in exchange(i)])
    await reader.get_thread(thread.id)  # the other instance holds the old version
    compacted = await writer.compact(
        thread.id, summariser=ExtractiveSummariser(), max_tokens=BUDGET, policy=POLICY
    )
    assert compacted is not None
    assert compacted.version == thread.version + 1
    assert compacted.turns == thread.turns  # every turn stays
    summary = compacted.summary
    assert summary is not None
    assert summary.role == "system"
    assert "Question 0." in summary.content
    messages = writer.history_messages(compacted, max_tokens=BUDGET)
    assert messages[0]["content"].startswith(SUMMARY_HEADING)
    stored = await writer.store.load(thread.id, owner=None)
    assert stored is not None
    assert stored.summary is not None
    # sealed in the store when encryption is on, like the turns
    assert (stored.summary.content == summary.content) is (not writer.sealing.encrypts)
    assert [m["content"] for m in messages[1:]] == [
        t.content for t in compacted.turns if t.seq > summary.seq
    ]
    assert sum(message_cost(m) for m in messages) <= BUDGET
    # The writer's L1 took it in place; the other instance gets it from L2.
    before = writer.stats
    assert await writer.get_thread(thread.id) == compacted
    assert writer.stats.store_reads == before.store_reads
    await reader.evict(thread.id, local_only=True)
    reads = reader.stats.store_reads
    seen, source = await reader.lookup_thread(thread.id)
    assert (seen, source) == (compacted, "l2")
    assert reader.stats.store_reads == reads
    # Appends go on after it; the summary stays.
    heard = reader.stats.invalidations_received
    more = await writer.add_turns(thread.id, exchange(99))
    assert more.summary == summary
    await until(lambda: reader.stats.invalidations_received > heard, "the append's invalidation")
    assert await reader.get_thread(thread.id) == more


async def test_a_compacted_thread_loads_whole_in_a_new_instance_and_a_pop_into_it_drops_it(
    memories: MemoryFactory,
) -> None:
    writer = await memories()
    thread = await writer.create_thread(turns=[t for i in range(8) for t in exchange(i)])
    compacted = await writer.compact(
        thread.id, summariser=ExtractiveSummariser(), max_tokens=BUDGET, policy=POLICY
    )
    assert compacted is not None
    assert compacted.summary is not None
    fresh = await memories()
    await fresh.evict(thread.id)  # L2 too: a cold load from the store
    loaded = await fresh.get_thread(thread.id)
    assert loaded == compacted
    newest_covered = compacted.summary.seq
    count = sum(1 for t in compacted.turns if t.seq >= newest_covered)
    heard = fresh.stats.invalidations_received
    rewound, _ = await writer.rewind_thread(thread.id, count)
    assert rewound.summary is None
    await until(lambda: fresh.stats.invalidations_received > heard, "the pop's invalidation")
    assert await fresh.get_thread(thread.id) == rewound


async def test_two_instances_compacting_at_once_call_the_model_once(
    memories: MemoryFactory,
) -> None:
    first, second = await memories(), await memories()
    thread = await first.create_thread(turns=[t for i in range(8) for t in exchange(i)])
    await second.get_thread(thread.id)
    entered, release = asyncio.Event(), asyncio.Event()
    calls: list[int] = []

    class Held(ExtractiveSummariser):
        async def summarise(
            self, messages: Sequence[ChatMessage], *, max_tokens: int
        ) -> Completion:
            calls.append(1)
            entered.set()
            await release.wait()
            return await super().summarise(messages, max_tokens=max_tokens)

    holder = asyncio.create_task(
        first.compact(thread.id, summariser=Held(), max_tokens=BUDGET, policy=POLICY)
    )
    await entered.wait()  # the first instance is calling its model now
    other = await second.compact(thread.id, summariser=Held(), max_tokens=BUDGET, policy=POLICY)
    assert other is None  # claimed by the first: no second model call
    release.set()
    saved = await holder
    assert saved is not None
    assert calls == [1]
    assert (first.stats.compactions, second.stats.compactions) == (1, 0)
    # The claim is released: the next compaction of the thread may run anywhere.
    await second.add_turns(thread.id, [t for i in range(8, 14) for t in exchange(i)])
    again = await second.compact(
        thread.id, summariser=ExtractiveSummariser(), max_tokens=BUDGET, policy=POLICY
    )
    assert again is not None
    assert again.summarised_through > saved.summarised_through


async def test_without_redis_the_store_keeps_one_of_two_racing_summaries(
    cache_backend: Backend,
) -> None:
    first, second = Memory(cache_backend.store), Memory(cache_backend.store)
    thread = await first.create_thread(turns=[t for i in range(8) for t in exchange(i)])
    await second.get_thread(thread.id)
    both_started = asyncio.Barrier(2)

    class Gated(ExtractiveSummariser):
        async def summarise(
            self, messages: Sequence[ChatMessage], *, max_tokens: int
        ) -> Completion:
            await both_started.wait()  # both made their summary from the same version
            return await super().summarise(messages, max_tokens=max_tokens)

    outcomes = await asyncio.gather(
        first.compact(thread.id, summariser=Gated(), max_tokens=BUDGET, policy=POLICY),
        second.compact(thread.id, summariser=Gated(), max_tokens=BUDGET, policy=POLICY),
        return_exceptions=True,
    )
    saved = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(saved) == 1, outcomes
    assert sum(isinstance(o, StaleSummaryError) for o in outcomes) == 1
    assert first.stats.compactions + second.stats.compactions == 1
    assert first.stats.compactions_stale + second.stats.compactions_stale == 1
    stored = await cache_backend.store.load(thread.id, owner=None)
    assert stored is not None
    assert stored.summary == saved[0].summary  # type: ignore[union-attr]


async def test_two_instances_continuing_one_thread_at_once_keep_it_consistent(
    memories: MemoryFactory,
) -> None:
    """Two servers take requests on one thread concurrently, each compacting after its
    replies: every turn is kept, and every version not taken by a turn is one summary."""
    services = []
    for _ in range(2):
        memory = await memories(max_turns=2000)
        services.append(
            ConversationService(
                memory,
                EchoProvider(),
                history_tokens=BUDGET,
                compactor=Compactor(
                    memory, ExtractiveSummariser(), max_tokens=BUDGET, policy=POLICY
                ),
            )
        )
    first = await services[0].chat(None, "Start. " + "s " * 80)
    thread_id = first.continuation_id
    for round_ in range(12):
        await asyncio.gather(
            *(
                service.chat(None, f"Round {round_} from {n}. " + "r " * 80, thread_id)
                for n, service in enumerate(services)
            )
        )
    for service in services:
        assert service.compactor is not None
        await service.compactor.drain()
    thread = await services[0].memory.get_thread(thread_id)
    assert thread is not None
    assert len(thread.turns) == 2 + 2 * 2 * 12
    stats = [service.memory.stats for service in services]
    saved = sum(s.compactions for s in stats)
    assert saved >= 1
    assert thread.version - len(thread.turns) == saved  # no pops: the rest are summaries
    assert sum(s.compaction_failures for s in stats) == 0
    for service in services:
        await service.aclose()


async def test_a_provider_failure_loses_nothing_and_the_next_request_retries(
    tmp_path: Path, standin: ChatCompletionsStandIn
) -> None:
    provider = standin_provider(standin)
    async with Memory.from_url(f"sqlite:///{tmp_path}/f.db", compaction=True) as memory:
        service = ConversationService(
            memory,
            provider,
            history_tokens=BUDGET,
            compactor=Compactor(
                memory, ModelSummariser(provider), max_tokens=BUDGET, policy=POLICY
            ),
        )
        continuation = None
        chats = 0
        while memory.stats.compaction_failures == 0:
            assert chats < 20, "compaction never started"
            standin.fail_next = 0
            reply = await service.chat(None, "Tell me more. " + "q " * 80, continuation)
            continuation, chats = reply.continuation_id, chats + 1
            standin.fail_next = 1  # the compaction's model call, if one starts now
            assert service.compactor is not None
            await service.compactor.drain()
        assert continuation is not None
        thread = await memory.get_thread(continuation)
        assert thread is not None
        assert thread.summary is None  # nothing was saved, nothing was lost
        assert len(thread.turns) == 2 * chats
        turns_before = len(thread.turns)
        standin.fail_next = 0
        reply = await service.chat(None, "Go on.", continuation)
        assert service.compactor is not None
        await service.compactor.drain()
        after = await memory.get_thread(continuation)
        assert after is not None
        assert len(after.turns) == turns_before + 2
        assert after.summary is not None
        assert after.summary.content.startswith("stand-in summary of")
        assert memory.stats.compactions == 1
        await service.aclose()
        await provider.aclose()


async def test_a_stop_in_the_middle_leaves_the_thread_as_it_was(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/r.db"
    entered = asyncio.Event()

    class Hanging(ExtractiveSummariser):
        async def summarise(
            self, messages: Sequence[ChatMessage], *, max_tokens: int
        ) -> Completion:
            entered.set()
            await asyncio.Event().wait()  # a model that never answers
            raise AssertionError

    async with Memory.from_url(url, compaction=True) as memory:
        thread = await memory.create_thread(turns=[t for i in range(8) for t in exchange(i)])
        compactor = Compactor(memory, Hanging(), max_tokens=BUDGET, policy=POLICY)
        assert compactor.schedule(thread, (), None)
        assert not compactor.schedule(thread, (), None)  # one at a time per thread
        await entered.wait()
        await compactor.aclose()  # the process stops mid-compaction
    async with Memory.from_url(url, compaction=True) as restarted:
        again = await restarted.get_thread(thread.id)
        assert again == thread  # same version, no summary, every turn
        compactor = Compactor(restarted, ExtractiveSummariser(), max_tokens=BUDGET, policy=POLICY)
        assert compactor.schedule(again, (), None)
        await compactor.drain()
        done = await restarted.get_thread(thread.id)
        assert done is not None
        assert done.summary is not None


# -- the chat tool over 300 exchanges ----------------------------------------------------


def _history_of(request: dict[str, Any]) -> list[ChatMessage]:
    """The conversation a request carried: without the new prompt (there is no system
    prompt)."""
    return cast("list[ChatMessage]", request["body"]["messages"][:-1])


async def test_300_exchanges_through_chat_never_run_out_and_stay_in_the_budget(
    tmp_path: Path, standin: ChatCompletionsStandIn
) -> None:
    provider = standin_provider(standin)
    settings = Settings.of(
        store_url=f"sqlite:///{tmp_path}/long.db", compaction=True, history_tokens=BUDGET * 2
    )
    async with Memory.from_settings(settings) as memory:
        service = ConversationService.from_settings(memory, provider, settings)
        assert service.compactor is not None
        continuation = None
        sent = None  # the thread as the last request found it
        for i in range(300):
            sent = None if continuation is None else await memory.get_thread(continuation)
            before = len(standin.requests)
            reply = await service.chat(None, f"Exchange {i}: " + "p " * 40, continuation)
            continuation = reply.continuation_id
            history = _history_of(standin.requests[before])
            assert sum(message_cost(m) for m in history) <= BUDGET * 2
            assert {m["role"] for m in history} <= {"system", "user", "assistant"}
            # chat says how much of the history the model saw only as a summary
            assert reply.history_turns == (0 if sent is None else len(sent.turns))
            summarised = 0 if sent is None else unsummarised(sent).summarised
            assert reply.summarised_turns == summarised
            await service.compactor.drain()
        assert continuation is not None
        assert sent is not None
        thread = await memory.get_thread(continuation)
        assert thread is not None
        assert len(thread.turns) == 600  # every turn stays in the store
        assert thread.summary is not None
        assert memory.stats.compactions >= 5
        assert memory.stats.compaction_failures == 0
        # The last request carried the summary, then every turn after it, verbatim.
        assert sent.summary is not None
        assert history[0]["content"] == f"{SUMMARY_HEADING}\n{sent.summary.content}"
        assert sent.summary.content.startswith("stand-in summary of")
        recent = [t.content for t in sent.turns if t.seq > sent.summary.seq]
        assert [m["content"] for m in history[1:]] == recent
        assert 0.5 < reply.summarised_share < 1
        assert reply.remaining_turns == 2000 - 600
        await service.aclose()
    await provider.aclose()


# -- what MCP clients see ----------------------------------------------------------------


async def test_mcp_reports_summaries_and_a_warm_continued_chat_costs_one_store_write(
    tmp_path: Path,
) -> None:
    settings = Settings.of(
        store_url=f"sqlite:///{tmp_path}/m.db", compaction=True, history_tokens=BUDGET
    )
    async with Memory.from_settings(settings) as memory:
        service = ConversationService.from_settings(memory, EchoProvider(), settings)
        assert service.compactor is not None
        mcp = Client(build_mcp(service, metrics=Metrics(memory), transport="test"))
        async with mcp as client:
            continuation: str | None = None
            while memory.stats.compactions == 0:
                assert memory.stats.store_writes < 40, "never compacted"
                arguments = {"prompt": "Tell me about sorting. " + "s " * 60}
                if continuation is not None:
                    arguments["continuation_id"] = continuation
                result = (await client.call_tool("chat", arguments)).structured_content
                assert result is not None
                continuation = result["continuation_id"]
                await service.compactor.drain()
            assert continuation is not None
            # A warm continued request: no store read, one write on its path (a compaction
            # it triggers writes afterwards, counted apart).
            before = memory.stats
            result = (
                await client.call_tool(
                    "chat", {"prompt": "And then?", "continuation_id": continuation}
                )
            ).structured_content
            await service.compactor.drain()
            after = memory.stats
            assert result is not None
            assert result["thread_source"] == "l1"
            assert after.store_reads == before.store_reads
            assert (after.store_writes - before.store_writes) - (
                after.compactions - before.compactions
            ) == 1
            assert result["summarised_turns"] > 0
            assert result["summarised_share"] == round(
                result["summarised_turns"] / result["history_turns"], 4
            )
            # thread_get and thread_export show the summary apart from the turns.
            got = (
                await client.call_tool("thread_get", {"continuation_id": continuation})
            ).structured_content
            assert got is not None
            thread = await memory.get_thread(continuation)
            assert thread is not None
            assert thread.summary is not None
            assert got["summary"]["covers_to_seq"] == thread.summary.seq
            assert got["summary"]["content"] == thread.summary.content
            assert got["summary"]["model_name"] == "extractive"
            assert len(got["turns"]) == len(thread.turns)  # every turn is still there
            exported = await client.call_tool(
                "thread_export", {"continuation_id": continuation, "format": "markdown"}
            )
            text = exported.content[0].text  # type: ignore[union-attr]
            assert f"## Summary of turns 1–{thread.summary.seq} (compaction" in text
            assert text.count("\n## ") == len(thread.turns) + 1
        await service.aclose()
