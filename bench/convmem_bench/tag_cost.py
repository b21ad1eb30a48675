"""What the L2 tags cost a read: decoding one cached copy with and without its tags.

``PYTHONPATH=bench python -m convmem_bench.tag_cost`` decodes the same hash fields (a
thread of 50 and of 200 turns of about 750 bytes) untagged, tagged with turns (encryption
off, ``CONVMEM_CACHE_KEY``) and tagged without turns (encryption on: the ciphertext binds
them), interleaved in one process, and prints the medians and ratios. No Redis: this is
the decoding an L2 hit does after its one round trip.
"""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from convmem.cache.codec import (
    decode_thread,
    encode_header,
    encode_turns,
    header_tag,
    state_tag,
)
from convmem.cache.tags import CacheTags
from convmem.encryption import new_key
from convmem.models import Thread, Turn
from convmem.records import to_micros

RUNS = 300
_AT = datetime(2026, 12, 3, tzinfo=UTC)


def hash_fields(turns: int, tags: CacheTags | None) -> tuple[str, dict[bytes, bytes]]:
    """The Redis hash of a thread of ``turns`` turns, as ``RedisCache.install`` writes it."""
    thread_id = str(uuid.uuid4())
    made = tuple(
        Turn(role="user", content="word " * 150, seq=seq, created_at=_AT)
        for seq in range(1, turns + 1)
    )
    thread = Thread(thread_id, made, "chat", None, "alice", {}, _AT, _AT, _AT + timedelta(hours=3))
    header = encode_header(thread)
    updated, expires = to_micros(thread.updated_at), to_micros(thread.expires_at)
    fields = {
        b"v": b"%d" % turns,
        b"n": b"%d" % turns,
        b"h": header,
        b"u": b"%d" % updated,
        b"e": b"%d" % expires,
        b"a": header_tag(tags, thread_id, header),
        b"t": state_tag(tags, thread_id, turns, turns, 0, updated, expires),
    }
    for turn, value in zip(made, encode_turns(made, thread_id, tags), strict=True):
        fields[b"%d" % turn.seq] = value
    return thread_id, fields


def main() -> None:
    key = new_key()
    variants = {
        "untagged": None,
        "tagged, turns too (encryption off)": CacheTags.from_text(key, setting="bench"),
        "tagged, no turns (encryption on)": CacheTags.from_text(key, setting="bench", turns=False),
    }
    for turns in (50, 200):
        copies = {name: (tags, *hash_fields(turns, tags)) for name, tags in variants.items()}
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(RUNS):
            for name, (tags, thread_id, fields) in copies.items():
                started = time.perf_counter()
                decode_thread(thread_id, fields, tags)
                times[name].append(time.perf_counter() - started)
        base = statistics.median(times["untagged"])
        for name, measured in times.items():
            median = statistics.median(measured)
            print(
                f"{turns} turns, {name}: {median * 1e6:.0f} µs ({median / base:.2f}×,"
                f" {(median - base) / turns * 1e6:+.2f} µs per turn)"
            )


if __name__ == "__main__":
    main()
