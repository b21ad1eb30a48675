"""The cache protocol: L1 → L2 → store, coherent across instances (see DESIGN.md).

Read: L1 (if it may be trusted now) → L2 → store, one in-flight load per thread
and owner (single-flight); every copy is checked against the thread's watermark,
and results are installed upwards with set-if-newer. A stale L1 copy is brought up
to date with ``load_since``: the turns appended since, or the whole thread after a pop
or clear (turns never change once committed; they can only be removed).

Write (after the store committed, the only step that can fail the call): L2 is
changed in place (turns added or removed) or fenced and ``(id, version)`` is published,
in one Redis round trip (two on a cluster), L1 likewise, the watermark is raised, so the
next read anywhere is a hit or a fresh load.

Redis faults never fail a call: L2 is a ``GuardedL2`` (circuit breaker, replay of
the writes Redis missed, error accounting), every L2 failure degrades to the next
tier. Staleness is bounded by a ``Lease``: L1 and L2 are read only while this
instance has heard from Redis within the lease (and, after a break, for a whole
lease), unless it is the only instance; writes Redis missed are replayed in the
background every quarter lease until it takes them.

With encryption on (``sealing``), the store and L2 hold sealed copies; a copy is
opened once, when it is lifted into L1, which alone holds plaintext.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Literal, TypedDict, TypeVar, overload

from convmem.cache.bus import InvalidationListener
from convmem.cache.lease import Lease
from convmem.cache.protocol import CorruptPayload, L2Error
from convmem.cache.watermarks import Watermarks
from convmem.changes import DELETED, Deleted, InPlace, Moved, Whole, changed
from convmem.errors import DecryptionError, StoreError, ThreadNotFoundError
from convmem.sealing import NO_SEALING, Sealing
from convmem.stores.guard import StoreGuard

if TYPE_CHECKING:
    from convmem.cache.guard import GuardedL2
    from convmem.cache.local import LocalCache
    from convmem.models import Thread
    from convmem.stats import Stats
    from convmem.stores.base import Store

log = logging.getLogger("convmem.cache")
T = TypeVar("T")

Source = Literal["l1", "l2", "store"]  # where a read was served from


class CacheGauges(TypedDict):
    """The cache's state at a moment, as ``Stats`` reports it."""

    l1_items: int
    l1_bytes: int
    circuit_state: str
    pending_fences: int
    subscribed: bool
    cache_trusted: bool


