"""``Memory``: the public face of convmem.

It validates input, runs the store's write calls, and reads through the tiered
cache (L1 → L2 Redis → store). It knows the cache and the Store contract, never a
concrete store, SQL or Redis.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

from convmem import history
from convmem.cache.breaker import CircuitBreaker
from convmem.cache.local import LocalCache
from convmem.cache.tiered import Source, TieredCache
from convmem.errors import InvalidInputError, StoreError, ThreadNotFoundError
from convmem.export import export_thread
from convmem.models import freeze_mapping
from convmem.settings import Settings
from convmem.stats import Stats
from convmem.stores import store_from_url
from convmem.stores.base import NewThread, Store
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

    from convmem.cache.redis import RedisCache
    from convmem.models import Thread, ThreadPage, Turn

log = logging.getLogger("convmem")

T = TypeVar("T")

MAX_ANCESTRY = 20  # parent chains longer than this are cut (and cycles stop at once)


class Memory:
    """Conversation memory: threads of turns, resumed by their id.

    Args:
        store: a store URL (``sqlite:///./data/convmem.db``, ``postgresql://…``) or a
            ``Store``; defaults to the ``store_url`` setting.
        cache: a Redis URL for the L2 tier (``redis://localhost:6379/0``); defaults to
            the ``cache_url`` setting. Without it, L1 alone caches (one instance).
        settings: every other setting; defaults to ``Settings.load()`` (the
            ``CONVMEM_*`` environment).
        l1_timer: the monotonic clock of L1's TTL (tests pass a fake one).
        breaker_clock: the monotonic clock of the Redis circuit breaker.

    The constructor does no I/O; ``async with memory`` (or ``await memory.open()``)
    connects and applies migrations. A ``Store`` passed in is opened if needed but
    left open on close: its owner closes it.
    """

    def __init__(
        self,
        store: str | Store | None = None,
        *,
        cache: str | None = None,
        settings: Settings | None = None,
        l1_timer: Callable[[], float] = time.monotonic,
        breaker_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        overrides: dict[str, Any] = {}
        if isinstance(store, str):
            overrides["store_url"] = store
        if cache is not None:
            overrides["cache_url"] = cache
        if settings is None:
            settings = Settings.load(**overrides)
        elif overrides:
            settings = Settings.load(**{**settings.model_dump(), **overrides})
        self.settings = settings
        # A store passed in is the caller's to close; one built from a URL is ours.
        self._owns_store = not isinstance(store, Store)
        self.store: Store = (
            store
            if isinstance(store, Store)
            else store_from_url(
                settings.store_url,
                limits=settings.thread_limits,
                **_store_options(settings.store_url, settings),
            )
        )
        self._limits = settings.input_limits
        self._stats = Stats()
        self._cache = TieredCache(
            self.store,
            LocalCache(
                max_items=settings.l1_max_items,
                max_bytes=settings.l1_max_bytes,
                ttl=settings.l1_ttl_seconds,
                timer=l1_timer,
            ),
            self._stats,
            l2=_redis_tier(settings),
            breaker=CircuitBreaker(
                reset_after=settings.redis_breaker_reset_seconds, clock=breaker_clock
            ),
            single_instance=settings.single_instance,
            strict=settings.consistency == "strict",
            watermark_items=settings.l1_max_items * 100,
        )

    @classmethod
    def from_env(cls) -> Self:
        """A Memory configured from ``CONVMEM_*`` variables (and the seed's aliases)."""
        return cls(settings=Settings.load())

    # -- lifetime --------------------------------------------------------------

    async def open(self) -> None:
        """Connect the store, apply pending migrations, subscribe to invalidations."""
        await self.store.open()
        await self._cache.start()

    async def aclose(self) -> None:
        """Stop listening and close Redis; close the store if this Memory built it."""
        await self._cache.stop()
        if self._owns_store:
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
        await self._cache.created(thread)
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
        return await self._cache.appended(result, owner)

    async def get_thread(self, thread_id: str, *, owner: str | None = None) -> Thread | None:
        """The thread with all its turns, or None if it is unknown, expired or not ``owner``'s.

        Repeated calls are L1 hits; concurrent calls for one thread share one load.

        Raises:
            InvalidThreadIdError: ``thread_id`` is not a canonical UUID string.
        """
        validate_thread_id(thread_id)
        validate_owner(owner)
        return await self._cache.get(thread_id, owner)

    async def lookup_thread(
        self, thread_id: str, *, owner: str | None = None
    ) -> tuple[Thread | None, Source]:
        """``get_thread`` that also says where the thread came from: ``l1``, ``l2`` or ``store``."""
        validate_thread_id(thread_id)
        validate_owner(owner)
        return await self._cache.lookup(thread_id, owner)

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
        if deleted:
            await self._cache.deleted(thread_id)
        return deleted

    async def evict(self, thread_id: str, *, local_only: bool = False) -> None:
        """Drop the cached copies of a thread, in this process and in Redis.

        The next read loads it from the store, or with ``local_only`` from Redis (as a
        new instance would). Use it to free memory or to measure a cold read; it is
        never needed for correctness.
        """
        validate_thread_id(thread_id)
        await self._cache.evict(thread_id, local_only=local_only)

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

    async def ping_cache(self) -> bool | None:
        """True if Redis answers, False if not, None when there is no L2 tier."""
        return await self._cache.ping_l2()

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters: hits per layer, store round trips, Redis health."""
        return replace(
            self._stats,
            l1_items=len(self._cache.l1),
            l1_bytes=self._cache.l1.bytes,
            circuit_state=self._cache.breaker.state.value,
            subscribed=self._cache.subscribed,
        )

    # -- helpers ---------------------------------------------------------------

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


def _redis_tier(settings: Settings) -> RedisCache | None:
    if settings.cache_url is None:
        return None
    from convmem.cache.redis import RedisCache  # imported only when a cache URL is set

    return RedisCache.from_url(
        settings.cache_url,
        prefix=settings.cache_prefix,
        ttl_seconds=settings.l2_ttl_seconds,
        socket_timeout=settings.redis_socket_timeout,
    )


def _store_options(url: str, settings: Settings) -> dict[str, Any]:
    if url.partition("://")[0].lower() in {"postgres", "postgresql"}:
        return {
            "min_size": settings.pg_pool_min_size,
            "max_size": settings.pg_pool_max_size,
            "prepared_statements": settings.pg_prepared_statements,
        }
    return {}
