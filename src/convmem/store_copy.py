"""``convmem copy``: move every thread from one store to another (SQLite to PostgreSQL or
Supabase, and back), then check the destination holds each one as the source did.

Each thread is read whole from the source and written whole to the destination with
``Store.restore``: one transaction, so a copy killed at any point leaves every thread
either entirely there or absent. Its id, owner, metadata, times, expiry, version, turns
with their seqs, summary and fork link are kept, so a continuation id goes on working
and a Redis tier that cached the thread stays coherent. A run after a kill, or a second
run, finds what is there already (identical: counted as present) and copies the rest;
a thread the destination holds with other content is reported, and only replaced when
asked.

Payloads move as stored by default (sealed turns stay sealed, and the destination
records the keys they are sealed under, so a process without them refuses to start
there). ``reseal`` seals everything under the current key on the way (re-keying, or
encrypting a plaintext store with ``accept_plaintext``); ``unseal`` writes it in clear.

Stop the writers first (or run it again after they stopped): threads created or changed
after a thread was read are not followed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING

import orjson

from convmem.errors import ConfigurationError
from convmem.records import to_micros, turn_params

if TYPE_CHECKING:
    from convmem.models import Thread, Turn
    from convmem.sealing import Sealing
    from convmem.stores.base import Store


class Payloads(Enum):
    """What happens to the turns' payloads on the way."""

    AS_STORED = "as-stored"  # byte for byte: sealed stays sealed under the same keys
    RESEAL = "reseal"  # sealed under the current key (from any known key, or from clear)
    UNSEAL = "unseal"  # opened: the destination holds them in clear


@dataclass(slots=True)
class CopyReport:
    """How far a copy got, and what its check found."""

    total: int = 0  # threads the source held when the copy began (live or not)
    scanned: int = 0
    copied: int = 0  # written to the destination by this run
    present: int = 0  # there already with the same content (an earlier run's)
    replaced: int = 0  # there with other content, and replaced (``replace``)
    gone: int = 0  # expired or deleted in the source: not copied
    turns: int = 0  # turns written by this run
    differing: list[str] = field(default_factory=list)  # there with other content, kept
    verified: int = 0  # found in the destination as in the source, after the copy
    mismatched: list[str] = field(default_factory=list)  # missing or different after it

    @property
    def ok(self) -> bool:
        return not self.differing and not self.mismatched


async def copy_threads(
    source: Store,
    destination: Store,
    *,
    payloads: Payloads = Payloads.AS_STORED,
    sealing: Sealing | None = None,
    replace_differing: bool = False,
    batch: int = 200,
    on_progress: Callable[[CopyReport], None] | None = None,
) -> CopyReport:
    """Copy every live thread of ``source`` into ``destination``, then verify each one.

    ``sealing`` opens (and with ``RESEAL`` seals) payloads; it is needed for ``RESEAL``
    and ``UNSEAL``. ``on_progress`` is called after each thread. Raises
    ``ConfigurationError`` before writing anything when the two stores' encryption keys
    do not fit the chosen ``payloads`` (so the destination never mixes sealed and clear
    threads, or threads under keys nobody configured).
    """
    await _record_keys(source, destination, payloads, sealing)
    threads = await _every_thread(source, batch)
    report = CopyReport(total=len(threads))
    written: dict[str, tuple[str | None, str, datetime]] = {}  # id: (owner, digest, expiry)
    for thread_id, owner in threads:
        report.scanned += 1
        stored = await source.load(thread_id, owner=owner)
        if stored is None:
            report.gone += 1
        else:
            wanted = _transformed(stored, payloads, sealing)
            digest = _digest(_comparable(wanted, payloads, sealing))
            await _write(destination, wanted, digest, payloads, sealing, replace_differing, report)
            written[thread_id] = (owner, digest, stored.expires_at)
        if on_progress is not None:
            on_progress(report)
    kept_apart = set(report.differing)
    for thread_id, (owner, digest, expires_at) in written.items():
        found = await destination.load(thread_id, owner=owner)
        if found is not None and _digest(_comparable(found, payloads, sealing)) == digest:
            report.verified += 1
        elif found is None and expires_at <= destination.clock():
            report.gone += 1  # it expired meanwhile, there as in the source
        elif thread_id not in kept_apart:
            report.mismatched.append(thread_id)
    return report


