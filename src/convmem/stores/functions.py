"""The SQL core of PostgreSQL and Supabase: each store call is one SQL function.

The functions live in ``migrations/postgres/schema.sql``; they hold every write's
semantics (owner scoping, expiry, the turn limit, idempotency by key, ``seq``
numbering). ``FunctionStore`` turns the contract into calls of them and their result
rows into ``Thread``/``Turn``; a subclass supplies only the transport: ``PostgresStore``
runs one SQL statement per call, ``SupabaseStore`` one RPC through the REST gateway.

A function's rows follow ``ROW_FIELDS`` (the ``convmem_row`` type): a header row
(``seq`` is None) first, then one row per turn; a load also sends the thread's summary
as a turn row whose ``version`` is set. Refusals arrive as SQLSTATEs, mapped by
``refusal`` to the errors SQLite raises, with the same messages (``stores.common``).
"""

from __future__ import annotations

import uuid
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import orjson

from convmem.changes import Appended, Created, Deleted, Removed, Replaced, Summarised, Updated
from convmem.errors import ThreadExistsError
from convmem.models import Thread, ThreadPage, ThreadSummary, Turn, turn_from_storage
from convmem.records import (
    TURN_COLUMNS,
    stored_turn,
    summary_from_values,
    thread_from_values,
    turn_params,
)
from convmem.stores import common
from convmem.stores.base import MetadataSwap, NewThread, Resealed, SnapshotStore, Unannounced
from convmem.validation import (
    validate_count,
    validate_fork_point,
    validate_seq_or_zero,
    validate_summary_point,
)

if TYPE_CHECKING:
    from convmem.errors import ConvMemError

# The columns of convmem_row, in order: a turn's, then the header row's own.
HEADER_ONLY: Final = (
    "id",
    "version",
    "parent_id",
    "owner",
    "updated_at",
    "expires_at",
    "inserted",
    "parent_seq",
    "whole",
    "removed",
    "turn_count",
)
ROW_FIELDS: Final = (*TURN_COLUMNS, *HEADER_ONLY)
TIME_FIELDS: Final = frozenset({"created_at", "updated_at", "expires_at"})
_TURN_WIDTH: Final = len(TURN_COLUMNS)
_INDEX = {name: i for i, name in enumerate(ROW_FIELDS)}

# A REST retry record younger than this may still be read by a retry; reseal keeps it.
RETRY_RECORD_AGE: Final = timedelta(minutes=1)

Row = Sequence[Any]  # one convmem_row, values in ROW_FIELDS order, times as aware datetimes


@dataclass(frozen=True, slots=True)
class Call:
    """One call of a convmem SQL function with named arguments."""

    function: str
    args: dict[str, Any]
    returns_rows: bool = True  # SETOF convmem_row; otherwise one scalar value


