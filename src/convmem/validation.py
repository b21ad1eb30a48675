"""Checks at the boundary: everything a caller passes is checked here before any I/O."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import orjson

from convmem.errors import (
    InvalidInputError,
    InvalidMetadataError,
    InvalidOwnerError,
    InvalidThreadIdError,
    InvalidTurnError,
    LimitExceededError,
)
from convmem.models import Turn

if TYPE_CHECKING:
    from convmem.limits import InputLimits

_NAME_FIELDS = ("tool_name", "model_provider", "model_name")
# The largest seq (and version) any store keeps: PostgreSQL's integer columns. A number
# beyond it names no turn; refused here, it never reaches a driver (which would fail on
# it with an overflow or a missing function of a bigger integer type).
MAX_SEQ = 2**31 - 1


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def validate_thread_id(value: object) -> str:
    """Return ``value`` if it is a canonical UUID string; otherwise say what is wrong."""
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return value  # the common case, on every read: no UUID object built
    if not isinstance(value, str):
        raise InvalidThreadIdError(
            f"a thread id (continuation_id) must be a UUID string, got {type(value).__name__}"
        )
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise InvalidThreadIdError(
            f"{_clip(value)!r} is not a thread id: a continuation_id is a UUID such as "
            "'0f8c2a4e-6b1d-4c3a-9e2f-5a7b8c9d0e1f'; omit it to start a new thread"
        ) from None
    canonical = str(parsed)
    if value != canonical:
        raise InvalidThreadIdError(
            f"{_clip(value)!r} is not in canonical form: use {canonical!r} "
            "(lower-case, hyphenated, no braces or prefix)"
        )
    return value


def validate_optional_thread_id(value: object) -> str | None:
    return None if value is None else validate_thread_id(value)


def validate_owner(owner: object, limits: InputLimits | None = None) -> str | None:
    if owner is not None and (not isinstance(owner, str) or not owner or "\x00" in owner):
        raise InvalidOwnerError("owner must be a non-empty string without NUL characters, or None")
    if owner is not None and limits is not None:
        check_length(owner, "owner", limits.max_name_chars)
    return owner


def validate_fork_point(at_seq: object) -> int | None:
    """A fork point: a turn's seq, 0 (none of the parent's turns) or None (the newest)."""
    if at_seq is None or _is_seq_or_zero(at_seq):
        return at_seq
    raise InvalidInputError(
        f"at_seq must be a turn's seq (1 to {MAX_SEQ}), 0 or None, got {_clip(repr(at_seq))}"
    )


def validate_seq_or_zero(value: object, what: str) -> int:
    """A turn's seq, or 0 for before the first turn."""
    if _is_seq_or_zero(value):
        return value
    raise InvalidInputError(
        f"{what} must be a turn's seq (1 to {MAX_SEQ}) or 0, got {_clip(repr(value))}"
    )


def _is_seq_or_zero(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEQ


def validate_summary_point(covers_to_seq: object, base_version: object) -> None:
    """What a summary covers (a turn's seq) and the version it was made from (at or above
    that seq)."""
    covers = validate_count(covers_to_seq, "covers_to_seq")
    base = validate_count(base_version, "base_version")
    if covers > base:
        raise InvalidInputError(f"a summary made at version {base} cannot cover turn {covers}")


def validate_count(count: object, what: str) -> int:
    """How many turns a pop removes, or a seq or version: a positive integer a store keeps."""
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_SEQ:
        raise InvalidInputError(
            f"{what} must be an integer from 1 to {MAX_SEQ}, got {_clip(repr(count))}"
        )
    return count


def check_length(text: str, what: str, limit: int) -> None:
    """Refuse a string longer than ``limit`` characters, naming the field and the limit."""
    if len(text) > limit:
        raise LimitExceededError(
            f"{what} is {len(text)} characters; the limit is {limit}: shorten it"
        )


def validate_turns(turns: Sequence[Turn], limits: InputLimits, *, allow_empty: bool) -> None:
    """Check a batch of turns to append; raise before anything is written."""
    if isinstance(turns, (str, bytes, Turn)) or not isinstance(turns, Sequence):
        raise InvalidTurnError("turns must be a list of Turn objects")
    if not turns and not allow_empty:
        raise InvalidTurnError("add at least one turn")
    if len(turns) > limits.max_turns_per_call:
        raise LimitExceededError(
            f"{len(turns)} turns in one call; the limit is {limits.max_turns_per_call}: "
            "send them in several calls"
        )
    keys: set[str] = set()
    for index, turn in enumerate(turns):
        if not isinstance(turn, Turn):
            raise InvalidTurnError(
                f"turns[{index}] must be a convmem.Turn, got {type(turn).__name__}"
            )
        where = f"turns[{index}]"
        size = _check_text(turn.content, f"{where}.content")
        for name in _NAME_FIELDS:
            text = getattr(turn, name)
            if text is not None:
                _check_text(text, f"{where}.{name}")
                check_length(text, f"{where}.{name}", limits.max_name_chars)
        if turn.key is not None:
            _check_text(turn.key, f"{where}.key")
            check_length(turn.key, f"{where}.key", limits.max_key_chars)
        for field, paths in (("files", turn.files), ("images", turn.images)):
            if len(paths) > limits.max_paths:
                raise LimitExceededError(
                    f"{where}.{field} names {len(paths)} paths; the limit is {limits.max_paths}"
                )
            for path in paths:
                _check_text(path, f"{where}.{field}")
                check_length(path, f"{where}.{field} path", limits.max_path_chars)
        if size > limits.max_content_bytes:
            raise LimitExceededError(
                f"{where}.content is {size} bytes; the limit is {limits.max_content_bytes} "
                "(CONVMEM_MAX_CONTENT_BYTES): split the content or raise the limit"
            )
        validate_metadata(turn.metadata, limits, what=f"{where}.metadata")
        if turn.key is not None:
            if turn.key in keys:
                raise InvalidTurnError(f"{where}.key {turn.key!r} appears twice in one call")
            keys.add(turn.key)


def validate_metadata(metadata: Mapping[str, Any], limits: InputLimits, *, what: str) -> None:
    """Metadata must be a JSON object without NUL characters, within the size limit."""
    try:
        encoded = orjson.dumps(dict(metadata))
    except TypeError as exc:
        raise InvalidMetadataError(f"{what} must be JSON-serialisable: {exc}") from exc
    try:
        _check_json_text(metadata, what)
    except InvalidTurnError as exc:
        raise InvalidMetadataError(str(exc)) from None
    if len(encoded) > limits.max_metadata_bytes:
        raise LimitExceededError(
            f"{what} is {len(encoded)} bytes as JSON; the limit is {limits.max_metadata_bytes} "
            "(CONVMEM_MAX_METADATA_BYTES)"
        )


def _check_json_text(value: object, what: str) -> None:
    if isinstance(value, str):
        _check_text(value, what)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_text(str(key), what)
            _check_json_text(item, what)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_json_text(item, what)


def _check_text(text: str, what: str) -> int:
    """Refuse text no store can keep; return its size in UTF-8 bytes."""
    if "\x00" in text:
        raise InvalidTurnError(f"{what} contains a NUL character (\\x00), which no store can keep")
    return _utf8_size(text, what)


def _utf8_size(text: str, what: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidTurnError(
            f"{what} is not valid Unicode text (lone surrogate at position {exc.start})"
        ) from exc


def _clip(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[:limit] + "…"
