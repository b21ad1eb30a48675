"""What a compaction summary stands for: the newest summary along a thread's chain and
the turns after it, which is what models are shown (``messages``, ``history``) and what
compaction folds next (``compaction``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from convmem.models import Thread, Turn


@dataclass(frozen=True, slots=True)
class Unsummarised:
    """What of a conversation a model is shown: the summary standing for everything
    before ``turns`` (None: there is none), then ``turns``, oldest first, the last
    ``own`` of them the thread's own (the others its ancestors')."""

    summary: Turn | None
    turns: tuple[Turn, ...]
    own: int
    summarised: int  # how many turns the summary stands for


def unsummarised(thread: Thread, ancestors: Sequence[Thread] = ()) -> Unsummarised:
    """The newest summary along the chain (each ancestor is already cut at its child's
    fork point, see ``Memory.get_ancestors``) and the turns after it."""
    summary: Turn | None = None
    turns: list[Turn] = []
    total = 0
    for owner in (*ancestors, thread):
        total += len(owner.turns)
        if owner.summary is None:
            turns.extend(owner.turns)
        else:
            summary = owner.summary
            turns = [t for t in owner.turns if t.seq > summary.seq]
    own = sum(1 for t in thread.turns if t.seq > thread.summarised_through)
    return Unsummarised(summary, tuple(turns), min(own, len(turns)), total - len(turns))