class FunctionStore(SnapshotStore):
    """A store whose every call is one SQL function call; subclasses are transports."""

    # Writes carry a request id whose result the function records, for transports that
    # retry a request whose answer was lost (HTTP); a SQL session does not.
    records_requests: bool = False

    @abstractmethod
    async def _rows(self, call: Call, *, thread_id: str = "") -> list[Row]:
        """Run ``call`` (one round trip) and return its rows; raise convmem's errors."""

    @abstractmethod
    async def _value(self, call: Call) -> Any:
        """Run ``call`` (one round trip) and return its scalar result."""

    # -- reads -----------------------------------------------------------------

    async def _read(
        self, thread_id: str, owner: str | None, since: int
    ) -> tuple[dict[str, Any], tuple[Turn, ...]] | None:
        call = Call(
            "convmem_load",
            {"p_id": thread_id, "p_owner": owner, "p_since": since, "p_now": self.clock()},
        )
        rows = await self._rows(call, thread_id=thread_id)
        if not rows:
            return None
        header = header_of(rows[0])
        turns, header["summary"] = loaded_turns(rows)
        return header, turns

    async def list(
        self, *, owner: str | None, limit: int = 50, cursor: str | None = None
    ) -> ThreadPage:
        return await self._page("convmem_list", {"p_owner": owner}, limit, cursor)

    async def list_every_owner(self, *, limit: int = 50, cursor: str | None = None) -> ThreadPage:
        return await self._page("convmem_list_every_owner", {}, limit, cursor)

    async def find_any_owner(self, thread_id: str) -> ThreadSummary | None:
        rows = await self._rows(
            Call("convmem_find_any_owner", {"p_id": thread_id, "p_now": self.clock()}),
            thread_id=thread_id,
        )
        return summary_of(rows[0]) if rows else None

    async def _page(
        self, function: str, args: dict[str, Any], limit: int, cursor: str | None
    ) -> ThreadPage:
        common.check_list_limit(limit)
        after_at, after_id = common.decode_cursor(cursor) if cursor is not None else (None, None)
        rows = await self._rows(
            Call(
                function,
                {
                    **args,
                    "p_now": self.clock(),
                    "p_limit": limit + 1,
                    "p_after_at": after_at,
                    "p_after_id": after_id,
                },
            )
        )
        return common.page_of([summary_of(row) for row in rows], limit)

    # -- writes ----------------------------------------------------------------

    async def create(self, thread: NewThread, turns: Sequence[Turn] = ()) -> Created:
        now = self.clock()
        rows = await self._rows(
            Call(
                "convmem_create",
                {
                    "p_id": thread.id,
                    "p_tool_name": thread.tool_name,
                    "p_parent_id": thread.parent_id,
                    "p_owner": thread.owner,
                    "p_metadata": dict(thread.metadata),
                    "p_turns": turns_argument(turns),
                    "p_now": now,
                    "p_ttl_seconds": self.limits.ttl.total_seconds(),
                    "p_max_turns": self.limits.max_turns,
                    "p_request_id": self._request_id(),
                },
            ),
            thread_id=thread.id,
        )
        header = header_of(rows[0])
        stored = tuple(
            stored_turn(turn, seq, header["created_at"]) for seq, turn in enumerate(turns, 1)
        )
        return Created(thread_from_values(header, stored))

    async def append(
        self,
        thread_id: str,
        turns: Sequence[Turn],
        *,
        owner: str | None,
        seqs_bound: bool = False,
    ) -> Appended:
        rows = await self._rows(
            Call(
                "convmem_append",
                {
                    "p_id": thread_id,
                    "p_owner": owner,
                    "p_turns": turns_argument(turns, seqs_bound=seqs_bound),
                    "p_now": self.clock(),
                    "p_ttl_seconds": self.limits.ttl.total_seconds(),
                    "p_max_turns": self.limits.max_turns,
                    "p_request_id": self._request_id(),
                },
            ),
            thread_id=thread_id,
        )
        header = header_of(rows[0])
        version, inserted, now = header["version"], header["inserted"], header["updated_at"]
        stored = common.appended_turns(turns, turns_of(rows), base=version - inserted, now=now)
        return Appended(thread_id, version, inserted, stored, now, header["expires_at"])

    async def pop(self, thread_id: str, *, owner: str | None, count: int = 1) -> Removed:
        validate_count(count, "count")
        return await self._remove(thread_id, owner, count)

    async def clear(self, thread_id: str, *, owner: str | None) -> Removed:
        return await self._remove(thread_id, owner, None)

    async def _remove(self, thread_id: str, owner: str | None, count: int | None) -> Removed:
        rows = await self._rows(
            Call(
                "convmem_remove",
                {
                    "p_id": thread_id,
                    "p_owner": owner,
                    "p_count": count,
                    "p_now": self.clock(),
                    "p_ttl_seconds": self.limits.ttl.total_seconds(),
                    "p_request_id": self._request_id(),
                },
            ),
            thread_id=thread_id,
        )
        header = header_of(rows[0])
        return Removed(
            thread_id,
            header["version"],
            tuple(header["removed"] or ()),
            turns_of(rows),
            header["updated_at"],
            header["expires_at"],
        )

    async def save_summary(
        self,
        thread_id: str,
        summary: Turn,
        *,
        covers_to_seq: int,
        base_version: int,
        owner: str | None,
    ) -> Summarised:
        validate_summary_point(covers_to_seq, base_version)
        now = self.clock()
        rows = await self._rows(
            Call(
                "convmem_save_summary",
                {
                    "p_id": thread_id,
                    "p_owner": owner,
                    "p_summary": turn_params(summary),
                    "p_covers": covers_to_seq,
                    "p_base": base_version,
                    "p_now": now,
                    "p_request_id": self._request_id(),
                },
            ),
            thread_id=thread_id,
        )
        header = header_of(rows[0])
        return Summarised(
            thread_id,
            header["version"],
            stored_turn(summary, covers_to_seq, now),
            header["updated_at"],
            header["expires_at"],
        )

    async def update(
        self,
        thread_id: str,
        metadata: Mapping[str, Any],
        *,
        owner: str | None,
        base_version: int | None = None,
    ) -> Updated:
        rows = await self._rows(
            Call(
                "convmem_update",
                {
                    "p_id": thread_id,
                    "p_owner": owner,
                    "p_metadata": dict(metadata),
                    "p_base": base_version,
                    "p_now": self.clock(),
                    "p_request_id": self._request_id(),
                },
            ),
            thread_id=thread_id,
        )
        header = header_of(rows[0])
        return Updated(
            thread_id, header["version"], metadata, header["updated_at"], header["expires_at"]
        )

    async def rewrite(
        self,
        thread_id: str,
        turns: Sequence[Turn],
        *,
        after_seq: int,
        owner: str | None,
        metadata: Mapping[str, Any] | None = None,
        seqs_bound: bool = False,
    ) -> Replaced:
        validate_seq_or_zero(after_seq, "after_seq")
        rows = await self._rows(
            Call(
                "convmem_rewrite",
                {
                    "p_id": thread_id,
                    "p_owner": owner,
                    "p_after": after_seq,
                    "p_turns": turns_argument(turns, seqs_bound=seqs_bound),
                    "p_metadata": None if metadata is None else dict(metadata),
                    "p_now": self.clock(),
                    "p_ttl_seconds": self.limits.ttl.total_seconds(),
                    "p_max_turns": self.limits.max_turns,
                    "p_request_id": self._request_id(),
                },
            ),
            thread_id=thread_id,
        )
        header = header_of(rows[0])
        stored, header["summary"] = loaded_turns(rows)
        return Replaced(thread_from_values(header, stored))

    async def fork(self, thread: NewThread, *, at_seq: int | None = None) -> Created:
        validate_fork_point(at_seq)
        if thread.parent_id is None:
            raise ValueError("a fork needs the parent's id in NewThread.parent_id")
        call = Call(
            "convmem_fork",
            {
                "p_id": thread.id,
                "p_parent_id": thread.parent_id,
                "p_at_seq": at_seq,
                "p_tool_name": thread.tool_name,
                "p_owner": thread.owner,
                "p_metadata": dict(thread.metadata),
                "p_now": self.clock(),
                "p_ttl_seconds": self.limits.ttl.total_seconds(),
                "p_request_id": self._request_id(),
            },
        )
        try:
            rows = await self._rows(call, thread_id=thread.parent_id)
        except ThreadExistsError:  # refusals name the parent; this one is the fork's
            raise common.exists(thread.id) from None
        return Created(thread_from_values(header_of(rows[0]), ()))

    async def delete(self, thread_id: str, *, owner: str | None) -> Deleted | None:
        removed = await self._value(
            Call("convmem_delete", {"p_id": thread_id, "p_owner": owner}, returns_rows=False)
        )
        return Deleted(thread_id) if removed else None

    async def purge_expired(self) -> int:
        return int(
            await self._value(Call("convmem_purge", {"p_now": self.clock()}, returns_rows=False))
        )

    async def scan(self, *, after: str | None, limit: int) -> tuple[tuple[str, str | None], ...]:
        common.check_list_limit(limit)
        pairs = await self._value(
            Call("convmem_scan", {"p_after": after, "p_limit": limit}, returns_rows=False)
        )
        return tuple((str(thread_id), owner) for thread_id, owner in pairs or ())

    async def reseal(
        self,
        thread_id: str,
        turns: Sequence[Resealed],
        metadata: MetadataSwap | None = None,
    ) -> int:
        changed = await self._value(
            Call(
                "convmem_reseal",
                {
                    "p_id": thread_id,
                    "p_turns": [
                        {
                            "seq": r.turn.seq,
                            "expected": r.expected,
                            "summary": r.summary,
                            **turn_params(r.turn),
                        }
                        for r in turns
                    ],
                    "p_metadata_old": None if metadata is None else dict(metadata[0]),
                    "p_metadata_new": None if metadata is None else dict(metadata[1]),
                    "p_records_before": self.clock() - RETRY_RECORD_AGE,
                },
                returns_rows=False,
            )
        )
        return int(changed or 0)

    async def record_unannounced(self, thread_id: str, version: int) -> None:
        await self._value(
            Call(
                "convmem_record_unannounced",
                {"p_id": thread_id, "p_version": version},
                returns_rows=False,
            )
        )

    async def unannounced(self, *, fenced_within: float) -> tuple[Unannounced, ...]:
        rows = await self._value(
            Call("convmem_unannounced", {"p_fenced_within": fenced_within}, returns_rows=False)
        )
        return tuple((str(i), int(v), bool(fenced)) for i, v, fenced in rows or ())

    async def mark_fenced(self, writes: Sequence[tuple[str, int]]) -> None:
        rows = [{"thread_id": thread_id, "version": version} for thread_id, version in writes]
        await self._value(Call("convmem_mark_fenced", {"p_rows": rows}, returns_rows=False))

    async def restore(self, thread: Thread, *, replace: bool = False) -> bool:
        summary = thread.summary
        restored = await self._value(
            Call(
                "convmem_restore",
                {
                    "p_id": thread.id,
                    "p_version": thread.version,
                    "p_tool_name": thread.tool_name,
                    "p_parent_id": thread.parent_id,
                    "p_parent_seq": thread.parent_seq,
                    "p_owner": thread.owner,
                    "p_metadata": dict(thread.metadata),
                    "p_created_at": thread.created_at,
                    "p_updated_at": thread.updated_at,
                    "p_expires_at": thread.expires_at,
                    "p_turns": [_restored_turn(t, thread.created_at) for t in thread.turns],
                    "p_summary": None
                    if summary is None
                    else _restored_turn(summary, thread.updated_at),
                    "p_replace": replace,
                },
                returns_rows=False,
            )
        )
        return bool(restored)

    async def sealing_keys(
        self, current: str | None, known: Sequence[str], *, only: bool = False
    ) -> tuple[str, ...]:
        recorded = await self._value(
            Call(
                "convmem_sealing_keys",
                {"p_current": current, "p_known": list(known), "p_only": only},
                returns_rows=False,
            )
        )
        return tuple(recorded or ())

    async def schema_version(self) -> int:
        """The newest migration recorded in the database (0 when none is)."""
        version = await self._value(Call("convmem_schema_version", {}, returns_rows=False))
        return int(version or 0)

    def _request_id(self) -> str | None:
        return str(uuid.uuid4()) if self.records_requests else None