class TieredCache:
    """The read/write protocol over L1, an optional guarded L2 and the store."""

    def __init__(
        self,
        store: Store,
        l1: LocalCache,
        stats: Stats,
        *,
        l2: GuardedL2 | None = None,
        single_instance: bool = False,
        strict: bool = False,
        watermark_items: int = 100_000,
        lease_seconds: float = 1.0,
        timer: Callable[[], float] = time.monotonic,
        guard: StoreGuard | None = None,
        sealing: Sealing = NO_SEALING,
        watch_unannounced: bool = False,
    ) -> None:
        self.store = store
        self.sealing = sealing
        self.guard = guard or StoreGuard(timer=timer)
        self.l1 = l1
        self.l2 = l2
        self.stats = stats
        self.single_instance = single_instance
        self.strict = strict
        self.lease = Lease(lease_seconds, timer=timer)
        self._run_id: str | None = None  # the Redis process we last subscribed to
        self.instance_id = l2.source if l2 is not None else uuid.uuid4().hex
        self.watermarks = Watermarks(watermark_items, on_forget=l1.discard)
        self._inflight: dict[
            tuple[str, str | None], asyncio.Future[tuple[Thread | None, Source]]
        ] = {}
        self._epoch = 0  # bumped when contact with Redis breaks or comes back
        self._listener: InvalidationListener | None = None
        if l2 is not None:
            self._listener = InvalidationListener(
                l2.bus,
                self.instance_id,
                on_message=self._invalidated,
                on_lost=self._subscription_lost,
                on_regained=self._subscription_regained,
                on_alive=self._alive,
            )
        self._replay: asyncio.Task[bool] | None = None
        self._replayer: asyncio.Task[None] | None = None
        # Other instances may write while cut off from Redis: read what they could not
        # announce from the store (see ``_watch_unannounced``).
        self.watching = l2 is not None and not single_instance and watch_unannounced
        self._watcher: asyncio.Task[None] | None = None

    # -- lifetime --------------------------------------------------------------

    async def start(self) -> None:
        if self._listener is not None:
            await self._listener.start()
        if self.l2 is not None:
            self._replayer = asyncio.create_task(self._replay_missed(), name="convmem-replay")
        if self.watching:
            self._watcher = asyncio.create_task(self._watch_unannounced(), name="convmem-watch")

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
        for task in (self._replayer, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._replay is not None:
            await asyncio.gather(self._replay, return_exceptions=True)

    def gauges(self) -> CacheGauges:
        """The cache's state now, by the ``Stats`` field each goes in."""
        l2 = self.l2
        return {
            "l1_items": len(self.l1),
            "l1_bytes": self.l1.bytes,
            "circuit_state": "closed" if l2 is None else l2.circuit_state,
            "pending_fences": 0 if l2 is None else l2.pending,
            "subscribed": self.subscribed,
            "cache_trusted": self.trusted(),
        }

    @property
    def subscribed(self) -> bool:
        return self._listener is not None and self._listener.subscribed

    def trusted(self) -> bool:
        """May cached copies (L1, and L2 when others write) be served now? See ``Lease``."""
        return self.l2 is None or self.single_instance or (self.subscribed and self.lease.valid())

    def _in_contact(self) -> bool:
        return self.subscribed and self.lease.fresh()

    def known_version(self, thread_id: str) -> int:
        """The newest version of the thread this instance wrote, served or was told of
        (0 for none, or a deleted thread): what a writer seals its turns' seqs after."""
        mark = self.watermarks.get(thread_id)
        return 0 if mark >= DELETED else mark

    def outdated(self, thread_id: str, version: int) -> None:
        """The store says the thread is at ``version``: no older copy is served from now on."""
        self.watermarks.raise_to(thread_id, version)

    def known_keys(self, thread_id: str, newest: int) -> dict[str, int]:
        """The key and seq of each keyed turn among the ``newest`` turns of this
        instance's copy of the thread (none without one)."""
        copy = self.l1.get(thread_id)
        if copy is None:
            return {}
        return {t.key: t.seq for t in copy.turns[-newest:] if t.key is not None}

    # -- reads -----------------------------------------------------------------

    async def get(self, thread_id: str, owner: str | None) -> Thread | None:
        thread, _ = await self.lookup(thread_id, owner)
        return thread

    async def lookup(self, thread_id: str, owner: str | None) -> tuple[Thread | None, Source]:
        """The thread and where it came from: ``l1``, ``l2`` or ``store``."""
        trusted = self.trusted()
        if trusted:
            copy = self.l1.get(thread_id)
            if (
                copy is not None
                and self._fresh_in_l1(copy)
                and (not self.strict or await self._confirmed_by_l2(copy))
            ):
                self.stats.l1_hits += 1
                log.debug("CACHE HIT l1 thread=%s version=%d", thread_id, copy.version)
                return (copy if copy.owner == owner else None), "l1"
        self.stats.l1_misses += 1
        key = (thread_id, owner)
        inflight = self._inflight.get(key)
        if inflight is not None:
            self.stats.single_flight_joins += 1
            return await asyncio.shield(inflight)
        future: asyncio.Future[tuple[Thread | None, Source]] = (
            asyncio.get_running_loop().create_future()
        )
        self._inflight[key] = future
        try:
            found = await self._fetch(thread_id, owner, trusted)
            future.set_result(found)
            return found
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: joiners re-raise it, none may be waiting
            raise
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]

    def _fresh_in_l1(self, copy: Thread) -> bool:
        """Not expired and not below the watermark; serving it raises the watermark."""
        if copy.is_expired(self.store.clock()):
            self.l1.discard(copy.id)
            return False
        mark = self.watermarks.get(copy.id)
        if copy.version < mark:
            self.stats.stale_rejections += 1
            return False
        if copy.version > mark:
            self.watermarks.raise_to(copy.id, copy.version)
        return True

    async def _confirmed_by_l2(self, copy: Thread) -> bool:
        """Strict mode: L2 knows of no newer version (one Redis round trip)."""
        if self.l2 is None:
            return True
        newest = await _l2(self.l2.version(copy.id))
        if newest is None:  # L2 unreachable: strict mode does not trust L1 blindly
            return self.single_instance
        if newest > copy.version:
            self.watermarks.raise_to(copy.id, newest)
            self.stats.stale_rejections += 1
            return False
        return True

    async def _fetch(
        self, thread_id: str, owner: str | None, trusted: bool
    ) -> tuple[Thread | None, Source]:
        """L2 (when trusted), then the store; install upwards. Runs once per in-flight key."""
        epoch = self._epoch
        now = self.store.clock()
        mark = self.watermarks.get(thread_id)
        if self.l2 is not None and trusted:
            copy = await self._l2_get(thread_id)
            if copy is not None and copy.version >= mark and not copy.is_expired(now):
                self.stats.l2_hits += 1
                log.debug("CACHE HIT l2 thread=%s version=%d", thread_id, copy.version)
                self._install_l1(copy, epoch)
                return (copy if copy.owner == owner else None), "l2"
            self.stats.l2_misses += 1
        self.stats.misses += 1
        thread, stored = await self._load(thread_id, owner)
        log.debug("CACHE MISS thread=%s version=%s", thread_id, thread.version if thread else None)
        if thread is None:
            return None, "store"
        self._install_l1(thread, epoch)
        # A copy read before contact with Redis broke or came back may predate a write
        # Redis has not been told of yet (or a fence it lost in a restart): not installed;
        # nor while Redis is silent (it may be hung: no call waits for it).
        if (
            self.l2 is not None
            and stored is not None
            and epoch == self._epoch
            and (trusted or self._in_contact())
        ):
            await _l2(self.l2.install(stored, now))
        return thread, "store"

    async def _load(self, thread_id: str, owner: str | None) -> tuple[Thread | None, Thread | None]:
        """From the store: only the missing turns when an older copy is at hand.

        Returns the thread and the copy L2 may take: the sealed copy as stored, or None
        after a sealed delta refresh (sealing the whole thread again to install it would
        cost a cipher call per turn; the writer already brought L2 up to date).
        """
        self.stats.store_reads += 1
        base = self.l1.get(thread_id)
        if base is not None and base.owner == owner:
            delta = await self._store(
                lambda: self.store.load_since(thread_id, base.version, owner=owner)
            )
            if delta is None:
                self.l1.discard(thread_id)
                return None, None
            self.stats.delta_refreshes += 1
            thread = self._opened(thread_id, lambda: delta.opened(self.sealing)).applied_to(base)
            return thread, (None if self.sealing.encrypts else thread)
        stored = await self._store(lambda: self.store.load(thread_id, owner=owner))
        if stored is None:
            return None, None
        return self._opened(thread_id, lambda: self.sealing.open_thread(stored)), stored

    def _opened(self, thread_id: str, opening: Callable[[], T]) -> T:
        """Open what the store returned; a thread that cannot be opened is counted."""
        try:
            return opening()
        except DecryptionError as exc:
            self.stats.decryption_errors += 1
            log.error("thread %s cannot be decrypted: %s", thread_id, exc)
            raise

    async def _l2_get(self, thread_id: str) -> Thread | None:
        assert self.l2 is not None
        try:
            copy = await _l2(self.l2.get(thread_id))
            return None if copy is None else self.sealing.open_thread(copy)
        except (CorruptPayload, DecryptionError) as exc:
            self.stats.l2_corrupt += 1
            log.warning("corrupt L2 value for thread %s dropped: %s", thread_id, exc)
            await _l2(self.l2.drop(thread_id))
            return None

    def _install_l1(self, thread: Thread, epoch: int) -> None:
        self.watermarks.raise_to(thread.id, thread.version)
        # A copy read before the subscription changed may have missed an invalidation.
        if epoch == self._epoch:
            self.l1.put(thread)

    # -- writes ----------------------------------------------------------------

    @overload
    async def committed(self, change: Deleted, owner: str | None) -> None: ...
    @overload
    async def committed(self, change: InPlace | Whole, owner: str | None) -> Thread: ...
    async def committed(
        self, change: InPlace | Whole | Deleted, owner: str | None
    ) -> Thread | None:
        """Bring every tier up to a change the store committed; return the whole thread
        as it now is (None once deleted).

        Nothing older than the change is served from now on (the watermark); L2 follows it
        in place at the writer's base version, else is fenced, and hears it announced
        (``L2Tier.apply``, given the state L1's copy at that base says it leaves); L1's
        copy follows it in place where it was the base, else the thread is read through
        the tiers.
        """
        thread_id = change.thread_id
        told = changed(change)  # an empty pop changed nothing and tells no one
        if told:
            self._committed(thread_id, change.version, owner)
        cached, epoch = self.l1.get(thread_id), self._epoch
        at_base: tuple[InPlace, Thread] | None = None  # the change, and L1's copy at its base
        if (
            isinstance(change, InPlace)
            and cached is not None
            and cached.version == change.base_version
        ):
            at_base = (change, cached)
        if isinstance(change, Deleted):
            self.l1.discard(thread_id)
        if self.l2 is not None and told:
            after = None if at_base is None else at_base[0].state_after(at_base[1])
            # A failure here is remembered by the guard and replayed to Redis.
            outcome = await _l2(self.l2.apply(change, self.store.clock(), after=after))
            if outcome is None and self.watching:
                # Others may still trust their copies (a partition cuts only us off):
                # the store tells them, before this write is acknowledged.
                await self._store(lambda: self.store.record_unannounced(thread_id, change.version))
                self.stats.unannounced_recorded += 1
        if isinstance(change, Deleted):
            return None
        if isinstance(change, Whole):
            thread = self._opened(thread_id, lambda: change.opened(self.sealing)).thread
            self._install_l1(thread, epoch)
            return thread
        if at_base is not None:
            in_place, base = at_base
            opened = self._opened(thread_id, lambda: in_place.opened(self.sealing))
            revised = opened.applied_to(base)
            if revised is not None:
                # Contact with Redis broke or came back meanwhile: keep L1 out of it.
                if epoch == self._epoch:
                    self.l1.put(revised, base=base)
                return revised
        return await self._after_write(thread_id, owner)

    def _committed(self, thread_id: str, version: int, owner: str | None) -> None:
        """A write committed ``version``: nothing older may be served from now on, and a
        load begun before the commit is stale."""
        self.watermarks.raise_to(thread_id, version)
        self._inflight.pop((thread_id, owner), None)

    async def _after_write(self, thread_id: str, owner: str | None) -> Thread:
        """The thread after a write whose L1 copy was not its base: read through the tiers."""
        thread = await self.get(thread_id, owner)
        if thread is None:  # deleted right after the write
            raise ThreadNotFoundError(f"no thread {thread_id}", thread_id=thread_id)
        return thread

    @contextlib.asynccontextmanager
    async def claimed(self, name: str, thread_id: str, ttl_seconds: float) -> AsyncIterator[bool]:
        """Hold the claim ``name`` on a thread across instances while inside (True), or
        learn that another instance holds it (False). Without Redis, or when it fails,
        there is no one to ask: True (callers keep a store-side condition too)."""
        if self.l2 is None:
            yield True
            return
        token = uuid.uuid4().hex
        taken = await _l2(self.l2.claims.take(name, thread_id, token, ttl_seconds))
        try:
            yield taken is not False
        finally:
            if taken:
                await _l2(self.l2.claims.release(name, thread_id, token))

    async def evict(self, thread_id: str, *, local_only: bool = False) -> None:
        """Forget the cached copies of a thread (here and in L2); not a write: fences stay."""
        self.l1.discard(thread_id)
        if self.l2 is not None and not local_only:
            await _l2(self.l2.drop(thread_id))

    # -- invalidations -----------------------------------------------------------

    def _invalidated(self, thread_id: str, version: int) -> None:
        self.stats.invalidations_received += 1
        self.watermarks.raise_to(thread_id, version)
        if version == DELETED:
            self.l1.discard(thread_id)
        # An older L1 copy stays as the base of a delta refresh; the watermark keeps
        # it from being served.

    def _subscription_lost(self) -> None:
        self.lease.lost()
        self._forget_l1()

    def _alive(self, age: float) -> None:
        if self.lease.heard(age):  # a silence longer than the lease just ended
            self.stats.lease_lapses += 1
            log.warning("no answer from Redis for more than the lease; L1 dropped")
            self._forget_l1()

    def _subscription_regained(self, run_id: str, age: float) -> None:
        if self._run_id is not None and run_id != self._run_id:
            self.stats.redis_restarts += 1
            log.warning(
                "Redis restarted (run id %s, was %s): its fences are gone", run_id, self._run_id
            )
        self._run_id = run_id
        self.lease.heard(age)
        self._forget_l1()
        # Redis answers again: replay the writes it missed now, not at the next L2 call.
        if (
            self.l2 is not None
            and not self.l2.healthy
            and (self._replay is None or self._replay.done())
        ):
            self._replay = asyncio.get_running_loop().create_task(self.l2.replay())

    def _forget_l1(self) -> None:
        """Copies read while we could not hear of other writers may be stale: drop them."""
        self._epoch += 1  # and keep copies read before now out of L2
        if not self.single_instance:  # (alone, no other writer: L1 stays valid)
            self.l1.clear()

    async def _replay_missed(self) -> None:
        """Retry the writes Redis missed every quarter lease until it takes them, so an
        idle writer's announcement still arrives within the lease of Redis coming back."""
        assert self.l2 is not None
        while True:
            await asyncio.sleep(self.lease.length / 4)
            if self.l2.pending:
                await self.l2.replay()

    async def _watch_unannounced(self) -> None:
        """Every quarter lease, the writes other instances recorded as unannounced (they
        were cut off from Redis while this instance was not): nothing older than them is
        served here from then on, and those not fenced yet are fenced and announced
        through this instance's Redis, so every instance hears of them. A write recorded
        before it was acknowledged is seen here within a quarter lease and a round trip:
        the staleness bound holds under a partition too. A failed read is tried again at
        the next quarter (an instance cut off from the store hears of the others'
        writes through Redis: under one partition, they could announce them)."""
        while True:
            await asyncio.sleep(self.lease.length / 4)
            try:
                await self.read_unannounced()
            except Exception:  # a bug must not stop the watch for the process's life
                log.exception("reading the unannounced writes failed; trying again")

    async def read_unannounced(self) -> None:
        """One read of the unannounced writes (``_watch_unannounced``)."""
        assert self.l2 is not None
        try:
            found = await self.guard.run(
                lambda: self.store.unannounced(fenced_within=2 * self.lease.length)
            )
        except StoreError:
            self.stats.watch_failures += 1
            return
        finally:
            self.stats.watch_reads += 1
        fenced: list[tuple[str, int]] = []
        for thread_id, version, done in found:
            self.watermarks.raise_to(thread_id, version)
            if version >= DELETED:
                self.l1.discard(thread_id)
            if not done and self._in_contact():  # (else it would only wait for replay)
                moved = Moved(thread_id, version)
                if await _l2(self.l2.apply(moved, self.store.clock())) is not None:
                    fenced.append((thread_id, version))
        if fenced:
            with contextlib.suppress(StoreError):
                await self.guard.run(lambda: self.store.mark_fenced(fenced))
            self.stats.unannounced_fenced += len(fenced)

    async def ping_l2(self) -> bool | None:
        """True if L2 answers now, False if not, None without an L2 tier (no breaker)."""
        if self.l2 is None:
            return None
        try:
            await self.l2.tier.ping()
        except L2Error:
            return False
        return True

    async def _store(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await self.guard.run(call)
        except StoreError:
            self.stats.store_errors += 1
            raise


async def _l2(call: Awaitable[T]) -> T | None:
    """An L2 call whose failure degrades to the next tier (the guard counted and logged it)."""
    try:
        return await call
    except L2Error:
        return None
