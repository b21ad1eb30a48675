"""The data model: immutable ``Thread`` and ``Turn``, and the listing types.

A ``Thread`` is a conversation resumed by its id (the MCP ``continuation_id``);
its ``version`` is its number of turns, so a larger version is always a newer copy.
Objects are frozen: caches hand the same instance to many readers safely.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final, Literal, get_args

from convmem.errors import InvalidTurnError

Role = Literal["user", "assistant", "system", "tool"]
ROLES: Final[frozenset[str]] = frozenset(get_args(Role))

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


def freeze_mapping(value: Mapping[str, Any] | None, *, what: str) -> Mapping[str, Any]:
    """Return a read-only copy of a JSON object given by the caller."""
    if value is None:
        return _EMPTY
    if not isinstance(value, Mapping):
        raise InvalidTurnError(
            f"{what} must be a mapping (a JSON object), got {type(value).__name__}"
        )
    if not all(isinstance(key, str) for key in value):
        raise InvalidTurnError(f"{what} keys must be strings")
    return MappingProxyType(dict(value))


def _string_tuple(value: Iterable[str], *, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise InvalidTurnError(f"{what} must be a list of strings, not a single string")
    items = tuple(value)
    if not all(isinstance(item, str) for item in items):
        raise InvalidTurnError(f"{what} must contain only strings")
    return items


def _optional_str(value: object, *, what: str) -> None:
    if value is not None and not isinstance(value, str):
        raise InvalidTurnError(f"{what} must be a string or None, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a thread.

    Build turns with ``role`` and ``content``; ``seq`` and ``created_at`` are
    assigned by the store when the turn is appended (``seq`` is 1-based).
    ``key`` is an optional idempotency key, unique within a thread: appending a
    turn whose key is already there inserts nothing and returns the stored turn.
    """

    role: Role
    content: str
    tool_name: str | None = None
    model_provider: str | None = None
    model_name: str | None = None
    files: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    key: str | None = None
    seq: int = 0
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        # Every store read and cache decode builds turns: the checks are unrolled and
        # the common shapes (tuples of str, empty metadata) take the short way.
        if not isinstance(self.role, str) or self.role not in ROLES:
            raise InvalidTurnError(f"role must be one of {sorted(ROLES)}, got {self.role!r}")
        if not isinstance(self.content, str):
            raise InvalidTurnError(f"content must be a string, got {type(self.content).__name__}")
        _optional_str(self.tool_name, what="tool_name")
        _optional_str(self.model_provider, what="model_provider")
        _optional_str(self.model_name, what="model_name")
        _optional_str(self.key, what="key")
        if self.key == "":
            raise InvalidTurnError("key must be a non-empty string or None")
        if not isinstance(self.seq, int) or self.seq < 0:
            raise InvalidTurnError(f"seq must be a non-negative integer, got {self.seq!r}")
        if type(self.files) is not tuple or not _all_str(self.files):
            object.__setattr__(self, "files", _string_tuple(self.files, what="files"))
        if type(self.images) is not tuple or not _all_str(self.images):
            object.__setattr__(self, "images", _string_tuple(self.images, what="images"))
        metadata = self.metadata
        if type(metadata) is not MappingProxyType:
            frozen = _EMPTY if type(metadata) is dict and not metadata else None
            object.__setattr__(
                self, "metadata", frozen or freeze_mapping(metadata, what="turn metadata")
            )


def turn_from_storage(
    seq: object,
    role: object,
    content: object,
    tool_name: object,
    model_provider: object,
    model_name: object,
    files: object,
    images: object,
    metadata: object,
    key: object,
    created_at: object,
) -> Turn:
    """A turn read back from a store or a cache: its fields were fully checked when written.

    Stores and caches build thousands of turns per second, so this skips ``__init__``
    and keeps only the shape checks that still catch a foreign or corrupt value.
    """
    if (
        role not in ROLES
        or type(content) is not str
        or type(seq) is not int
        or (tool_name is not None and type(tool_name) is not str)
        or (model_provider is not None and type(model_provider) is not str)
        or (model_name is not None and type(model_name) is not str)
        or (key is not None and type(key) is not str)
        or not isinstance(files, list | tuple)
        or not isinstance(images, list | tuple)
        or (files and not _all_str(files))
        or (images and not _all_str(images))
        or not isinstance(metadata, dict | MappingProxyType)
        or not (created_at is None or isinstance(created_at, datetime))
    ):
        raise InvalidTurnError(f"a stored turn {seq!r} has an unexpected shape")
    turn = object.__new__(Turn)
    put = object.__setattr__  # the frozen dataclass's own way in, minus __init__'s checks
    put(turn, "role", role)
    put(turn, "content", content)
    put(turn, "tool_name", tool_name)
    put(turn, "model_provider", model_provider)
    put(turn, "model_name", model_name)
    put(turn, "files", tuple(files) if files else ())
    put(turn, "images", tuple(images) if images else ())
    put(turn, "metadata", MappingProxyType(dict(metadata)) if metadata else _EMPTY)
    put(turn, "key", key)
    put(turn, "seq", seq)
    put(turn, "created_at", created_at)
    return turn


def _all_str(items: tuple[object, ...] | list[object]) -> bool:
    return all(isinstance(item, str) for item in items)


@dataclass(frozen=True, slots=True)
class Thread:
    """A conversation: its header and all its turns, ordered by ``seq``."""

    id: str
    turns: tuple[Turn, ...]
    tool_name: str | None
    parent_id: str | None
    owner: str | None
    metadata: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime
    expires_at: datetime

    @property
    def version(self) -> int:
        """The number of turns; grows by one per appended turn, never shrinks."""
        return len(self.turns)

    def is_expired(self, now: datetime) -> bool:
        """True when the thread may no longer be served or continued."""
        return now >= self.expires_at


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    """A thread's header without its turns, as listings return it."""

    id: str
    version: int
    tool_name: str | None
    parent_id: str | None
    owner: str | None
    metadata: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ThreadPage:
    """One page of a listing, newest activity first; pass ``next_cursor`` to get the next."""

    threads: tuple[ThreadSummary, ...]
    next_cursor: str | None
