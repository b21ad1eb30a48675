"""The data model: immutable ``Thread`` and ``Turn``, and the listing types.

A ``Thread`` is a conversation resumed by its id (the MCP ``continuation_id``); its
``version`` is its revision: every committed write (append, pop, clear, summary) raises
it and nothing lowers it, so a larger version is always a newer copy. A turn's ``seq`` is the
version its append committed, so seqs rise with the thread and are never reused.
Objects are frozen: caches hand the same instance to many readers safely.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final, Literal, cast, get_args

from convmem.errors import InvalidMetadataError, InvalidTurnError

Role = Literal["user", "assistant", "system", "tool"]
ROLES: Final[frozenset[str]] = frozenset(get_args(Role))

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
# What stores and caches decode to; exact types, because a membership test is cheaper
# than isinstance and these values come from our own decoders.
_SEQUENCES: Final = (list, tuple)
_MAPPINGS: Final = (dict, MappingProxyType)


def freeze_mapping(value: Mapping[str, Any] | None, *, what: str) -> Mapping[str, Any]:
    """Return a read-only copy of a JSON object given by the caller."""
    if value is None:
        return _EMPTY
    if not isinstance(value, Mapping):
        raise InvalidMetadataError(
            f"{what} must be a mapping (a JSON object), got {type(value).__name__}"
        )
    if not all(isinstance(key, str) for key in value):
        raise InvalidMetadataError(f"{what} keys must be strings")
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
        or type(files) not in _SEQUENCES
        or type(images) not in _SEQUENCES
        or (files and not _all_str(cast("list[object]", files)))
        or (images and not _all_str(cast("list[object]", images)))
        or type(metadata) not in _MAPPINGS
        or not (created_at is None or isinstance(created_at, datetime))
    ):
        raise InvalidTurnError(f"a stored turn {seq!r} has an unexpected shape")
    turn = _TurnLayout(
        role,
        content,
        tool_name,
        model_provider,
        model_name,
        tuple(cast("list[str]", files)) if files else (),
        tuple(cast("list[str]", images)) if images else (),
        MappingProxyType(dict(cast("dict[str, Any]", metadata))) if metadata else _EMPTY,
        key,
        seq,
        created_at,
    )
    turn.__class__ = Turn  # type: ignore[assignment]
    return cast("Turn", turn)


class _TurnLayout:
    """``Turn``'s slots without its frozen ``__setattr__``: filled with plain stores, then
    re-classed as a ``Turn`` (the layouts are the same, so Python allows it).

    A frozen dataclass can only be filled through ``object.__setattr__``, about 110 ns
    per field; this is about three times faster, and building turns is most of the
    cost of an L2 hit. ``tests/test_models.py`` checks the two layouts stay the same.
    """

    __slots__ = Turn.__slots__

    def __init__(
        self,
        role: object,
        content: object,
        tool_name: object,
        model_provider: object,
        model_name: object,
        files: object,
        images: object,
        metadata: object,
        key: object,
        seq: object,
        created_at: object,
    ) -> None:
        self.role = role
        self.content = content
        self.tool_name = tool_name
        self.model_provider = model_provider
        self.model_name = model_name
        self.files = files
        self.images = images
        self.metadata = metadata
        self.key = key
        self.seq = seq
        self.created_at = created_at


def _all_str(items: tuple[object, ...] | list[object]) -> bool:
    return all(isinstance(item, str) for item in items)


@dataclass(frozen=True, slots=True)
class Thread:
    """A conversation: its header and all its turns, ordered by ``seq``.

    ``version`` is the thread's revision (see the module docstring); left at 0 it is
    taken from the newest turn, as for a thread that was only ever appended to.
    ``parent_id`` and ``parent_seq`` make a fork: the parent's turns up to
    ``parent_seq`` come before this thread's own (all of them when ``parent_seq`` is
    None, as for a continuation made before forks existed).

    ``summary`` is the newest compaction summary, or None: a system turn whose ``seq``
    is the newest turn it covers (it stands for every turn up to that one; the turns
    themselves stay in ``turns``). Stored and sealed like a turn, so every layer that
    keeps turns keeps it the same way.
    """

    id: str
    turns: tuple[Turn, ...]
    tool_name: str | None
    parent_id: str | None
    owner: str | None
    metadata: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    version: int = 0
    parent_seq: int | None = None
    summary: Turn | None = None

    def __post_init__(self) -> None:
        newest = self.newest_seq
        if self.version == 0:
            object.__setattr__(self, "version", newest)
        elif self.version < newest:
            raise ValueError(f"version {self.version} is below the newest turn's seq {newest}")

    @property
    def newest_seq(self) -> int:
        """The seq of the newest turn, 0 when there is none."""
        return self.turns[-1].seq if self.turns else 0

    @property
    def summarised_through(self) -> int:
        """The seq of the newest turn the summary covers, 0 without a summary."""
        return self.summary.seq if self.summary is not None else 0

    def is_expired(self, now: datetime) -> bool:
        """True when the thread may no longer be served or continued."""
        return now >= self.expires_at


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    """A thread's header without its turns, as listings return it (``turns``: how many)."""

    id: str
    version: int
    turns: int
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
