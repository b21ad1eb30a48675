"""What the cache and ``Memory`` need of encryption at rest, and the no-op default.

Sealing sits between the model and everything below L1 (DESIGN.md): turns and thread
metadata are sealed once before they reach the store, the store and L2 keep them
sealed, and they are opened once when a copy is lifted into L1, which holds plaintext.
Without encryption the sealing is the identity (``NO_SEALING``), so the cache has one
code path. ``convmem.encryption.Encryption`` is the real one; this module imports no
cipher, so ``import convmem`` does not need the ``encryption`` extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from convmem.models import Thread, ThreadSummary, Turn


class Sealing(Protocol):
    @property
    def encrypts(self) -> bool:
        """False for the identity: a sealed copy is then also a plaintext one."""
        ...

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids of the keys it opens, the one it seals with first; none for the identity."""
        ...

    def seal_turns(
        self, thread_id: str, turns: Sequence[Turn], *, first_seq: int
    ) -> Sequence[Turn]:
        """``turns`` sealed for the seqs ``first_seq, first_seq + 1, ...``: the store must
        put them there (``seqs_bound``); the identity leaves them as they are."""
        ...

    def seal_turns_at(
        self, thread_id: str, turns: Sequence[Turn], seqs: Sequence[int]
    ) -> Sequence[Turn]:
        """``turns`` sealed for ``seqs``, one each; as ``seal_turns`` otherwise."""
        ...

    def seal_summary(self, thread_id: str, summary: Turn, *, covers_to_seq: int) -> Turn: ...
    def seal_metadata(self, thread_id: str, metadata: Mapping[str, Any]) -> Mapping[str, Any]: ...
    def open_turns(self, thread_id: str, turns: Sequence[Turn]) -> tuple[Turn, ...]: ...
    def open_summary_turn(self, thread_id: str, summary: Turn) -> Turn: ...
    def open_metadata(self, thread_id: str, metadata: Mapping[str, Any]) -> Mapping[str, Any]: ...
    def open_thread(self, thread: Thread) -> Thread: ...
    def open_summary(self, summary: ThreadSummary) -> ThreadSummary: ...
    def reseal_turn(self, thread_id: str, turn: Turn, *, summary: bool = False) -> Turn | None:
        """The stored turn sealed under the current key; None when nothing is to do."""
        ...

    def reseal_metadata(
        self, thread_id: str, metadata: Mapping[str, Any]
    ) -> Mapping[str, Any] | None: ...


class _NoSealing:
    """Encryption off: everything passes through unchanged."""

    encrypts = False
    key_ids: tuple[str, ...] = ()

    def seal_turns(
        self, thread_id: str, turns: Sequence[Turn], *, first_seq: int
    ) -> Sequence[Turn]:
        return turns

    def seal_turns_at(
        self, thread_id: str, turns: Sequence[Turn], seqs: Sequence[int]
    ) -> Sequence[Turn]:
        return turns

    def seal_summary(self, thread_id: str, summary: Turn, *, covers_to_seq: int) -> Turn:
        return summary

    def seal_metadata(self, thread_id: str, metadata: Mapping[str, Any]) -> Mapping[str, Any]:
        return metadata

    def open_turns(self, thread_id: str, turns: Sequence[Turn]) -> tuple[Turn, ...]:
        return tuple(turns)

    def open_summary_turn(self, thread_id: str, summary: Turn) -> Turn:
        return summary

    def open_metadata(self, thread_id: str, metadata: Mapping[str, Any]) -> Mapping[str, Any]:
        return metadata

    def open_thread(self, thread: Thread) -> Thread:
        return thread

    def open_summary(self, summary: ThreadSummary) -> ThreadSummary:
        return summary

    def reseal_turn(self, thread_id: str, turn: Turn, *, summary: bool = False) -> Turn | None:
        return None

    def reseal_metadata(
        self, thread_id: str, metadata: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        return None


NO_SEALING: Final[Sealing] = _NoSealing()
