"""What users would pick instead, serving the same request on the same PostgreSQL and Redis.

- LangGraph's Postgres checkpointer (``AsyncPostgresSaver`` on a pool, as its docs set
  it up), the conversation kept as a ``messages`` channel;
- langchain-postgres' ``PostgresChatMessageHistory`` (async);
- cashews, a cache in front of Redis, wrapped around the same store reads and
  invalidated after each write, as its decorators are meant to be used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convmem.export import thread_to_dict
from convmem_bench.flows import RESUMES, exchange

if TYPE_CHECKING:
    import psycopg
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    from convmem.models import Turn
    from convmem.stores.base import Store


def _as_messages(turns: list[Turn]) -> list[dict[str, str]]:
    return [{"role": t.role, "content": t.content} for t in turns]


def _history(messages: list[dict[str, str]]) -> str:
    return "\n\n".join(f"--- {m['role']} ---\n{m['content']}" for m in messages)


class LangGraphFlow:
    name = "LangGraph AsyncPostgresSaver"

    def __init__(self, saver: AsyncPostgresSaver) -> None:
        self.saver = saver

    @staticmethod
    def _config(thread_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}

    async def _save(
        self, config: dict[str, Any], messages: list[dict[str, str]], previous: Any, step: int
    ) -> None:
        from langgraph.checkpoint.base import empty_checkpoint

        checkpoint = empty_checkpoint()
        version = self.saver.get_next_version(previous, None)
        checkpoint["channel_values"] = {"messages": messages}
        checkpoint["channel_versions"] = {"messages": version}
        await self.saver.aput(
            config,  # type: ignore[arg-type]
            checkpoint,
            {"source": "loop", "step": step, "parents": {}},
            {"messages": version},
        )

    async def setup(self, thread_id: str, turns: list[Turn]) -> None:
        await self._save(self._config(thread_id), _as_messages(turns), None, 0)

    async def prepare(self, thread_id: str) -> None:
        pass

    async def request(self, thread_id: str, n: int) -> None:
        found = None
        for _ in range(RESUMES):
            found = await self.saver.aget_tuple(self._config(thread_id))  # type: ignore[arg-type]
        assert found is not None
        messages = list(found.checkpoint["channel_values"]["messages"])
        _history(messages)
        previous = found.checkpoint["channel_versions"]["messages"]
        await self._save(dict(found.config), messages + _as_messages(exchange(n)), previous, n + 1)


class LangChainHistoryFlow:
    name = "langchain-postgres chat history"
    table = "convmem_bench_langchain"

    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self.connection = connection

    def _history(self, thread_id: str) -> Any:
        from langchain_postgres import PostgresChatMessageHistory

        return PostgresChatMessageHistory(self.table, thread_id, async_connection=self.connection)

    @staticmethod
    def _messages(turns: list[Turn]) -> list[Any]:
        from langchain_core.messages import AIMessage, HumanMessage

        return [
            HumanMessage(t.content) if t.role == "user" else AIMessage(t.content) for t in turns
        ]

    async def setup(self, thread_id: str, turns: list[Turn]) -> None:
        await self._history(thread_id).aadd_messages(self._messages(turns))

    async def prepare(self, thread_id: str) -> None:
        pass

    async def request(self, thread_id: str, n: int) -> None:
        history = self._history(thread_id)
        messages = []
        for _ in range(RESUMES):
            messages = await history.aget_messages()
        _history([{"role": m.type, "content": str(m.content)} for m in messages])
        await history.aadd_messages(self._messages(exchange(n)))


class CashewsFlow:
    name = "cashews (Redis) around the store"

    def __init__(self, store: Store, redis_url: str, prefix: str) -> None:
        from cashews import Cache

        self.store = store
        self.prefix = prefix
        self.cache = Cache()
        self.cache.setup(redis_url)

        @self.cache(ttl="30m", key=prefix + "{thread_id}")
        async def load(thread_id: str) -> dict[str, Any]:
            thread = await store.load(thread_id, owner=None)
            assert thread is not None
            return thread_to_dict(thread)

        self._load = load

    async def setup(self, thread_id: str, turns: list[Turn]) -> None:
        pass  # the thread is in the convmem store already

    async def prepare(self, thread_id: str) -> None:
        pass

    async def request(self, thread_id: str, n: int) -> None:
        thread: dict[str, Any] = {}
        for _ in range(RESUMES):
            thread = await self._load(thread_id)
        _history(thread["turns"])
        await self.store.append(thread_id, exchange(n), owner=None)
        await self.cache.delete(self.prefix + thread_id)  # invalidate after the write

    async def aclose(self) -> None:
        await self.cache.close()
