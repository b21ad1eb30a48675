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
``s``      the compaction summary, if any: a turn's array with the seq it covers through
           in front
``f``      a fence: no copy below this version may be served or installed
=========  ====================================================================

A turn is ``[role, content, tool_name, model_provider, model_name, files, images,
metadata, key, created_at]`` (created_at in microseconds since the epoch): an array,
not an object, because decoding turns is most of an L2 hit and arrays parse faster
and unpack without a lookup per field. Nothing is ever pickled; a value that fails
to decode is ``CorruptPayload``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from convmem.cache.protocol import CorruptPayload
from convmem.errors import ConvMemError
from convmem.models import turn_from_storage
from convmem.records import from_micros, thread_from_values, to_micros

if TYPE_CHECKING:
    from collections.abc import Sequence

    from convmem.models import Thread, Turn

FORMAT = 4  # 2: turns as arrays; 3: fields named by seq, ``n``, the fork's cut; 4: ``s``
META_FIELDS = frozenset({b"v", b"n", b"h", b"u", b"e", b"f", b"s"})


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


def encode_turn(turn: Turn) -> bytes:
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


def encode_summary(summary: Turn) -> bytes:
    """``[seq, role, content, ...]``: the turn array behind the seq it covers through."""
    return b"[%d," % summary.seq + encode_turn(summary)[1:]


def _decode_summary(raw: bytes) -> Turn:
    seq, *turn = orjson.loads(raw)
    return _turns_of([seq], [turn])[0]


def fence_of(fields: dict[bytes, bytes]) -> int:
    raw = fields.get(b"f")
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise CorruptPayload("fence is not an integer") from None


def decode_thread(thread_id: str, fields: dict[bytes, bytes]) -> Thread | None:
    """The thread a hash holds; None if it holds none (empty or only a fence)."""
    fence = fence_of(fields)
    if b"v" not in fields:
        if set(fields) - {b"f"}:
            raise CorruptPayload("no version field")
        return None
    try:
        version = int(fields[b"v"])
        count = int(fields[b"n"])
        header: dict[str, Any] = orjson.loads(fields[b"h"])
        updated_at = from_micros(int(fields[b"u"]))
        expires_at = from_micros(int(fields[b"e"]))
        if header.get("fmt") != FORMAT or header.get("id") != thread_id:
            raise CorruptPayload("foreign header")
        summary = fields.get(b"s")
        if len(fields) != count + 5 + (b"f" in fields) + (summary is not None):
            raise CorruptPayload("turn fields do not match the count")
        turns = _decode_turns(fields, *_turn_names(fields, version, count))
        header.update(
            created_at=from_micros(header["created_at"]),
            updated_at=updated_at,
            expires_at=expires_at,
            version=version,
            summary=None if summary is None else _decode_summary(summary),
        )
        thread = thread_from_values(header, turns)
    except CorruptPayload:
        raise
    except (KeyError, ValueError, TypeError, orjson.JSONDecodeError, ConvMemError) as exc:
        raise CorruptPayload(f"{type(exc).__name__}: {exc}") from exc
    return None if version < fence else thread


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
    fields: dict[bytes, bytes], names: Sequence[bytes], seqs: Sequence[int]
) -> tuple[Turn, ...]:
    # One JSON document for all the turns: one parser call instead of one per turn.
    raw = b"[" + b",".join([fields[name] for name in names]) + b"]"
    return _turns_of(seqs, orjson.loads(raw))


def _turns_of(seqs: Sequence[int], arrays: Sequence[Sequence[Any]]) -> tuple[Turn, ...]:
    """Turns from their decoded arrays (see the module docstring) and their seqs."""
    turns: list[Turn] = []
    append = turns.append
    last_micros, created = None, None
    for seq, (
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
