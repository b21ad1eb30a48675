"""The store contract of ``rewrite``: the turns after a seq replaced, atomically.

Run on every store, plain and sealed (``conftest.py``), round trips counted on the wire.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from convmem.errors import (
    IdempotencyConflictError,
    InvalidInputError,
    ThreadExpiredError,
    ThreadFullError,
    ThreadNotFoundError,
    TurnNotFoundError,
)
from convmem.models import Turn
from tests.conftest import LIMITS, Backend
from tests.contract.test_store_contract import Trips, make_thread, user
from tests.contract.test_summary_contract import summary


def contents(turns: tuple[Turn, ...]) -> list[tuple[int, str]]:
    return [(t.seq, t.content) for t in turns]


async def test_rewrite_replaces_the_turns_after_a_seq_in_one_round_trip(
    backend: Backend,
) -> None:
    thread = await make_thread(backend, 4, owner="alice")
    backend.clock.advance(timedelta(minutes=5))
    trips = Trips(backend)
    rewritten = (
        await backend.store.rewrite(
            thread.id,
            [user("new three"), user("new four", key="k4"), user("five")],
            after_seq=2,
            owner="alice",
            metadata={"rewritten": True},
        )
    ).thread
    assert trips.count == 1
    assert rewritten.version == 4 + 1 + 3
    assert contents(rewritten.turns) == [
        (1, "turn 1"),
        (2, "turn 2"),
        (6, "new three"),
        (7, "new four"),
        (8, "five"),
    ]
    assert dict(rewritten.metadata) == {"rewritten": True}
    assert rewritten.expires_at == backend.clock.now + LIMITS.ttl
    loaded = await backend.store.load(thread.id, owner="alice")
    assert loaded == rewritten
    # the old version's readers get the whole thread; the new version's, what follows
    old = await backend.store.load_since(thread.id, 4, owner="alice")
    assert old is not None
    assert old.whole
    assert contents(old.turns) == contents(rewritten.turns)
    appended = await backend.store.append(thread.id, [user("six")], owner="alice")
    assert [t.seq for t in appended.new_turns] == [9]
    recent = await backend.store.load_since(thread.id, 8, owner="alice")
    assert recent is not None
    assert not recent.whole
    assert contents(recent.turns) == [(9, "six")]


async def test_rewrite_after_zero_replaces_every_turn_and_metadata_stays_unless_given(
    backend: Backend,
) -> None:
    thread = await make_thread(backend, 3)
    rewritten = (
        await backend.store.rewrite(thread.id, [user("only")], after_seq=0, owner=None)
    ).thread
    assert contents(rewritten.turns) == [(5, "only")]
    assert rewritten.metadata == thread.metadata
    emptied = (await backend.store.rewrite(thread.id, [], after_seq=0, owner=None)).thread
    assert (emptied.turns, emptied.version) == ((), 6)


async def test_rewrite_drops_a_summary_that_covered_a_removed_turn(backend: Backend) -> None:
    thread = await make_thread(backend, 4)
    await backend.store.save_summary(
        thread.id, summary(), covers_to_seq=2, base_version=4, owner=None
    )
    kept = (await backend.store.rewrite(thread.id, [user("x")], after_seq=2, owner=None)).thread
    assert kept.summary is not None
    assert kept.summary.seq == 2
    gone = (await backend.store.rewrite(thread.id, [user("y")], after_seq=1, owner=None)).thread
    assert gone.summary is None
    assert contents(gone.turns) == [(1, "turn 1"), (9, "y")]


async def test_a_refused_rewrite_writes_nothing(backend: Backend) -> None:
    small = LIMITS.max_turns
    thread = await make_thread(backend, 3)
    await backend.store.append(thread.id, [user("keyed", key="kept-key")], owner=None)
    before = await backend.store.load(thread.id, owner=None)
    with pytest.raises(TurnNotFoundError):
        await backend.store.rewrite(thread.id, [user("a")], after_seq=99, owner=None)
    with pytest.raises(IdempotencyConflictError):  # seq 4 holds that key and is kept
        await backend.store.rewrite(thread.id, [user("b", key="kept-key")], after_seq=4, owner=None)
    with pytest.raises(ThreadFullError):
        await backend.store.rewrite(
            thread.id, [user(f"c{i}") for i in range(small)], after_seq=1, owner=None
        )
    with pytest.raises(ThreadNotFoundError):
        await backend.store.rewrite(thread.id, [user("d")], after_seq=1, owner="bob")
    with pytest.raises(ThreadNotFoundError):
        await backend.store.rewrite(str(uuid.uuid4()), [user("e")], after_seq=0, owner=None)
    for bad in (-1, None, True):
        with pytest.raises(InvalidInputError):
            await backend.store.rewrite(
                thread.id,
                [user("f")],
                after_seq=bad,  # type: ignore[arg-type]
                owner=None,
            )
    assert await backend.store.load(thread.id, owner=None) == before
    backend.clock.advance(LIMITS.ttl + timedelta(seconds=1))
    with pytest.raises(ThreadExpiredError):
        await backend.store.rewrite(thread.id, [user("g")], after_seq=1, owner=None)


async def test_a_removed_turns_key_may_be_used_by_the_new_turns(backend: Backend) -> None:
    thread = await make_thread(backend)
    await backend.store.append(
        thread.id, [user("q", key="pal:0"), user("a", key="pal:1")], owner=None
    )
    rewritten = (
        await backend.store.rewrite(
            thread.id, [user("a again", key="pal:1")], after_seq=1, owner=None
        )
    ).thread
    assert [(t.content, t.key) for t in rewritten.turns] == [("q", "pal:0"), ("a again", "pal:1")]
