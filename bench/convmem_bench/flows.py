"""The request flows compared: convmem, the seed before its fix, the seed's fix as built.

Each flow serves the seed's request: resume the thread (asked for several times,
as the seed's separate code paths did), build the history, call the model (zero
time here) and save the user and assistant turns. All run on the same PostgreSQL
database and Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson
from cachetools import TTLCache

from convmem.history import build_history
from convmem.models import Thread, Turn
from convmem.records import THREAD_COLUMNS, thread_from_values, turn_from_values

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from psycopg_pool import AsyncConnectionPool

    from convmem.memory import Memory
    from convmem.stores.base import Store

RESUMES = 3  # how often one request asks for the thread


def exchange(n: int) -> list[Turn]:
    """The user and assistant turns of request ``n``: a few hundred bytes to a few KB,
    every third question naming files, as a coding assistant's turns do."""
    body = "lorem ipsum dolor sit amet " * 12  # ~300 bytes
    files = ("src/app/main.py", "src/app/models.py", "README.md") if n % 3 == 0 else ()
    return [
        Turn(role="user", content=f"question {n}: {body}", files=files, key=f"bench-{n}:u"),
        Turn(
            role="assistant",
            content=f"answer {n}: {body * (2 + n % 4 * 3)}",  # 0.6 to 3.3 KB
            key=f"bench-{n}:a",
            model_provider="bench",
            model_name="none",
        ),
    ]


class Flow(Protocol):
    name: str

    async def prepare(self, thread_id: str) -> None:
        """Untimed set-up before a request (a cold flow forgets its caches here)."""

    async def request(self, thread_id: str, n: int) -> None: ...


Forget = Literal["nothing", "all", "local"]


class ConvMemFlow:
    """convmem; before each request it forgets nothing (warm), every cached copy
    (cold), or only this process's copy (a new instance, with Redis warm)."""

    def __init__(self, name: str, memory: Memory, *, forget: Forget) -> None:
        self.name = name
        self.memory = memory
        self.forget = forget

    async def prepare(self, thread_id: str) -> None:
        if self.forget != "nothing":
            await self.memory.evict(thread_id, local_only=self.forget == "local")

    async def request(self, thread_id: str, n: int) -> None:
        thread = None
        for _ in range(RESUMES):
            thread = await self.memory.get_thread(thread_id)
        assert thread is not None
        self.memory.build_history(thread, ancestors=await self.memory.get_ancestors(thread))
        await self.memory.add_turns(thread_id, exchange(n))


_HEADER_SQL = (
    "SELECT id::text, version, tool_name, parent_id::text, owner, metadata, created_at,"
    " updated_at, expires_at, parent_seq, turn_count FROM convmem_threads WHERE id = %s"
)
_TURNS_SQL = (
    "SELECT seq, role, content, tool_name, model_provider, model_name, files, images,"
    " metadata, key, created_at FROM convmem_turns WHERE thread_id = %s ORDER BY seq"
)


class SeedQueries:
    """The seed's storage calls: the conversation and its messages, loaded separately."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def conversation(self, thread_id: str) -> dict[str, Any]:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(_HEADER_SQL, (thread_id,))).fetchone()
        assert row is not None
        return dict(zip(THREAD_COLUMNS, row, strict=True))

    async def messages(self, thread_id: str) -> list[Turn]:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(_TURNS_SQL, (thread_id,))).fetchall()
        return [turn_from_values(row) for row in rows]


class SeedBefore:
    """The seed before its fix: 7 store round trips per continued request."""

    name = "seed before the fix (7 calls)"

    def __init__(self, queries: SeedQueries, store: Store) -> None:
        self.queries = queries
        self.store = store

    async def prepare(self, thread_id: str) -> None:
        pass

    async def request(self, thread_id: str, n: int) -> None:
        header = await self.queries.conversation(thread_id)  # 1 resume thread
        await self.queries.messages(thread_id)  # 2 load history
        await self.queries.conversation(thread_id)  # 3 build context: again
        turns = await self.queries.messages(thread_id)  # 4 ... and again
        await self.queries.messages(thread_id)  # 5 generate response: a third time
        # The seed read the header and the turns apart: under concurrency the turns may
        # be newer than the header's version, so the version is taken from the turns.
        build_history(thread_from_values({**header, "version": 0}, tuple(turns)))
        await self.queries.conversation(thread_id)  # 6 save: load the thread once more
        await self.store.append(thread_id, exchange(n), owner=None)  # 7 insert


class SeedFixAsBuilt:
    """The seed's designed fix as it was built: L1 TTL cache (100 items, 300 s) and Redis
    (1800 s) holding the conversation and its messages under separate keys, both
    invalidated after every write, so the next request always misses."""

    name = "seed's fix as built"

    def __init__(
        self, queries: SeedQueries, store: Store, redis: aioredis.Redis, prefix: str
    ) -> None:
        self.queries = queries
        self.store = store
        self.redis = redis
        self.prefix = prefix
        self.l1: TTLCache[str, Any] = TTLCache(maxsize=100, ttl=300)

    async def prepare(self, thread_id: str) -> None:
        pass

    async def _get(self, key: str) -> Any:
        if key in self.l1:
            return self.l1[key]
        raw = await self.redis.get(self.prefix + key)
        if raw is None:
            return None
        value = orjson.loads(raw)
        self.l1[key] = value
        return value

    async def _set(self, key: str, value: Any) -> None:
        self.l1[key] = value
        await self.redis.set(self.prefix + key, orjson.dumps(value, default=str), ex=1800)

    async def _thread(self, thread_id: str) -> Thread:
        conversation = await self._get(f"conv:{thread_id}")
        messages = await self._get(f"msgs:{thread_id}")
        if conversation is None or messages is None:
            header = await self.queries.conversation(thread_id)
            turns = await self.queries.messages(thread_id)
            conversation = dict(header.items())
            messages = [{"role": t.role, "content": t.content, "seq": t.seq} for t in turns]
            await self._set(f"conv:{thread_id}", conversation)
            await self._set(f"msgs:{thread_id}", messages)
        turns_built = tuple(
            Turn(role=m["role"], content=m["content"], seq=m["seq"]) for m in messages
        )
        header = dict(conversation)
        return Thread(
            thread_id,
            turns_built,
            header.get("tool_name"),
            None,
            None,
            {},
            _any_time(header["created_at"]),
            _any_time(header["updated_at"]),
            _any_time(header["expires_at"]),
        )

    async def request(self, thread_id: str, n: int) -> None:
        thread = None
        for _ in range(RESUMES):
            thread = await self._thread(thread_id)
        assert thread is not None
        build_history(thread)
        await self._get(f"conv:{thread_id}")  # save: the conversation again (a cache hit)
        await self.store.append(thread_id, exchange(n), owner=None)
        for key in (f"conv:{thread_id}", f"msgs:{thread_id}"):  # invalidate on write
            self.l1.pop(key, None)
            await self.redis.delete(self.prefix + key)


def _any_time(value: Any) -> Any:
    from datetime import datetime

    return value if isinstance(value, datetime) else datetime.fromisoformat(value)
