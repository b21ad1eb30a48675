"""The L2 payload: one Redis hash per thread, JSON values, readable in any Redis browser.

Fields of ``convmem:{<id>}``:

=========  ====================================================================
``v``      the thread's version (its revision: every write raises it)
``n``      how many turns the thread holds
``h``      the header that never changes: id, tool, parent and cut, owner, metadata,
           created
``u``/``e`` updated_at / expires_at, in microseconds since the epoch
``<seq>``  one JSON array per turn, named by its seq: an append adds fields and a pop
           removes them, O(turns changed). With ``n == v`` they are ``1``..``v``.
``s``      the compaction summary, if any: a turn's array with its tag and the seq it
           covers through in front
``a``      the header's tag
``t``      the state's tag: of ``v``, ``n``, the summary's seq, ``u`` and ``e``
``f``      a fence: no copy below this version may be served or installed
=========  ====================================================================

A turn is ``[tag, role, content, tool_name, model_provider, model_name, files, images,
metadata, key, created_at]`` (created_at in microseconds since the epoch): an array,
not an object, because decoding turns is most of an L2 hit and arrays parse faster
and unpack without a lookup per field. The tags (``cache/tags.py``) bind each part to
its thread (and a turn to its seq), so a copy edited in Redis fails to decode; without
a tag key they are ``-`` and not checked. Nothing is ever pickled; a value that fails
to decode is ``CorruptPayload``.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

import orjson

from convmem.cache.protocol import CorruptPayload
from convmem.cache.tags import TAG_CHARS
from convmem.errors import ConvMemError
from convmem.models import turn_from_storage
from convmem.records import from_micros, thread_from_values, to_micros

if TYPE_CHECKING:
    from collections.abc import Sequence

    from convmem.cache.tags import CacheTags, PartTags
    from convmem.models import Thread, Turn

# 2: turns as arrays; 3: fields named by seq, ``n``, the fork's cut; 4: ``s``; 5: tags
FORMAT = 5
META_FIELDS = frozenset({b"v", b"n", b"h", b"u", b"e", b"f", b"s", b"a", b"t"})
UNTAGGED = b"-"  # the tag of every part when no tag key is configured
_FIXED_FIELDS = 7  # v, n, h, u, e, a, t
_BODY_AT = 2 + TAG_CHARS + 2  # a tagged value: '["' tag '",' then the rest of the array


def header_tag(tags: CacheTags | None, thread_id: str, header: bytes) -> bytes:
    return UNTAGGED if tags is None else tags.tag(b"header", thread_id, header)


def state_tag(
    tags: CacheTags | None,
    thread_id: str,
    version: int,
    count: int,
    summary_seq: int,
    updated_us: int,
    expires_us: int,
) -> bytes:
    """The tag of what a copy says of itself beyond its parts: that it is ``version`` of
    the thread, with ``count`` turns and a summary through ``summary_seq``, ..."""
    if tags is None:
        return UNTAGGED
    state = b"%d %d %d %d %d" % (version, count, summary_seq, updated_us, expires_us)
    return tags.tag(b"state", thread_id, state)


def _tagged(part: PartTags | None, seq: int, array: bytes) -> bytes:
    """``array`` (a JSON array) with its tag as the first element."""
    body = array[1:]  # after "[": what the tag covers, as a reader finds it
    tag = UNTAGGED if part is None else part.tag(body, seq)
    return b'["' + tag + b'",' + body


def encode_header(thread: Thread) -> bytes:
    return orjson.dumps(
        {
            "fmt": FORMAT,
            "id": thread.id,
            "tool_name": thread.tool_name,
            "parent_id": thread.parent_id,
            "parent_seq": thread.parent_seq,
            "owner": thread.owner,
            "metadata": dict(thread.metadata),
            "created_at": to_micros(thread.created_at),
        }
    )


def encode_turn(turn: Turn, thread_id: str, tags: CacheTags | None) -> bytes:
    """A turn's field value, tagged for its thread and seq."""
    return encode_turns((turn,), thread_id, tags)[0]


def encode_turns(turns: Sequence[Turn], thread_id: str, tags: CacheTags | None) -> list[bytes]:
    """Field values of ``turns`` of one thread, each tagged for its seq."""
    part = _turn_tags(tags, b"turn", thread_id)
    return [_tagged(part, turn.seq, _turn_array(turn)) for turn in turns]


def _turn_tags(tags: CacheTags | None, label: bytes, thread_id: str) -> PartTags | None:
    """The tags of a thread's turns (or summary), if its copies carry them."""
    return None if tags is None or not tags.turns else tags.of(label, thread_id)


def _turn_array(turn: Turn) -> bytes:
    return orjson.dumps(
        (
            turn.role,
            turn.content,
            turn.tool_name,
            turn.model_provider,
            turn.model_name,
            turn.files,
            turn.images,
            dict(turn.metadata),
            turn.key,
            to_micros(turn.created_at) if turn.created_at else None,
        )
    )


def encode_summary(summary: Turn, thread_id: str, tags: CacheTags | None) -> bytes:
    """``[tag, seq, role, content, ...]``: the turn array behind the seq it covers through."""
    array = b"[%d," % summary.seq + _turn_array(summary)[1:]
    return _tagged(_turn_tags(tags, b"summary", thread_id), summary.seq, array)


def _decode_summary(raw: bytes, thread_id: str, tags: CacheTags | None) -> Turn:
    tag, seq, *turn = orjson.loads(raw)
    part = _turn_tags(tags, b"summary", thread_id)
    if part is not None and not _authentic(part, seq, raw):
        raise CorruptPayload("the summary's tag does not match")
    return _turns_of([seq], [[tag, *turn]])[0]


