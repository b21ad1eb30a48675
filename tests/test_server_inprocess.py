"""The MCP tools through the SDK's in-process Client, and the OpenAI-compatible provider
against a local stand-in of the chat completions endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mcp import Client

from convmem import Memory, Settings
from convmem.encryption import new_key
from convmem.providers import Provider, provider_for
from convmem.providers.echo import EchoProvider
from convmem.providers.openai_compat import OpenAICompatibleProvider
from convmem.server.mcp_app import build_mcp
from convmem.server.metrics import Metrics
from convmem.server.service import ConversationService
from convmem_bench.chat_standin import ChatCompletionsStandIn


@pytest.fixture
async def memory(tmp_path: Path) -> AsyncIterator[Memory]:
    async with Memory.from_url(f"sqlite:///{tmp_path}/s.db", max_turns=6) as m:
        yield m


@pytest.fixture
def standin() -> Iterator[ChatCompletionsStandIn]:
    server = ChatCompletionsStandIn().start()
    yield server
    server.stop()


def client_for(memory: Memory, provider: object = None) -> Client:
    service = ConversationService(memory, provider or EchoProvider())  # type: ignore[arg-type]
    return Client(build_mcp(service, metrics=Metrics(memory), transport="test"))


async def test_chat_starts_and_continues_a_thread(memory: Memory) -> None:
    async with client_for(memory) as client:
        first = await client.call_tool("chat", {"prompt": "hello"})
        assert not first.is_error
        result = first.structured_content
        assert result is not None
        assert result["thread_source"] == "new"
        assert result["remaining_turns"] == 4
        assert "given 0 earlier turns" in result["content"]
        assert "offline echo provider" in result["content"]

        again = await client.call_tool(
            "chat", {"prompt": "more", "continuation_id": result["continuation_id"]}
        )
        continued = again.structured_content
        assert continued is not None
        assert continued["continuation_id"] == result["continuation_id"]
        assert "given 2 earlier turns" in continued["content"]  # the history reached the model
        assert continued["thread_source"] == "l1"
        assert (continued["provider"], continued["model"]) == ("echo", "echo")


async def test_an_unknown_or_malformed_continuation_says_how_to_start_over(memory: Memory) -> None:
    async with client_for(memory) as client:
        unknown = await client.call_tool(
            "chat", {"prompt": "x", "continuation_id": "0f8c2a4e-6b1d-4c3a-9e2f-5a7b8c9d0e1f"}
        )
        assert unknown.is_error
        assert "unknown or has expired" in unknown.content[0].text  # type: ignore[union-attr]
        assert "without continuation_id" in unknown.content[0].text  # type: ignore[union-attr]
        malformed = await client.call_tool("chat", {"prompt": "x", "continuation_id": "42"})
        assert malformed.is_error
        assert "UUID" in malformed.content[0].text  # type: ignore[union-attr]
        wrong_type = await client.call_tool("chat", {"prompt": 42})
        assert wrong_type.is_error
        empty = await client.call_tool("chat", {"prompt": "  "})
        assert empty.is_error


async def test_a_full_thread_says_to_start_a_new_one(memory: Memory) -> None:
    async with client_for(memory) as client:
        result = (await client.call_tool("chat", {"prompt": "1"})).structured_content
        assert result is not None
        cid = result["continuation_id"]
        for prompt in ("2", "3"):
            assert not (
                await client.call_tool("chat", {"prompt": prompt, "continuation_id": cid})
            ).is_error
        full = await client.call_tool("chat", {"prompt": "4", "continuation_id": cid})
        assert full.is_error
        text = full.content[0].text  # type: ignore[union-attr]
        assert text == (  # the advice once
            f"Error executing tool chat: conversation {cid} is full (it holds at most"
            f" {memory.max_turns} turns): start a new conversation by calling chat without"
            " continuation_id"
        )


async def test_thread_tools_and_resource(memory: Memory) -> None:
    async with client_for(memory) as client:
        result = (
            await client.call_tool("chat", {"prompt": "hi", "files": ["a.py"]})
        ).structured_content
        assert result is not None
        cid = result["continuation_id"]
        got = (await client.call_tool("thread_get", {"continuation_id": cid})).structured_content
        assert got is not None
        assert [t["role"] for t in got["turns"]] == ["user", "assistant"]
        assert got["turns"][0]["files"] == ["a.py"]
        listed = (await client.call_tool("thread_list", {})).structured_content
        assert listed is not None
        assert [t["continuation_id"] for t in listed["threads"]] == [cid]
        exported = await client.call_tool(
            "thread_export", {"continuation_id": cid, "format": "json"}
        )
        assert f'"id": "{cid}"' in exported.content[0].text  # type: ignore[union-attr]
        listed_resources = await client.list_resources()
        assert f"thread://{cid}" in [str(r.uri) for r in listed_resources.resources]
        resource = await client.read_resource(f"thread://{cid}")
        assert f"# Thread {cid}" in resource.contents[0].text  # type: ignore[union-attr]
        stats = (await client.call_tool("memory_stats", {})).structured_content
        assert stats is not None
        assert stats["store_writes"] >= 1
        health = (await client.call_tool("health", {})).structured_content
        assert health == {
            "ok": True,
            "status": "ok",
            "store": "ok",
            "redis": "disabled",
            "detail": None,
        }
        deleted = (
            await client.call_tool("thread_delete", {"continuation_id": cid})
        ).structured_content
        assert deleted == {"deleted": True}
        gone = await client.call_tool("thread_get", {"continuation_id": cid})
        assert gone.is_error


async def test_the_openai_compatible_provider_sends_the_history(
    memory: Memory, standin: ChatCompletionsStandIn
) -> None:
    provider = OpenAICompatibleProvider(
        name="custom", api_key="sk-test", base_url=standin.base_url, default_model="m1"
    )
    async with client_for(memory, provider) as client:
        first = (
            await client.call_tool("chat", {"prompt": "alpha", "system_prompt": "be brief"})
        ).structured_content
        assert first is not None
        second = (
            await client.call_tool(
                "chat", {"prompt": "beta", "continuation_id": first["continuation_id"]}
            )
        ).structured_content
        assert second is not None
        assert second["content"] == "stand-in reply to: beta"
        assert (second["provider"], second["model"]) == ("custom", "m1")
    assert standin.requests[0]["authorization"] == "Bearer sk-test"
    assert standin.requests[0]["body"]["messages"][0] == {"role": "system", "content": "be brief"}
    # The earlier turns reach the model as native messages, each in its own role.
    assert standin.requests[1]["body"]["messages"] == [
        {"role": "user", "content": "alpha"},
        {"role": "assistant", "content": "stand-in reply to: alpha"},
        {"role": "user", "content": "beta"},
    ]
    await provider.aclose()


async def test_rewind_and_fork_change_the_history_the_model_receives(
    tmp_path: Path, standin: ChatCompletionsStandIn
) -> None:
    provider = OpenAICompatibleProvider(
        name="custom", api_key="sk-test", base_url=standin.base_url, default_model="m1"
    )

    def sent(request: int) -> list[str]:
        return [m["content"] for m in standin.requests[request]["body"]["messages"]]

    async with (
        Memory.from_url(f"sqlite:///{tmp_path}/s.db", max_turns=50) as memory,
        client_for(memory, provider) as client,
    ):
        first = (await client.call_tool("chat", {"prompt": "alpha"})).structured_content
        assert first is not None
        cid = first["continuation_id"]
        for prompt in ("beta", "gamma"):
            await client.call_tool("chat", {"prompt": prompt, "continuation_id": cid})
        rewound = await client.call_tool("thread_rewind", {"continuation_id": cid})
        assert rewound.structured_content == {
            "continuation_id": cid,
            "removed": 2,
            "turns": 4,
            "remaining_turns": 46,
        }
        await client.call_tool("chat", {"prompt": "gamma again", "continuation_id": cid})
        assert sent(3) == [
            "alpha",
            "stand-in reply to: alpha",
            "beta",
            "stand-in reply to: beta",
            "gamma again",
        ]
        fork = (
            await client.call_tool("thread_fork", {"continuation_id": cid, "at_seq": 2})
        ).structured_content
        assert fork is not None
        assert (fork["parent_id"], fork["parent_seq"]) == (cid, 2)
        await client.call_tool(
            "chat", {"prompt": "delta", "continuation_id": fork["continuation_id"]}
        )
        assert sent(4) == ["alpha", "stand-in reply to: alpha", "delta"]
        got = (await client.call_tool("thread_get", {"continuation_id": cid})).structured_content
        assert got is not None
        assert [t["seq"] for t in got["turns"]] == [1, 2, 3, 4, 8, 9]  # seqs are never reused
        bad_cut = await client.call_tool("thread_fork", {"continuation_id": cid, "at_seq": 6})
        assert bad_cut.is_error
        assert "has no turn 6" in bad_cut.content[0].text  # type: ignore[union-attr]
        too_few = await client.call_tool("thread_rewind", {"continuation_id": cid, "turns": 0})
        assert too_few.is_error
    await provider.aclose()


def provider_from_env(env: dict[str, str]) -> Provider:
    return provider_for(Settings.load_from(env).provider)


def test_the_provider_is_chosen_by_which_key_is_set() -> None:
    assert provider_from_env({}).name == "echo"
    glm = provider_from_env({"GLM_API_KEY": "k"})
    assert (glm.name, glm.default_model) == ("glm", "glm-4.6")
    assert provider_from_env({"MOONSHOT_API_KEY": "k"}).name == "kimi"
    assert provider_from_env({"OPENAI_API_KEY": "k", "CONVMEM_PROVIDER": "openai"}).name == "openai"
    assert provider_from_env({"OPENAI_API_KEY": "k", "CONVMEM_PROVIDER": "echo"}).name == "echo"
    from convmem import ConfigurationError

    with pytest.raises(ConfigurationError, match="KIMI_API_KEY"):
        provider_from_env({"CONVMEM_PROVIDER": "kimi"})
    with pytest.raises(ConfigurationError, match="CONVMEM_MODEL_TIMEOUT_SECONDS='soon'"):
        provider_from_env({"OPENAI_API_KEY": "k", "CONVMEM_MODEL_TIMEOUT_SECONDS": "soon"})


async def test_thread_update_renames_a_sealed_conversation(tmp_path: Path) -> None:
    async with (
        Memory.from_url(f"sqlite:///{tmp_path}/s.db", encryption_keys=[new_key()]) as memory,
        client_for(memory) as client,
    ):
        first = (await client.call_tool("chat", {"prompt": "alpha"})).structured_content
        assert first is not None
        cid = first["continuation_id"]
        updated = await client.call_tool(
            "thread_update", {"continuation_id": cid, "title": "Alpha talk"}
        )
        assert updated.structured_content == {
            "continuation_id": cid,
            "metadata": {"title": "Alpha talk"},
            "version": 3,
        }
        got = (await client.call_tool("thread_get", {"continuation_id": cid})).structured_content
        assert got is not None
        assert got["metadata"] == {"title": "Alpha talk"}
        stored = await memory.store.load(cid, owner=None)
        assert stored is not None
        assert "Alpha" not in str(dict(stored.metadata))  # sealed at rest
        neither = await client.call_tool("thread_update", {"continuation_id": cid})
        assert neither.is_error
        assert "needs metadata=, title= or both" in str(neither.content)
