"""``Memory``: the public face of convmem.

It knows the cache and the Store contract, never a concrete store, SQL or Redis.
Reads go L1 → store with one in-flight load per thread (single-flight); writes
commit in the store first, then update L1 in place so the next read is a hit.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

from convmem import history
from convmem.cache.local import LocalCache
from convmem.errors import (
    ConfigurationError,
    InvalidInputError,
    StoreError,
    ThreadNotFoundError,
)
from convmem.export import export_thread
from convmem.models import Thread, ThreadPage, Turn, freeze_mapping
from convmem.settings import Settings
from convmem.stats import Stats
from convmem.stores import store_from_url
from convmem.stores.base import AppendResult, NewThread, Store, extend_thread
from convmem.validation import (
    validate_metadata,
    validate_optional_thread_id,
    validate_owner,
    validate_thread_id,
    validate_turns,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence
    from types import TracebackType

log = logging.getLogger("convmem")

T = TypeVar("T")

MAX_ANCESTRY = 20  # parent chains longer than this are cut (and cycles stop at once)


class Memory:
    """Conversation memory: threads of turns, resumed by their id.

    Args:
        store: a store URL (``sqlite:///./data/convmem.db``, ``postgresql://…``) or a
            ``Store``; defaults to the ``store_url`` setting.
        settings: every other setting; defaults to ``Settings.load()`` (the
            ``CONVMEM_*`` environment).
        l1_timer: the monotonic clock of L1's TTL (tests pass a fake one).

    The constructor does no I/O; ``async with memory`` (or ``await memory.open()``)
    connects and applies migrations.
    """

    def __init__(
        self,
        store: str | Store | None = None,
        *,
        settings: Settings | None = None,
        l1_timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings is None:
            settings = Settings.load(**({"store_url": store} if isinstance(store, str) else {}))
        elif isinstance(store, str):
            settings = Settings.load(**{**settings.model_dump(), "store_url": store})
        if settings.cache_url is not None:
            raise ConfigurationError(
                "a Redis cache URL is set (CONVMEM_CACHE_URL or REDIS_URL), but this version "
                "of convmem has only the in-process L1 cache; unset it to run on L1 alone"
            )
        self.settings = settings
        self.store: Store = (
            store
            if isinstance(store, Store)
            else store_from_url(
                settings.store_url,
                limits=settings.thread_limits,
                **_store_options(settings.store_url, settings),
            )
        )
        self._l1 = LocalCache(
            max_items=settings.l1_max_items,
            max_bytes=settings.l1_max_bytes,
            ttl=settings.l1_ttl_seconds,
            timer=l1_timer,
        )
        self._limits = settings.input_limits
        self._stats = Stats()
        self._inflight: dict[tuple[str, str | None], asyncio.Future[Thread | None]] = {}

    @classmethod
    def from_env(cls) -> Self:
        """A Memory configured from ``CONVMEM_*`` variables (and the seed's aliases)."""
        return cls(settings=Settings.load())

    # -- lifetime --------------------------------------------------------------

    async def open(self) -> None:
        """Connect the store and apply pending migrations."""
        await self.store.open()

    async def aclose(self) -> None:
        await self.store.aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- threads ---------------------------------------------------------------

    async def create_thread(
        self,
        *,
        tool_name: str | None = None,
        turns: Sequence[Turn] = (),
        owner: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        parent_id: str | None = None,
    ) -> Thread:
        """Start a thread, optionally with its first turns, in one store round trip.

        Raises:
            InvalidInputError: bad turns, metadata, owner or parent id (nothing written).
            ThreadFullError: more turns than ``max_turns``.
        """
        validate_owner(owner)
        validate_optional_thread_id(parent_id)
        validate_turns(turns, self._limits, allow_empty=True)
        frozen = freeze_mapping(metadata, what="thread metadata")
        validate_metadata(frozen, self._limits, what="thread metadata")
        if tool_name is not None and not isinstance(tool_name, str):
            raise InvalidInputError("tool_name must be a string or None")
        spec = NewThread(str(uuid.uuid4()), tool_name, parent_id, owner, frozen)
        thread = await self._write(self.store.create(spec, turns))
        self._install(thread)
        return thread

    async def add_turns(
        self, thread_id: str, turns: Sequence[Turn], *, owner: str | None = None
    ) -> Thread:
        """Append turns atomically and return the thread as it now is.

        A turn whose ``key`` is already in the thread is not inserted twice: a
        retried call returns the same turns. The cached copy is extended in place,
        so the next read is a cache hit.

        Raises:
            InvalidInputError: bad id or turns (nothing written).
            ThreadNotFoundError, ThreadExpiredError, ThreadFullError: see their docs.
            IdempotencyConflictError: a key reused for a different turn.
        """
        validate_thread_id(thread_id)
        validate_owner(owner)
        validate_turns(turns, self._limits, allow_empty=False)
        result = await self._write(self.store.append(thread_id, turns, owner=owner))
        self._inflight.pop((thread_id, owner), None)  # a load begun before the write is stale
        return await self._after_append(result, owner)

    async def _after_append(self, result: AppendResult, owner: str | None) -> Thread:
        cached = self._l1.get(result.thread_id)
        if cached is not None and (extended := result.applied_to(cached)) is not None:
            self._l1.put(extended, base=cached)
            return extended
        # L1 had no copy at the base version: one read brings it up to date.
        if cached is not None and cached.version < result.base_version:
            delta = await self._read(
                self.store.load_since(result.thread_id, cached.version, owner=owner)
            )
            if delta is not None and delta.version >= result.version:
                caught_up = extend_thread(cached, delta.turns, delta.updated_at, delta.expires_at)
                self._install(caught_up)
                return caught_up
        thread = await self._read(self.store.load(result.thread_id, owner=owner))
        if thread is None:  # deleted between the append and this read
            raise ThreadNotFoundError(f"no thread {result.thread_id}", thread_id=result.thread_id)
        self._install(thread)
        return thread

    async def get_thread(self, thread_id: str, *, owner: str | None = None) -> Thread | None:
        """The thread with all its turns, or None if it is unknown, expired or not ``owner``'s.

        Repeated calls are L1 hits; concurrent calls for one thread share one load.

        Raises:
            InvalidThreadIdError: ``thread_id`` is not a canonical UUID string.
        """
        validate_thread_id(thread_id)
        validate_owner(owner)
        cached = self._l1.get(thread_id)
        if cached is not None:
            if cached.is_expired(self.store.clock()):
                self._l1.discard(thread_id)
            else:
                self._stats.l1_hits += 1
                log.debug("CACHE HIT l1 thread=%s version=%d", thread_id, cached.version)
                return cached if cached.owner == owner else None
        self._stats.l1_misses += 1
        key = (thread_id, owner)
        inflight = self._inflight.get(key)
        if inflight is not None:
            self._stats.single_flight_joins += 1
            return await asyncio.shield(inflight)
        future: asyncio.Future[Thread | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            self._stats.misses += 1
            thread = await self._read(self.store.load(thread_id, owner=owner))
            log.debug(
                "CACHE MISS thread=%s version=%s", thread_id, thread.version if thread else None
            )
            if thread is not None:
                self._install(thread)
            future.set_result(thread)
            return thread
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # joiners get it; mark it retrieved when there are none
            raise
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]

    async def get_ancestors(
        self, thread: Thread, *, owner: str | None = None
    ) -> tuple[Thread, ...]:
        """The chain of parent threads of ``thread``, oldest first (cached reads)."""
        chain: list[Thread] = []
        seen = {thread.id}
        parent_id = thread.parent_id
        while parent_id is not None and parent_id not in seen and len(chain) < MAX_ANCESTRY:
            parent = await self.get_thread(parent_id, owner=owner)
            if parent is None:
                break
            chain.append(parent)
            seen.add(parent_id)
            parent_id = parent.parent_id
        return tuple(reversed(chain))

    def build_history(
        self,
        thread: Thread,
        *,
        max_tokens: int = 8000,
        ancestors: Sequence[Thread] = (),
        read_file: Callable[[str], str] | None = None,
    ) -> str:
        """Prompt-ready history of ``thread`` (and its ``ancestors``) within a token budget.

        Pure and synchronous: fetch ``ancestors`` first with ``get_ancestors``.
        See ``convmem.history.build_history`` for the format.
        """
        return history.build_history(
            thread,
            max_tokens=max_tokens,
            ancestors=ancestors,
            read_file=read_file,
            max_turns=self.settings.max_turns,
        )

    async def list_threads(
        self, *, owner: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> ThreadPage:
        """A page of ``owner``'s live threads, most recently updated first."""
        validate_owner(owner)
        return await self._read(self.store.list(owner=owner, limit=limit, cursor=cursor))

    async def delete_thread(self, thread_id: str, *, owner: str | None = None) -> bool:
        """Delete a thread and its turns; False if ``owner`` had no such thread."""
        validate_thread_id(thread_id)
        validate_owner(owner)
        deleted = await self._write(self.store.delete(thread_id, owner=owner))
        self._l1.discard(thread_id)
        return deleted

    async def export_thread(
        self,
        thread_id: str,
        *,
        owner: str | None = None,
        format: Literal["markdown", "json"] = "markdown",
    ) -> str:
        """The thread as Markdown or JSON; raises ``ThreadNotFoundError`` if not visible."""
        thread = await self.get_thread(thread_id, owner=owner)
        if thread is None:
            raise ThreadNotFoundError(f"no thread {thread_id}", thread_id=thread_id)
        return export_thread(thread, format)

    async def purge_expired(self) -> int:
        """Delete every expired thread from the store; return how many."""
        return await self._write(self.store.purge_expired())

    async def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied."""
        return await self.store.migrate()

    async def ping(self) -> None:
        """Raise ``StoreError`` unless the store answers."""
        await self.store.ping()

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters (hits per layer, store round trips, L1 size)."""
        return replace(self._stats, l1_items=len(self._l1), l1_bytes=self._l1.bytes)

    # -- helpers ---------------------------------------------------------------

    def _install(self, thread: Thread) -> None:
        self._l1.put(thread)

    async def _read(self, call: Awaitable[T]) -> T:
        return await self._counted(call, "store_reads")

    async def _write(self, call: Awaitable[T]) -> T:
        return await self._counted(call, "store_writes")

    async def _counted(self, call: Awaitable[T], counter: str) -> T:
        setattr(self._stats, counter, getattr(self._stats, counter) + 1)
        try:
            return await call
        except StoreError:
            self._stats.store_errors += 1
            raise


def _store_options(url: str, settings: Settings) -> dict[str, Any]:
    if url.partition("://")[0].lower() in {"postgres", "postgresql"}:
        return {
            "min_size": settings.pg_pool_min_size,
            "max_size": settings.pg_pool_max_size,
            "prepared_statements": settings.pg_prepared_statements,
        }
    return {}