def turns_argument(turns: Sequence[Turn], *, seqs_bound: bool = False) -> list[dict[str, Any]]:
    """The ``p_turns`` JSON array: each turn's fields and its order in the call, and with
    ``seqs_bound`` the seq it was sealed for (the function refuses any other, 0009)."""
    if seqs_bound:
        return [{"ord": i, "seq": t.seq, **turn_params(t)} for i, t in enumerate(turns, 1)]
    return [{"ord": i, **turn_params(t)} for i, t in enumerate(turns, 1)]


def _restored_turn(turn: Turn, default_time: datetime) -> dict[str, Any]:
    """A stored turn for ``convmem_restore``: its fields, its seq and its time."""
    when = turn.created_at or default_time
    return {"seq": turn.seq, "created_at": when.isoformat(), **turn_params(turn)}


def header_of(row: Row) -> dict[str, Any]:
    """The header row as the keys of ``THREAD_COLUMNS`` (plus ``inserted``)."""
    return {
        "id": row[_INDEX["id"]],
        "version": row[_INDEX["version"]],
        "tool_name": row[_INDEX["tool_name"]],
        "parent_id": row[_INDEX["parent_id"]],
        "owner": row[_INDEX["owner"]],
        "metadata": row[_INDEX["metadata"]],
        "created_at": row[_INDEX["created_at"]],
        "updated_at": row[_INDEX["updated_at"]],
        "expires_at": row[_INDEX["expires_at"]],
        "inserted": row[_INDEX["inserted"]],
        "parent_seq": row[_INDEX["parent_seq"]],
        "whole": row[_INDEX["whole"]],
        "removed": row[_INDEX["removed"]],
        "turn_count": row[_INDEX["turn_count"]],
    }


