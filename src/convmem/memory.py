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

from convmem import compaction, history, messages
from convmem.assembly import assemble
from convmem.cache.guard import GuardedL2
from convmem.cache.local import LocalCache
from convmem.cache.tiered import Source, TieredCache
from convmem.errors import (
    DecryptionError,
    InvalidInputError,
    ProviderError,
    StaleSummaryError,
    StaleUpdateError,
    StoreError,
    ThreadNotFoundError,
)
from convmem.export import export_thread
from convmem.key_check import check_sealing_keys
from convmem.limits import HISTORY_TOKENS, InputLimits
from convmem.models import Turn, freeze_mapping
from convmem.options import MemoryOptions
from convmem.sealed_writes import SealedWrites
from convmem.sealing import NO_SEALING, Sealing
from convmem.settings import Settings
from convmem.stats import Stats
from convmem.stores.base import NewThread, Store
from convmem.stores.guard import StoreGuard
from convmem.validation import (
    check_length,
    validate_count,
    validate_fork_point,
    validate_metadata,
    validate_optional_thread_id,
    validate_owner,
    validate_seq_or_zero,
    validate_thread_id,
    validate_turns,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence
    from datetime import timedelta
    from types import TracebackType

    from convmem.cache.protocol import L2Tier
    from convmem.changes import Summarised, Updated
    from convmem.clocks import Timer
    from convmem.compaction import Summariser
    from convmem.compaction_policy import CompactionPolicy
    from convmem.messages import ChatMessage
    from convmem.models import Thread, ThreadPage, ThreadSummary

log = logging.getLogger("convmem")

T = TypeVar("T")

MAX_UPDATE_ATTEMPTS = 4  # a title set on a thread that keeps moving: each retry reads it anew
MAX_ANCESTRY = 20  # parent chains longer than this are cut (and cycles stop at once)


class Memory:
    """Conversation memory: threads of turns, resumed by their id.

    ``Memory(store, cache=...)`` takes the parts it is given and reads no environment;
    ``Memory.from_url(...)`` builds its parts from URLs and owns them;
    ``Memory.from_env()`` is the one way that reads ``CONVMEM_*`` variables.

    Args:
        store: the source of truth (``SqliteStore``, ``PostgresStore``, ``SupabaseStore``);
            its ``limits`` are the thread limits (turns, idle lifetime).
        cache: the L2 tier (``RedisCache``, or any ``L2Tier``); without it L1 alone
            caches (one instance). Wrapped in the Redis fault policy (``GuardedL2``).
        local: the L1 tier; defaults to ``LocalCache()`` on ``timer``.
        input_limits: sizes a caller may store, checked before any I/O.
        options: how the parts it builds around them run (``MemoryOptions``: the fault
            policies, the staleness lease, the consistency).
        encryption: seals turns and thread metadata before they reach the store or
            Redis (``convmem.encryption.Encryption``); L1 holds plaintext.
        timer: the one monotonic clock of L1's TTL, the lease and both breakers (tests pass
            a fake one); wall time is the store's ``clock``.
        closes: the parts handed over with the Memory (``from_settings`` hands over what
            it built): closed when it closes.

    The constructor does no I/O; ``async with memory`` (or ``await memory.open()``)
    connects and applies migrations. Parts passed in are opened if needed but left
    open on close (unless in ``closes``): their owner closes them.
    """

    def __init__(
        self,
        store: Store,
        *,
        cache: L2Tier | None = None,
        local: LocalCache | None = None,
        input_limits: InputLimits | None = None,
        options: MemoryOptions | None = None,
        encryption: Sealing | None = None,
        timer: Timer = time.monotonic,
        closes: Sequence[Store | L2Tier] = (),
    ) -> None:
        if not isinstance(store, Store):
            raise TypeError(
                "Memory(store) takes a Store; build one from a URL with Memory.from_url(url)"
            )
        options = options or MemoryOptions()
        self.store = store
        self._sealing = encryption or NO_SEALING
        self._guard = StoreGuard(
            timeout=options.store_timeout_seconds,
            reset_after=options.store_breaker_reset_seconds,
            timer=timer,
        )
        self._limits = input_limits or InputLimits()
        self._stats = Stats()
        self._owned = tuple(closes)
        local = local or LocalCache(timer=timer)
        guarded = (
            None
            if cache is None
            else GuardedL2(
                cache,
                self._stats,
                source=uuid.uuid4().hex,
                reset_after=options.redis_breaker_reset_seconds,
                timer=timer,
            )
        )
        self._cache = TieredCache(
            store,
            local,
            self._stats,
            l2=guarded,
            single_instance=options.single_instance,
            strict=options.consistency == "strict",
            watermark_items=local.max_items * 100,
            lease_seconds=options.lease_seconds,
            timer=timer,
            guard=self._guard,
            sealing=self._sealing,
            watch_unannounced=options.watch_unannounced,
        )
        self._writes = SealedWrites(
            store,
            self._sealing,
            known_version=self._cache.known_version,
            known_keys=self._cache.known_keys,
            read=self._read,
            write=self._write,
        )

    @classmethod
    def from_url(
        cls,
        store_url: str,
        cache_url: str | None = None,
        *,
        timer: Timer = time.monotonic,
        **settings: Any,
    ) -> Self:
        """A Memory on the store ``store_url`` names, with Redis at ``cache_url`` if given.

        ``settings`` are any other ``Settings`` fields (``max_turns=200``,
        ``l1_max_items=…``); nothing is read from the environment.

        Raises:
            ConfigurationError: an unknown URL scheme, a missing driver or a bad setting.
        """
        return cls.from_settings(
            Settings.of(store_url=store_url, cache_url=cache_url, **settings), timer=timer
        )

    @classmethod
    def from_env(cls) -> Self:
        """A Memory configured from ``CONVMEM_*`` variables (and the seed's aliases)."""
        return cls.from_settings(Settings.load())

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        store: Store | None = None,
        timer: Timer = time.monotonic,
    ) -> Self:
        """A Memory built from ``settings`` (``convmem.assembly``); it owns the store and
        Redis client it builds. ``store``, when given, is used instead of
        ``settings.store.url`` and stays the caller's to close.
        """
        parts = assemble(settings, store=store, timer=timer)
        return cls(
            parts.store,
            cache=parts.cache,
            local=parts.local,
            input_limits=settings.input_limits,
            options=settings.memory_options,
            encryption=parts.encryption,
            timer=timer,
            closes=parts.owned,
        )

    @property
    def sealing(self) -> Sealing:
        """How this Memory seals what it stores (``NO_SEALING`` with encryption off)."""
        return self._sealing

    @property
    def max_turns(self) -> int:
        """How many turns a thread holds (the store enforces it)."""
        return self.store.limits.max_turns

    @property
    def thread_ttl(self) -> timedelta:
        """How long an idle thread lives; every append extends it."""
        return self.store.limits.ttl

    # -- lifetime --------------------------------------------------------------

    async def open(self, *, migrate: bool = True) -> None:
        """Connect the store, apply pending migrations (unless ``migrate=False``), check
        the encryption keys against the store's (``convmem.key_check``), and subscribe to
        invalidations.

        Raises:
            ConfigurationError: the store holds sealed data and no key or the wrong key
                is configured; a missing schema.
        """
        await self.store.open(migrate=migrate)
        await check_sealing_keys(self.store, self._sealing)
        await self._cache.start()

    async def aclose(self) -> None:
        """Stop listening; close the store and the Redis client if this Memory built them."""
        await self._cache.stop()
        for part in reversed(self._owned):
            await part.aclose()

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
        thread_id: str | None = None,
    ) -> Thread:
        """Start a thread, optionally with its first turns, in one store round trip.

        ``thread_id`` (a UUID) names the thread when the caller already has an id for it,
        as an integration whose host mints its own ids does; a new UUID otherwise.

        Raises:
            InvalidInputError: bad turns, metadata, owner, parent or thread id (nothing
                written).
            ThreadExistsError: ``thread_id`` is taken.
            ThreadFullError: more turns than ``max_turns``.
        """
        validate_owner(owner, self._limits)
        validate_optional_thread_id(parent_id)
        thread_id = validate_optional_thread_id(thread_id)
        validate_turns(turns, self._limits, allow_empty=True)
        frozen = freeze_mapping(metadata, what="thread metadata")
        validate_metadata(frozen, self._limits, what="thread metadata")
        if tool_name is not None and not isinstance(tool_name, str):
            raise InvalidInputError("tool_name must be a string or None")
        if tool_name is not None:
            check_length(tool_name, "tool_name", self._limits.max_name_chars)
        spec = NewThread(thread_id or str(uuid.uuid4()), tool_name, parent_id, owner, frozen)
        return await self._cache.committed(await self._writes.create(spec, turns), owner)

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
        validate_owner(owner, self._limits)
        validate_turns(turns, self._limits, allow_empty=False)
        return await self._writes.append(
            thread_id,
            turns,
            owner=owner,
            then=lambda appended: self._cache.committed(appended, owner),
        )

    async def pop_turn(self, thread_id: str, *, owner: str | None = None) -> Turn | None:
        """Remove the thread's newest turn and return it (None when it has none), in one
        store round trip. Its seq is not reused; its key is free again, so a retry of
        the append that made it inserts it anew.

        Raises:
            InvalidInputError: a bad id or owner (nothing written).
            ThreadNotFoundError, ThreadExpiredError: see their docs.
        """
        _, removed = await self._remove(thread_id, owner, 1)
        return removed[-1] if removed else None

    async def rewind_thread(
        self, thread_id: str, turns: int = 1, *, owner: str | None = None
    ) -> tuple[Thread, tuple[Turn, ...]]:
        """Remove the newest ``turns`` turns (all there are, if fewer) in one store round
        trip; return the thread as it now is and the removed turns, oldest first."""
        return await self._remove(thread_id, owner, turns)

    async def clear_thread(self, thread_id: str, *, owner: str | None = None) -> Thread:
        """Remove every turn and keep the thread (its id, owner, metadata, forks), in one
        store round trip; return it as it now is."""
        thread, _ = await self._remove(thread_id, owner, None)
        return thread

    async def _remove(
        self, thread_id: str, owner: str | None, count: int | None
    ) -> tuple[Thread, tuple[Turn, ...]]:
        """Pop ``count`` turns or clear them all (``None``); every tier follows."""
        validate_thread_id(thread_id)
        validate_owner(owner, self._limits)
        if count is None:
            removal = await self._write(lambda: self.store.clear(thread_id, owner=owner))
        else:
            validate_count(count, "turns")
            removal = await self._write(lambda: self.store.pop(thread_id, owner=owner, count=count))
        thread = await self._cache.committed(removal, owner)
        try:
            return thread, self._sealing.open_turns(thread_id, removal.turns)
        except DecryptionError:
            self._stats.decryption_errors += 1
            raise

    async def rewrite_thread(
        self,
        thread_id: str,
        turns: Sequence[Turn],
        *,
        after_seq: int,
        owner: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Thread:
        """Replace every turn after ``after_seq`` (0: all of them) with ``turns``, and the
        thread's metadata with ``metadata`` when given, atomically, in one store round
        trip; return the thread as it now is. For a caller whose new version of a
        conversation is not an extension of the stored one (an edited earlier turn):
        rewind to where they agree and append the rest, never half of it. Every cache
        tier takes the new copy whole.

        Raises:
            InvalidInputError: bad id, owner, turns, metadata or ``after_seq`` (nothing
                written).
            TurnNotFoundError: ``after_seq`` is not one of the thread's turns.
            ThreadNotFoundError, ThreadExpiredError, ThreadFullError,
            IdempotencyConflictError: see their docs; nothing written.
        """
        validate_thread_id(thread_id)
        validate_owner(owner, self._limits)
        validate_seq_or_zero(after_seq, "after_seq")
        validate_turns(turns, self._limits, allow_empty=True)
        frozen = None
        if metadata is not None:
            frozen = freeze_mapping(metadata, what="thread metadata")
            validate_metadata(frozen, self._limits, what="thread metadata")
        return await self._writes.rewrite(
            thread_id,
            turns,
            after_seq=after_seq,
            owner=owner,
            metadata=frozen,
            then=lambda replaced: self._cache.committed(replaced, owner),
        )

    async def update_thread(
        self,
        thread_id: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        title: str | None = None,
        owner: str | None = None,
    ) -> Thread:
        """Replace the thread's metadata with ``metadata``, or set its ``title`` (the
        metadata's ``"title"``; with ``metadata`` too, on that), in one store round trip;
        return the thread as it now is. The turns, the summary and the expiry stay; the
        version rises by one, so every instance serves the new metadata from its next read.

        A ``title`` alone changes one field of the metadata this instance holds (a cached
        read): the write is made on that version, and if another write came first the
        thread is read again and the title set on what it holds then.

        Raises:
            InvalidInputError: a bad id, owner, metadata or title, or neither given
                (nothing written).
            ThreadNotFoundError, ThreadExpiredError: see their docs.
        """
        validate_thread_id(thread_id)
        validate_owner(owner, self._limits)
        if metadata is None and title is None:
            raise InvalidInputError("update_thread needs metadata=, title= or both")
        if title is not None:
            if not isinstance(title, str):
                raise InvalidInputError("title must be a string")
            check_length(title, "title", self._limits.max_name_chars)
        given = None if metadata is None else freeze_mapping(metadata, what="thread metadata")
        for _ in range(MAX_UPDATE_ATTEMPTS):
            try:
                updated = await self._update_once(thread_id, given, title, owner)
            except StaleUpdateError as moved:
                self._cache.outdated(thread_id, moved.version)  # the next read is newer
                continue
            return await self._cache.committed(updated, owner)
        raise StaleUpdateError(
            f"thread {thread_id} kept changing while its title was set; try again",
            thread_id=thread_id,
            version=self._cache.known_version(thread_id),
        )

    async def _update_once(
        self,
        thread_id: str,
        given: Mapping[str, Any] | None,
        title: str | None,
        owner: str | None,
    ) -> Updated:
        """One try of ``update_thread``: ``given`` (or, for a title alone, the metadata
        read now, at the version the write is then made on) with ``title`` set."""
        base_version, new = None, given
        if given is None:  # a title alone: one field of what is stored
            thread = await self._cache.get(thread_id, owner)
            if thread is None:
                raise ThreadNotFoundError.of(thread_id)
            base_version, new = thread.version, thread.metadata
        assert new is not None
        if title is not None:
            new = freeze_mapping({**new, "title": title}, what="thread metadata")
        validate_metadata(new, self._limits, what="thread metadata")
        return await self._writes.update(thread_id, new, owner=owner, base_version=base_version)

    async def fork_thread(
        self,
        thread_id: str,
        *,
        at_seq: int | None = None,
        owner: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Thread:
        """A new thread that continues ``thread_id`` from its turn ``at_seq`` (default:
        its newest; 0: from before its first): its history is the parent's turns up to
        there, then its own. No turn is copied. The fork takes the parent's tool name,
        owner and (unless ``metadata`` is given) metadata; the parent is not changed.

        One store round trip when the parent is cached (else one more to read it).

        Raises:
            InvalidInputError: a bad id, owner, metadata or ``at_seq`` (nothing written).
            TurnNotFoundError: the parent has no turn ``at_seq`` (never had, or removed).
            ThreadNotFoundError, ThreadExpiredError: for the parent.
        """
        validate_thread_id(thread_id)
        validate_owner(owner, self._limits)
        validate_fork_point(at_seq)
        parent = await self._cache.get(thread_id, owner)
        if parent is None:
            raise ThreadNotFoundError.of(thread_id, " (unknown, expired, or another owner's)")
        frozen = parent.metadata  # valid already: it was checked when the parent was made
        if metadata is not None:
            frozen = freeze_mapping(metadata, what="thread metadata")
            validate_metadata(frozen, self._limits, what="thread metadata")
        spec = NewThread(str(uuid.uuid4()), parent.tool_name, thread_id, owner, frozen)
        return await self._cache.committed(await self._writes.fork(spec, at_seq=at_seq), owner)

    async def get_thread(self, thread_id: str, *, owner: str | None = None) -> Thread | None:
        """The thread with all its turns, or None if it is unknown, expired or not ``owner``'s.

        Repeated calls are L1 hits; concurrent calls for one thread share one load.

        Raises:
            InvalidThreadIdError: ``thread_id`` is not a canonical UUID string.
        """
        validate_thread_id(thread_id)
        validate_owner(owner, self._limits)
        return await self._cache.get(thread_id, owner)

    async def lookup_thread(
        self, thread_id: str, *, owner: str | None = None
    ) -> tuple[Thread | None, Source]:
        """``get_thread`` that also says where the thread came from: ``l1``, ``l2`` or ``store``."""
        validate_thread_id(thread_id)
        validate_owner(owner, self._limits)
        return await self._cache.lookup(thread_id, owner)

    async def get_ancestors(
        self, thread: Thread, *, owner: str | None = None
    ) -> tuple[Thread, ...]:
        """The chain of parent threads of ``thread``, oldest first (cached reads), each
        cut where its child forked from it (turns up to the child's ``parent_seq``)."""
        chain: list[Thread] = []
        seen = {thread.id}
        parent_id, cut = thread.parent_id, thread.parent_seq
        while parent_id is not None and parent_id not in seen and len(chain) < MAX_ANCESTRY:
            parent = await self.get_thread(parent_id, owner=owner)
            if parent is None:
                break
            if cut is not None and parent.newest_seq > cut:
                kept = tuple(t for t in parent.turns if t.seq <= cut)
                # A summary that covers turns past the cut is not the branch's history.
                summary = parent.summary if parent.summarised_through <= cut else None
                chain.append(replace(parent, turns=kept, summary=summary))
            else:
                chain.append(parent)
            seen.add(parent_id)
            parent_id, cut = parent.parent_id, parent.parent_seq
        return tuple(reversed(chain))

    def build_history(
        self,
        thread: Thread,
        *,
        max_tokens: int = HISTORY_TOKENS,
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
            max_turns=self.max_turns,
        )

    def history_messages(
        self, thread: Thread, *, max_tokens: int = HISTORY_TOKENS, ancestors: Sequence[Thread] = ()
    ) -> list[ChatMessage]:
        """``thread`` (and its ``ancestors``) as native chat messages within a token budget,
        with a prefix that stays the same from one request to the next.

        Pure and synchronous: fetch ``ancestors`` first with ``get_ancestors``.
        See ``convmem.messages.history_messages`` for the rules.
        """
        return messages.history_messages(thread, max_tokens=max_tokens, ancestors=ancestors)

    async def compact(
        self,
        thread_id: str,
        *,
        summariser: Summariser,
        owner: str | None = None,
        max_tokens: int = HISTORY_TOKENS,
        policy: CompactionPolicy | None = None,
    ) -> Thread | None:
        """Fold the thread's older turns into a summary if its history passed the policy's
        share of ``max_tokens`` (see ``convmem.compaction``); return the thread as it now
        is, or None when it needed none (or another instance is compacting it). Every
        turn stays; the summary stands for the ones it covers in ``history_messages``.
        One model call (``summariser``) and one store write; the thread read is cached.

        Raises:
            StaleSummaryError: a pop, a clear or another compaction came first (nothing
                written: the other one stands).
            ProviderError, StoreError, ...: nothing written; it can simply be retried.
        """
        validate_thread_id(thread_id)
        validate_owner(owner, self._limits)
        thread = await self.get_thread(thread_id, owner=owner)
        if thread is None:
            raise ThreadNotFoundError.of(thread_id)
        ancestors = await self.get_ancestors(thread, owner=owner)
        plan = compaction.plan_compaction(thread, ancestors, max_tokens=max_tokens, policy=policy)
        if plan is None:
            return None
        # One instance at a time calls the model for a thread (the claim expires, so a
        # crashed holder blocks no one for long); the store keeps one summary anyway.
        async with self._cache.claimed("compacting", thread_id, compaction.CLAIM_SECONDS) as ours:
            if not ours:
                log.debug("thread %s is being compacted by another instance", thread_id)
                return None
            saved = await self._summarised(thread, plan, summariser, owner)
        self._stats.compactions += 1
        log.info(
            "thread %s compacted: %d turns through seq %d summarised",
            thread_id,
            plan.folded_turns,
            plan.covers_to_seq,
        )
        return await self._cache.committed(saved, owner)

    async def _summarised(
        self,
        thread: Thread,
        plan: compaction.CompactionPlan,
        summariser: Summariser,
        owner: str | None,
    ) -> Summarised:
        """Have ``plan`` summarised and save the summary; count what failed."""
        try:
            made = await summariser.summarise(plan.messages, max_tokens=plan.summary_tokens)
            if not made.text.strip():  # it would stand for the turns and say nothing
                raise ProviderError(
                    f"{made.provider} ({made.model}) returned an empty summary; not saved"
                )
            summary = Turn(
                role="system",
                content=made.text,
                model_provider=made.provider,
                model_name=made.model,
                metadata={"folded_turns": plan.folded_turns, "made_from_version": thread.version},
            )
            validate_turns([summary], self._limits, allow_empty=False)
            return await self._writes.save_summary(
                thread.id,
                summary,
                covers_to_seq=plan.covers_to_seq,
                base_version=plan.base_version,
                owner=owner,
            )
        except StaleSummaryError:
            self._stats.compactions_stale += 1
            raise
        except Exception:
            self._stats.compaction_failures += 1
            raise

    async def list_threads(
        self, *, owner: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> ThreadPage:
        """A page of ``owner``'s live threads, most recently updated first."""
        validate_owner(owner, self._limits)
        page = await self._read(lambda: self.store.list(owner=owner, limit=limit, cursor=cursor))
        return self._opened_page(page)

    async def list_every_owners_threads(
        self, *, limit: int = 50, cursor: str | None = None
    ) -> ThreadPage:
        """A page of every owner's live threads, most recently updated first: for an
        operator's tools (``convmem threads list --all-owners``), never for a client."""
        page = await self._read(lambda: self.store.list_every_owner(limit=limit, cursor=cursor))
        return self._opened_page(page)

    async def find_thread_any_owner(self, thread_id: str) -> ThreadSummary | None:
        """A live thread's header whoever owns it, or None: for an operator's tools (``convmem
        threads show --all-owners``), never for a client."""
        validate_thread_id(thread_id)
        found = await self._read(lambda: self.store.find_any_owner(thread_id))
        if found is None or not self._sealing.encrypts:
            return found
        try:
            return self._sealing.open_summary(found)
        except DecryptionError:
            self._stats.decryption_errors += 1
            raise

    def _opened_page(self, page: ThreadPage) -> ThreadPage:
        if not self._sealing.encrypts:
            return page
        try:
            opened = tuple(self._sealing.open_summary(t) for t in page.threads)
        except DecryptionError:
            self._stats.decryption_errors += 1
            raise
        return replace(page, threads=opened)

    async def delete_thread(self, thread_id: str, *, owner: str | None = None) -> bool:
        """Delete a thread and its turns; False if ``owner`` had no such thread."""
        validate_thread_id(thread_id)
        validate_owner(owner, self._limits)
        deleted = await self._write(lambda: self.store.delete(thread_id, owner=owner))
        if deleted is not None:
            await self._cache.committed(deleted, owner)
        return deleted is not None

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
            raise ThreadNotFoundError.of(thread_id)
        return export_thread(thread, format)

    # -- maintenance -------------------------------------------------------------

    async def scan_threads(
        self, *, after: str | None = None, limit: int = 100
    ) -> tuple[tuple[str, str | None], ...]:
        """Every thread's ``(id, owner)`` in id order after ``after``, whatever its owner or
        expiry: for maintenance such as key rotation, never for serving a client."""
        if after is not None:
            validate_thread_id(after)
        return await self._read(lambda: self.store.scan(after=after, limit=limit))

    async def reseal_thread(self, thread_id: str, *, owner: str | None) -> int | None:
        """Seal a stored thread's turns, summary and metadata under the newest encryption key (one
        read and at most one write); returns how many rows changed, or None when the
        thread is gone or expired. Its cached copies are dropped, so Redis no longer
        holds it under the old key.

        Raises:
            ConfigurationError: encryption is off.
            DecryptionError: part of the thread cannot be opened with the configured keys.
        """
        try:
            changed = await self._writes.reseal(thread_id, owner=owner)
        except DecryptionError:
            self._stats.decryption_errors += 1
            raise
        if changed:
            await self._cache.evict(thread_id)
        return changed

    async def forget_older_sealing_keys(self) -> None:
        """After a complete rotation: record that the store holds sealed data under the
        newest key only (one store round trip), so the older keys may be dropped."""
        await self._writes.forget_older_keys()

    async def purge_expired(self) -> int:
        """Delete every expired thread from the store; return how many."""
        return await self._write(self.store.purge_expired)

    async def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied."""
        return await self.store.migrate()

    async def ping(self) -> None:
        """Raise ``StoreError`` unless the store answers (within the store call deadline)."""
        await self._guard.run(self.store.ping)

    async def ping_cache(self) -> bool | None:
        """True if Redis answers, False if not, None when there is no L2 tier."""
        return await self._cache.ping_l2()

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters: hits per layer, store round trips, Redis health."""
        return replace(
            self._stats,
            **self._cache.gauges(),
            store_circuit_state=self._guard.state.value,
            store_timeouts=self._guard.timeouts,
            store_refused=self._guard.refused,
        )

    # -- helpers ---------------------------------------------------------------

    async def _read(self, call: Callable[[], Awaitable[T]]) -> T:
        return await self._counted(call, "store_reads")

    async def _write(self, call: Callable[[], Awaitable[T]]) -> T:
        return await self._counted(call, "store_writes")

    async def _counted(self, call: Callable[[], Awaitable[T]], counter: str) -> T:
        setattr(self._stats, counter, getattr(self._stats, counter) + 1)
        try:
            return await self._guard.run(call)
        except StoreError:
            self._stats.store_errors += 1
            raise
