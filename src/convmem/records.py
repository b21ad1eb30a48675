"""Threads and turns as plain values, shared by every store and cache tier.

The column orders every store selects in, the microsecond clock SQLite and L2 keep
time in, and the builders of ``Thread``/``Turn`` from decoded values. It imports no
store and no cache, so both can use it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from convmem.models import Thread, ThreadSummary, Turn, freeze_mapping, turn_from_storage

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

# The columns every SQL store selects for a turn, in this order.
TURN_COLUMNS = (
    "seq",
    "role",
    "content",
    "tool_name",
    "model_provider",
    "model_name",
    "files",
    "images",
    "metadata",
    "key",
    "created_at",
)
# The columns every SQL store selects for a thread header, in this order.
THREAD_COLUMNS = (
    "id",
    "version",
    "tool_name",
    "parent_id",
    "owner",
    "metadata",
    "created_at",
    "updated_at",
    "expires_at",
    "parent_seq",
    "turn_count",
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """Exact integer microseconds since the epoch (SQLite keeps time this way)."""
    return (moment - EPOCH) // MICROSECOND


def from_micros(micros: int) -> datetime:
    return EPOCH + micros * MICROSECOND


def turn_from_values(values: Iterable[Any]) -> Turn:
    """A Turn from values in ``TURN_COLUMNS`` order, already decoded to Python types."""
    return turn_from_storage(*values)


def thread_from_values(header: Mapping[str, Any], turns: tuple[Turn, ...]) -> Thread:
    """A Thread from a decoded header (keys of ``THREAD_COLUMNS``) and its turns."""
    return Thread(
        id=header["id"],
        turns=turns,
        tool_name=header["tool_name"],
        parent_id=header["parent_id"],
        owner=header["owner"],
        metadata=freeze_mapping(header["metadata"], what="thread metadata"),
        created_at=header["created_at"],
        updated_at=header["updated_at"],
        expires_at=header["expires_at"],
        version=header["version"],
        parent_seq=header["parent_seq"],
        summary=header.get("summary"),
    )


def summary_from_values(header: Mapping[str, Any]) -> ThreadSummary:
    return ThreadSummary(
        id=header["id"],
        version=header["version"],
        turns=header["turn_count"],
        tool_name=header["tool_name"],
        parent_id=header["parent_id"],
        owner=header["owner"],
        metadata=freeze_mapping(header["metadata"], what="thread metadata"),
        created_at=header["created_at"],
        updated_at=header["updated_at"],
        expires_at=header["expires_at"],
    )


def turn_params(turn: Turn) -> dict[str, Any]:
    """The caller-supplied fields of a turn to insert (the store adds seq and created_at)."""
    return {
        "role": turn.role,
        "content": turn.content,
        "tool_name": turn.tool_name,
        "model_provider": turn.model_provider,
        "model_name": turn.model_name,
        "files": list(turn.files),
        "images": list(turn.images),
        "metadata": dict(turn.metadata),
        "key": turn.key,
    }


def stored_turn(turn: Turn, seq: int, now: datetime) -> Turn:
    """The turn as a store keeps it, built without reading it back."""
    return replace(turn, seq=seq, created_at=now)