def _authentic(part: PartTags, seq: int, raw: bytes) -> bool:
    if raw[:2] != b'["' or raw[_BODY_AT - 2 : _BODY_AT] != b'",':
        return False
    return part.matches(raw[2 : _BODY_AT - 2], memoryview(raw)[_BODY_AT:], seq)


def fence_of(fields: dict[bytes, bytes]) -> int:
    raw = fields.get(b"f")
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise CorruptPayload("fence is not an integer") from None


def decode_thread(
    thread_id: str, fields: dict[bytes, bytes], tags: CacheTags | None = None
) -> Thread | None:
    """The thread a hash holds; None if it holds none (empty or only a fence). With
    ``tags``, every part must carry its tag (``CorruptPayload`` otherwise)."""
    fence = fence_of(fields)
    if b"v" not in fields:
        if set(fields) - {b"f"}:
            raise CorruptPayload("no version field")
        return None
    try:
        version = int(fields[b"v"])
        count = int(fields[b"n"])
        header: dict[str, Any] = orjson.loads(fields[b"h"])
        updated_us, expires_us = int(fields[b"u"]), int(fields[b"e"])
        updated_at, expires_at = from_micros(updated_us), from_micros(expires_us)
        if header.get("fmt") != FORMAT or header.get("id") != thread_id:
            raise CorruptPayload("foreign header")
        summary = fields.get(b"s")
        if len(fields) != count + _FIXED_FIELDS + (b"f" in fields) + (summary is not None):
            raise CorruptPayload("turn fields do not match the count")
        opened = None if summary is None else _decode_summary(summary, thread_id, tags)
        if tags is not None:
            state = (version, count, 0 if opened is None else opened.seq, updated_us, expires_us)
            _check_tags(tags, thread_id, fields, state)
        turns = _decode_turns(fields, *_turn_names(fields, version, count), thread_id, tags)
        header.update(
            created_at=from_micros(header["created_at"]),
            updated_at=updated_at,
            expires_at=expires_at,
            version=version,
            summary=opened,
        )
        thread = thread_from_values(header, turns)
    except CorruptPayload:
        raise
    except (KeyError, ValueError, TypeError, orjson.JSONDecodeError, ConvMemError) as exc:
        raise CorruptPayload(f"{type(exc).__name__}: {exc}") from exc
    return None if version < fence else thread


def _check_tags(
    tags: CacheTags,
    thread_id: str,
    fields: dict[bytes, bytes],
    state: tuple[int, int, int, int, int],
) -> None:
    """The header and the state (version, count, summary seq, updated, expires) are the
    ones a tag holder wrote, for this thread: the tags a writer makes of them."""
    if not hmac.compare_digest(fields[b"a"], header_tag(tags, thread_id, fields[b"h"])):
        raise CorruptPayload("the header's tag does not match")
    if not hmac.compare_digest(fields[b"t"], state_tag(tags, thread_id, *state)):
        raise CorruptPayload("the state's tag does not match")


_field_names: tuple[bytes, ...] = ()  # b"1", b"2", ...: built once, not on every read


def _turn_fields(version: int) -> tuple[bytes, ...]:
    global _field_names
    names = _field_names
    if len(names) < version:
        # A whole new tuple, swapped in at once: threads racing here build the same one.
        names = tuple(b"%d" % seq for seq in range(1, max(version, 2 * len(names)) + 1))
        _field_names = names
    return names[:version]


def _turn_names(
    fields: dict[bytes, bytes], version: int, count: int
) -> tuple[Sequence[bytes], Sequence[int]]:
    """The turn fields and their seqs, in seq order: ``1``..``v`` for a thread only ever
    appended to (the common case: nothing to sort), else the numeric fields sorted."""
    if count == version:
        return _turn_fields(version), range(1, version + 1)
    seqs = sorted(int(name) for name in fields if name not in META_FIELDS)
    return [b"%d" % seq for seq in seqs], seqs


def _decode_turns(
    fields: dict[bytes, bytes],
    names: Sequence[bytes],
    seqs: Sequence[int],
    thread_id: str,
    tags: CacheTags | None,
) -> tuple[Turn, ...]:
    values = [fields[name] for name in names]
    part = _turn_tags(tags, b"turn", thread_id)
    if part is not None:
        for seq, value in zip(seqs, values, strict=True):
            if not _authentic(part, seq, value):
                raise CorruptPayload(f"the tag of turn {seq} does not match")
    # One JSON document for all the turns: one parser call instead of one per turn.
    return _turns_of(seqs, orjson.loads(b"[" + b",".join(values) + b"]"))


def _turns_of(seqs: Sequence[int], arrays: Sequence[Sequence[Any]]) -> tuple[Turn, ...]:
    """Turns from their decoded arrays (see the module docstring) and their seqs."""
    turns: list[Turn] = []
    append = turns.append
    last_micros, created = None, None
    for seq, (
        _,
        role,
        content,
        tool,
        provider,
        model,
        files,
        images,
        metadata,
        key,
        micros,
    ) in zip(seqs, arrays, strict=True):
        if micros != last_micros:  # the turns of one append share their time: convert once
            last_micros = micros
            created = None if micros is None else from_micros(micros)
        append(
            turn_from_storage(
                seq, role, content, tool, provider, model, files, images, metadata, key, created
            )
        )
    return tuple(turns)