def summary_of(row: Row) -> ThreadSummary:
    return summary_from_values(header_of(row))


def turns_of(rows: Sequence[Row]) -> tuple[Turn, ...]:
    """The turn rows (every row after the header), as turns."""
    return tuple(turn_from_storage(*row[:_TURN_WIDTH]) for row in rows[1:])


def loaded_turns(rows: Sequence[Row]) -> tuple[tuple[Turn, ...], Turn | None]:
    """A load's turns and its summary (the turn row whose ``version`` is set), if any."""
    version = _INDEX["version"]
    turns: list[Turn] = []
    summary = None
    for row in rows[1:]:
        turn = turn_from_storage(*row[:_TURN_WIDTH])
        if row[version] is None:
            turns.append(turn)
        else:
            summary = turn
    return tuple(turns), summary


def refusal(
    sqlstate: str | None, detail: str | None, *, thread_id: str, max_turns: int
) -> ConvMemError | None:
    """The convmem error a function's SQLSTATE stands for, or None if it is not a refusal."""
    match sqlstate:
        case "CM404":
            return common.not_found(thread_id)
        case "CM410":
            return common.expired(thread_id)
        case "CM422":
            return common.exists(thread_id)
        case "CM409":
            return common.key_conflict(thread_id, detail)
        case "CM416":
            return common.no_turn(thread_id, int(detail or 0))
        case "CM412":
            return common.stale_summary(thread_id, int(detail or 0))
        case "CM419":
            return common.stale_update(thread_id, int(detail or 0))
        case "CM428":
            return common.seq_taken(thread_id, int(detail or 0))
        case "CM413":
            counts = orjson.loads(detail or "{}")
            return common.full(
                thread_id,
                version=int(counts.get("version", 0)),
                fresh=int(counts.get("fresh", 0)),
                max_turns=max_turns,
            )
    return None