async def _write(
    destination: Store,
    thread: Thread,
    digest: str,
    payloads: Payloads,
    sealing: Sealing | None,
    replace_differing: bool,
    report: CopyReport,
) -> None:
    if await destination.restore(thread):
        report.copied += 1
        report.turns += len(thread.turns)
        return
    there = await destination.load(thread.id, owner=thread.owner)
    if there is not None and _digest(_comparable(there, payloads, sealing)) == digest:
        report.present += 1
    elif replace_differing:
        await destination.restore(thread, replace=True)
        report.replaced += 1
        report.turns += len(thread.turns)
    else:
        report.differing.append(thread.id)


async def _every_thread(source: Store, batch: int) -> list[tuple[str, str | None]]:
    """Every thread's ``(id, owner)``, in id order (one round trip per ``batch``)."""
    found: list[tuple[str, str | None]] = []
    after: str | None = None
    while page := await source.scan(after=after, limit=batch):
        found.extend(page)
        after = page[-1][0]
    return found


async def _record_keys(
    source: Store, destination: Store, payloads: Payloads, sealing: Sealing | None
) -> None:
    """Check the keys fit, and record on the destination the ones its threads will be
    sealed under, before any thread lands there (a process without them then refuses to
    start on it, as on the source)."""
    held = await source.sealing_keys(None, ())
    there = await destination.sealing_keys(None, ())
    empty = not (await destination.list_every_owner(limit=1)).threads
    configured = sealing.key_ids if sealing is not None else ()
    if payloads is not Payloads.AS_STORED:
        if sealing is None or not configured:
            raise ConfigurationError(
                f"copying with {payloads.value} needs CONVMEM_ENCRYPTION_KEYS: the key to"
                " seal with first, then every key the source's threads are sealed under"
            )
        unknown = sorted(set(held) - set(configured))
        if unknown:
            raise ConfigurationError(
                f"the source holds threads sealed under key id {', '.join(unknown)}, which"
                " CONVMEM_ENCRYPTION_KEYS lacks: add those keys after the first"
            )
    wanted = {
        Payloads.AS_STORED: tuple(held),
        Payloads.RESEAL: configured[:1],
        Payloads.UNSEAL: (),
    }[payloads]
    if set(there) != set(wanted) and not (empty and not there):
        raise ConfigurationError(
            f"the destination holds threads {_sealed_as(there)} and this copy would add"
            f" threads {_sealed_as(wanted)}: copy into an empty store, or choose --reseal"
            " or --unseal so both hold the same"
        )
    for key_id in wanted:
        await destination.sealing_keys(key_id, wanted)


def _sealed_as(key_ids: tuple[str, ...] | list[str]) -> str:
    return f"sealed under key id {', '.join(key_ids)}" if key_ids else "in clear"


def _transformed(thread: Thread, payloads: Payloads, sealing: Sealing | None) -> Thread:
    """The thread as the destination is to hold it."""
    if payloads is Payloads.AS_STORED or sealing is None:
        return thread
    if payloads is Payloads.UNSEAL:
        return sealing.open_thread(thread)
    summary = thread.summary
    return replace(
        thread,
        turns=tuple(sealing.reseal_turn(thread.id, t) or t for t in thread.turns),
        metadata=sealing.reseal_metadata(thread.id, thread.metadata) or thread.metadata,
        summary=None
        if summary is None
        else sealing.reseal_turn(thread.id, summary, summary=True) or summary,
    )


def _comparable(thread: Thread, payloads: Payloads, sealing: Sealing | None) -> Thread:
    """What two copies must agree on: the opened content when they were sealed on the
    way (a copy sealed by another run need not hold the same bytes), else the stored."""
    if payloads is Payloads.RESEAL and sealing is not None:
        return sealing.open_thread(thread)
    return thread


def _digest(thread: Thread) -> str:
    """A digest of everything a thread holds (sorted keys: metadata order is not content)."""
    header = (
        thread.id,
        thread.owner,
        thread.tool_name,
        thread.parent_id,
        thread.parent_seq,
        thread.version,
        thread.metadata,
        thread.created_at,
        thread.updated_at,
        thread.expires_at,
    )
    turns = [_turn_fields(t) for t in thread.turns]
    summary = None if thread.summary is None else _turn_fields(thread.summary)
    data = orjson.dumps(
        [header, turns, summary],
        default=_plain,
        option=orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME,
    )
    return hashlib.sha256(data).hexdigest()


def _plain(value: object) -> object:
    """Frozen metadata as a dict; a time as its microseconds (the same instant reads the
    same whatever time zone a driver gave it)."""
    if isinstance(value, datetime):
        return to_micros(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not part of a thread")


def _turn_fields(turn: Turn) -> tuple[object, ...]:
    return (turn.seq, turn_params(turn), turn.created_at)
