"""``ConvmemStorage``: pal's storage interface (``get``, ``setex``, ``set_with_ttl``,
``shutdown``) on a ``Memory``, synchronous and thread-safe.

- ``get`` reads through convmem's cache: no store round trip when the thread is warm.
- ``setex`` compares the incoming thread with the stored one and appends only the new
  turns, in one store round trip (a brand-new thread is one create); a repeated set of
  the same JSON writes nothing. A set that does not extend the stored thread (an edited
  earlier turn or header) replaces the turns after the ones they agree on, atomically
  (``Memory.rewrite_thread``: one round trip), and is logged; one that names another
  tool or parent thread is refused, the stored thread unchanged.
- Every call ends within ``timeout_seconds`` or raises ``PalStorageError``, which pal
  logs as a storage fault.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

from convmem.errors import ConvMemError, InvalidPalContextError, PalStorageError
from convmem.integrations.pal import mapping
from convmem.integrations.pal.loop import LoopThread

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from convmem.memory import Memory

log = logging.getLogger("convmem.pal")

KEY = re.compile(r"thread:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


class ConvmemStorage:
    def __init__(
        self, memory: Memory, *, owner: str | None = None, timeout_seconds: float = 30.0
    ) -> None:
        """Opens ``memory`` on a loop of its own (and closes it on ``shutdown``)."""
        self._memory = memory
        self._owner = owner
        self._timeout = timeout_seconds
        self._loop = LoopThread("convmem-pal")
        self._warned_ttl = False
        self._closed = False
        self._run(memory.open(), "opening convmem's store")

    def get(self, key: str) -> str | None:
        thread_id = _thread_id(key)
        thread = self._run(self._memory.get_thread(thread_id, owner=self._owner), f"get {key}")
        if thread is None:
            return None
        if not mapping.written_by_pal(thread):
            # A conversation of convmem's own tools: pal cannot continue it, as if unknown.
            log.warning("thread %s was not written through pal: not given to pal", thread_id)
            return None
        return _dump(mapping.to_context(thread))

    def setex(self, key: str, ttl_seconds: int, value: str) -> None:
        thread_id = _thread_id(key)
        try:
            context = mapping.parse_context(value, thread_id)
        except InvalidPalContextError as exc:
            raise PalStorageError(f"set {key}: {exc}; nothing was written") from None
        self._note_ttl(ttl_seconds)
        self._run(self._save(thread_id, context), f"set {key}")

    def set_with_ttl(self, key: str, ttl_seconds: int, value: str) -> None:
        self.setex(key, ttl_seconds, value)

    def shutdown(self) -> None:
        """Close the Memory and stop its loop; a second call does nothing."""
        if self._closed:
            return
        try:
            self._run(self._memory.aclose(), "closing convmem's store")
        finally:
            self._closed = True
            self._loop.stop()

    async def _save(self, thread_id: str, context: dict[str, Any]) -> None:
        memory = self._memory
        stored = await memory.get_thread(thread_id, owner=self._owner)
        pal_turns: list[dict[str, Any]] = context["turns"]
        last_updated_at: str = context["last_updated_at"]
        if stored is None:
            await memory.create_thread(
                thread_id=thread_id,
                tool_name=context["tool_name"],
                parent_id=context.get("parent_thread_id"),
                metadata=mapping.thread_metadata(context),
                turns=mapping.to_turns(pal_turns, first_index=0, last_updated_at=last_updated_at),
                owner=self._owner,
            )
            return
        current = mapping.to_context(stored)
        if context == current:
            return  # the same thread again: nothing to write
        if not mapping.same_conversation(context, current):
            log.warning("pal set of thread %s names another tool or parent: refused", thread_id)
            raise PalStorageError(
                f"thread {thread_id}: the new value names another tool or parent thread than"
                " the stored one; the stored thread is unchanged"
            )
        known = current["turns"]
        agreed = mapping.agreed_turns(pal_turns, known)
        same_header = mapping.same_header(context, current)
        if same_header and agreed == len(known):  # an extension: append the new turns
            new = pal_turns[agreed:]
            if new:
                turns = mapping.to_turns(new, first_index=agreed, last_updated_at=last_updated_at)
                await memory.add_turns(thread_id, turns, owner=self._owner)
            return
        # Not an extension (pal never does this; a fork of pal might): replace the turns
        # after the agreed ones, and the header, in one atomic write. At least the last
        # turn is written again, as it carries the thread's last_updated_at.
        agreed = min(agreed, max(len(pal_turns) - 1, 0))
        log.warning(
            "pal set of thread %s does not extend the stored thread: its turns after turn"
            " %d replaced",
            thread_id,
            agreed,
        )
        await memory.rewrite_thread(
            thread_id,
            mapping.to_turns(
                pal_turns[agreed:], first_index=agreed, last_updated_at=last_updated_at
            ),
            after_seq=stored.turns[agreed - 1].seq if agreed else 0,
            owner=self._owner,
            metadata=None if same_header else mapping.thread_metadata(context),
        )

    def _run(self, coroutine: Coroutine[Any, Any, Any], what: str) -> Any:
        if self._closed:
            coroutine.close()
            raise PalStorageError(f"{what}: this storage was shut down")
        try:
            return self._loop.run(coroutine, timeout=self._timeout, what=what)
        except TimeoutError as exc:
            log.error("convmem: %s", exc)
            raise PalStorageError(f"{exc}: the store or Redis did not answer in time") from exc
        except ConvMemError as exc:
            log.error("convmem: %s failed: %s", what, exc)
            raise PalStorageError(f"{what} failed: {exc}") from exc

    def _note_ttl(self, ttl_seconds: int) -> None:
        """pal's TTL and convmem's sliding expiry are one idea; say so once if they differ."""
        configured = self._memory.thread_ttl.total_seconds()
        if not self._warned_ttl and int(configured) != int(ttl_seconds):
            self._warned_ttl = True
            log.warning(
                "pal asks for a %d s TTL; convmem expires threads %d s after their last "
                "turn (CONVMEM_THREAD_TTL_HOURS)",
                ttl_seconds,
                configured,
            )


def _thread_id(key: str) -> str:
    match = KEY.fullmatch(key) if isinstance(key, str) else None
    if match is None:
        raise PalStorageError(
            f"key {key!r} is not pal's thread:{{uuid}}: convmem keeps pal's conversation "
            "threads only"
        )
    return match.group(1)


def _dump(context: dict[str, Any]) -> str:
    """pal's own serialisation of the thread when pal is importable (what pal wrote is
    what it reads back, byte for byte); compact JSON otherwise."""
    try:
        from utils.conversation_memory import ThreadContext
    except ImportError:
        return json.dumps(context, separators=(",", ":"), ensure_ascii=False)
    dumped: str = ThreadContext.model_validate(context).model_dump_json()
    return dumped
