"""What every store shares that is not SQL: refusal messages, paging, append results.

SQLite writes its semantics in Python, PostgreSQL and Supabase in SQL functions; the
words a caller reads and the shape of what comes back are the same for all three
because they come from here.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from convmem.errors import (
    IdempotencyConflictError,
    InvalidInputError,
    SeqTakenError,
    StaleSummaryError,
    StaleUpdateError,
    ThreadExistsError,
    ThreadExpiredError,
    ThreadFullError,
    ThreadNotFoundError,
    TurnNotFoundError,
)
from convmem.models import ThreadPage, ThreadSummary
from convmem.records import from_micros, stored_turn, to_micros
from convmem.validation import validate_thread_id

if TYPE_CHECKING:
    from convmem.models import Turn

MAX_PAGE = 1000


# -- refusals -------------------------------------------------------------------


def not_found(thread_id: str) -> ThreadNotFoundError:
    return ThreadNotFoundError(
        f"no thread {thread_id} (unknown, deleted, or another owner's)", thread_id=thread_id
    )


def expired(thread_id: str) -> ThreadExpiredError:
    return ThreadExpiredError(
        f"thread {thread_id} has expired: start a new thread", thread_id=thread_id
    )


def exists(thread_id: str) -> ThreadExistsError:
    return ThreadExistsError(f"a thread with id {thread_id} already exists", thread_id=thread_id)


def full(thread_id: str, *, version: int, fresh: int, max_turns: int) -> ThreadFullError:
    """The thread holds ``version`` turns and ``fresh`` more would pass ``max_turns``."""
    if version == 0:
        message = f"a thread holds at most {max_turns} turns; {fresh} were given"
    else:
        message = (
            f"thread {thread_id} has {version} of at most {max_turns} turns; "
            f"{fresh} more do not fit: start a new thread"
        )
    return ThreadFullError(message, thread_id=thread_id, max_turns=max_turns)


def no_turn(thread_id: str, seq: int) -> TurnNotFoundError:
    return TurnNotFoundError(
        f"thread {thread_id} has no turn {seq} (never had one, or it was removed): fork at"
        " the seq of one of its turns, at 0 for none of them, or omit it for the newest"
    )


def stale_summary(thread_id: str, covers: int) -> StaleSummaryError:
    return StaleSummaryError(
        f"a summary of thread {thread_id} through turn {covers} no longer fits it (a pop,"
        " a clear or another summary came after the version it was made from, or it has no"
        " such turn): summarise its current version again",
        thread_id=thread_id,
    )


def stale_update(thread_id: str, version: int) -> StaleUpdateError:
    return StaleUpdateError(
        f"thread {thread_id} is at version {version}: another write came after the version"
        " its metadata was read at; read it again and make the change on that",
        thread_id=thread_id,
        version=version,
    )


def seq_taken(thread_id: str, version: int) -> SeqTakenError:
    return SeqTakenError(
        f"thread {thread_id} is at version {version}: the turns were sealed for seqs another"
        " write took first; seal them for the seqs after it and send them again",
        thread_id=thread_id,
        version=version,
    )


def check_seqs(thread_id: str, fresh: Sequence[Turn], *, first: int, version: int) -> None:
    """Turns sealed for their seqs (``seqs_bound``) land at ``first, first + 1, ...`` of a
    thread at ``version``, or not at all: any other seq means another write came first."""
    for place, turn in enumerate(fresh):
        if turn.seq != first + place:
            raise seq_taken(thread_id, version)


def key_conflict(thread_id: str, key: str | None) -> IdempotencyConflictError:
    return IdempotencyConflictError(
        f"turn key {key!r} is already used in thread {thread_id} by a turn with another "
        "role or content; a retry must resend the same turn, a new turn needs a new key"
    )


# -- paging ---------------------------------------------------------------------


def check_list_limit(limit: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError(f"limit must be an integer from 1 to {MAX_PAGE}, got {limit!r}")


def encode_cursor(updated_at: datetime, thread_id: str) -> str:
    """An opaque listing cursor: the sort key of the last thread on a page."""
    raw = f"{to_micros(updated_at)}:{thread_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of ``encode_cursor``; a cursor that was not made by it is an input error
    (never a driver's: its time must be one a store keeps, its id a canonical UUID)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        micros_text, thread_id = raw.split(":", 1)
        after = from_micros(int(micros_text))
        validate_thread_id(thread_id)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise InvalidInputError(
            "invalid listing cursor: pass the next_cursor of a previous page unchanged"
        ) from None
    return after, thread_id


def page_of(summaries: Sequence[ThreadSummary], limit: int) -> ThreadPage:
    """A page from ``limit + 1`` fetched summaries: the extra one says there is more."""
    shown = tuple(summaries[:limit])
    last = shown[-1] if len(summaries) > limit else None
    return ThreadPage(shown, encode_cursor(last.updated_at, last.id) if last else None)


# -- appends --------------------------------------------------------------------


def appended_turns(
    requested: Sequence[Turn], existing: Sequence[Turn], *, base: int, now: datetime
) -> tuple[Turn, ...]:
    """The turns of an append as stored, in request order.

    A turn whose key was stored already is that stored turn (the retry inserted
    nothing); every other turn was inserted, in request order, at ``base + 1, ...``,
    at ``now``. Every store numbers fresh turns this way, so none has to send them back.
    """
    known = {t.key: t for t in existing}
    seq = base
    stored: list[Turn] = []
    for turn in requested:
        prior = known.get(turn.key) if turn.key is not None else None
        if prior is None:
            seq += 1
            prior = stored_turn(turn, seq, now)
        stored.append(prior)
    return tuple(stored)
