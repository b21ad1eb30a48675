"""The store contract of compaction summaries: ``save_summary``, and how loads, pops,
clears, deletes and retries treat a summary.

Run on every store, plain and sealed (``conftest.py``), round trips counted on the wire.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from convmem.errors import (
    InvalidInputError,
    StaleSummaryError,
    ThreadExpiredError,
    ThreadNotFoundError,
)
from convmem.models import Turn
from tests.conftest import LIMITS, Backend
from tests.contract.test_store_contract import Trips, make_thread, user


def summary(text: str = "the story so far", **fields: object) -> Turn:
    return Turn(
        role="system",
        content=text,
        model_provider="echo",
        model_name="extractive",
        metadata={"covers": "turns 1..n", "tokens": 12},
        **fields,  # type: ignore[arg-type]
    )


async def test_a_summary_is_saved_in_one_round_trip_and_loaded_with_the_thread(
    backend: Backend,
) -> None:
    thread = await make_thread(backend, 4, owner="alice")
    trips = Trips(backend)
    saved = await backend.store.save_summary(
        thread.id, summary("über 🧵 'quoted' \\ %s"), covers_to_seq=3, base_version=4, owner="alice"
    )
    assert trips.count == 1
    assert (saved.base_version, saved.version) == (4, 5)
    assert (saved.summary.seq, saved.summary.content) == (3, "über 🧵 'quoted' \\ %s")
    assert saved.summary.created_at == backend.clock.now
    # upkeep, not activity: the times stay
    assert (saved.updated_at, saved.expires_at) == (thread.updated_at, thread.expires_at)
    trips = Trips(backend)
    loaded = await backend.store.load(thread.id, owner="alice")
    assert trips.count == 1
    assert loaded is not None
    assert loaded.version == 5
    assert loaded.turns == thread.turns  # every turn stays
    assert loaded.summary == saved.summary
    assert loaded.summarised_through == 3
    assert dict(loaded.summary.metadata) == {"covers": "turns 1..n", "tokens": 12}
    assert saved.applied_to(thread) == loaded


async def test_a_newer_summary_replaces_the_old_one_and_turns_go_on_after_it(
    backend: Backend,
) -> None:
    thread = await make_thread(backend, 3)
    await backend.store.save_summary(
        thread.id, summary("first"), covers_to_seq=2, base_version=3, owner=None
    )
    appended = await backend.store.append(thread.id, [user("five"), user("six")], owner=None)
    assert [t.seq for t in appended.new_turns] == [5, 6]  # seq 4 was the summary's version
    second = await backend.store.save_summary(
        thread.id, summary("second"), covers_to_seq=5, base_version=appended.version, owner=None
    )
    assert second.version == 7
    loaded = await backend.store.load(thread.id, owner=None)
    assert loaded is not None
    assert (loaded.summary.content, loaded.summarised_through) == ("second", 5)  # type: ignore[union-attr]
    assert [t.seq for t in loaded.turns] == [1, 2, 3, 5, 6]


async def test_appends_after_the_base_version_do_not_make_a_summary_stale(
    backend: Backend,
) -> None:
    thread = await make_thread(backend, 3)
    await backend.store.append(thread.id, [user("four")], owner=None)  # made from version 3
    saved = await backend.store.save_summary(
        thread.id, summary(), covers_to_seq=2, base_version=3, owner=None
    )
    assert (saved.base_version, saved.version) == (4, 5)
    assert saved.applied_to(thread) is None  # not the version it was saved on


async def test_a_summary_made_before_a_pop_clear_or_other_summary_is_refused(
    backend: Backend,
) -> None:
    thread = await make_thread(backend, 4)
    await backend.store.pop(thread.id, owner=None)  # version 5
    with pytest.raises(StaleSummaryError, match="summarise its current version again"):
        await backend.store.save_summary(
            thread.id, summary(), covers_to_seq=2, base_version=4, owner=None
        )
    await backend.store.save_summary(
        thread.id, summary("a"), covers_to_seq=2, base_version=5, owner=None
    )  # version 6: another instance's
    with pytest.raises(StaleSummaryError):
        await backend.store.save_summary(
            thread.id, summary("b"), covers_to_seq=3, base_version=5, owner=None
        )
    with pytest.raises(StaleSummaryError):  # turn 4 was popped
        await backend.store.save_summary(
            thread.id, summary("c"), covers_to_seq=4, base_version=6, owner=None
        )
    with pytest.raises(StaleSummaryError):  # from a version the thread never reached
        await backend.store.save_summary(
            thread.id, summary("d"), covers_to_seq=3, base_version=9, owner=None
        )
    loaded = await backend.store.load(thread.id, owner=None)
    assert loaded is not None
    assert (loaded.version, loaded.summary.content) == (6, "a")  # type: ignore[union-attr]


async def test_two_summaries_of_one_version_race_and_exactly_one_is_kept(
    backend: Backend,
) -> None:
    thread = await make_thread(backend, 6)
    outcomes = await asyncio.gather(
        *(
            backend.store.save_summary(
                thread.id, summary(f"by {i}"), covers_to_seq=4, base_version=6, owner=None
            )
            for i in range(4)
        ),
        return_exceptions=True,
    )
    saved = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(saved) == 1, outcomes
    assert all(isinstance(o, StaleSummaryError) for o in outcomes if o not in saved)
    loaded = await backend.store.load(thread.id, owner=None)
    assert loaded is not None
    assert (loaded.version, loaded.summary) == (7, saved[0].summary)


async def test_load_since_sends_the_whole_thread_with_its_summary_after_a_save(
    backend: Backend,
) -> None:
    thread = await make_thread(backend, 3)
    saved = await backend.store.save_summary(
        thread.id, summary(), covers_to_seq=2, base_version=3, owner=None
    )
    await backend.store.append(thread.id, [user("five")], owner=None)  # version 5
    trips = Trips(backend)
    old = await backend.store.load_since(thread.id, 3, owner=None)
    assert trips.count == 1
    assert old is not None
    assert old.whole
    assert (old.version, [t.seq for t in old.turns]) == (5, [1, 2, 3, 5])
    assert old.summary == saved.summary
    recent = await backend.store.load_since(thread.id, 4, owner=None)
    assert recent is not None
    assert not recent.whole
    assert [t.seq for t in recent.turns] == [5]
    assert recent.summary == saved.summary
    loaded = await backend.store.load(thread.id, owner=None)
    assert old.applied_to(thread) == loaded
    assert recent.applied_to(saved.applied_to(thread)) == loaded  # type: ignore[arg-type]


async def test_a_pop_into_the_covered_turns_removes_the_summary(backend: Backend) -> None:
    thread = await make_thread(backend, 4)
    saved = await backend.store.save_summary(
        thread.id, summary(), covers_to_seq=3, base_version=4, owner=None
    )
    summarised = saved.applied_to(thread)
    assert summarised is not None
    above = await backend.store.pop(thread.id, owner=None)  # turn 4: not covered
    kept = await backend.store.load(thread.id, owner=None)
    assert kept is not None
    assert kept.summary == saved.summary
    assert above.applied_to(summarised) == kept
    into = await backend.store.pop(thread.id, owner=None)  # turn 3: covered
    dropped = await backend.store.load(thread.id, owner=None)
    assert dropped is not None
    assert (dropped.summary, [t.seq for t in dropped.turns]) == (None, [1, 2])
    assert into.applied_to(kept) == dropped


async def test_clear_and_delete_remove_the_summary(backend: Backend) -> None:
    thread = await make_thread(backend, 3)
    saved = await backend.store.save_summary(
        thread.id, summary(), covers_to_seq=1, base_version=3, owner=None
    )
    cleared = await backend.store.clear(thread.id, owner=None)
    loaded = await backend.store.load(thread.id, owner=None)
    assert loaded is not None
    assert (loaded.summary, loaded.turns) == (None, ())
    assert cleared.applied_to(saved.applied_to(thread)) == loaded  # type: ignore[arg-type]
    other = await make_thread(backend, 2)
    await backend.store.save_summary(
        other.id, summary(), covers_to_seq=1, base_version=2, owner=None
    )
    assert await backend.store.delete(other.id, owner=None)
    assert await backend.store.load(other.id, owner=None) is None


async def test_save_summary_is_owner_scoped_and_refuses_expired_threads(
    backend: Backend,
) -> None:
    thread = await make_thread(backend, 2, owner="alice")
    with pytest.raises(ThreadNotFoundError):
        await backend.store.save_summary(
            thread.id, summary(), covers_to_seq=1, base_version=2, owner="bob"
        )
    with pytest.raises(ThreadNotFoundError):
        await backend.store.save_summary(
            str(uuid.uuid4()), summary(), covers_to_seq=1, base_version=2, owner="alice"
        )
    backend.clock.advance(LIMITS.ttl + timedelta(seconds=1))
    with pytest.raises(ThreadExpiredError):
        await backend.store.save_summary(
            thread.id, summary(), covers_to_seq=1, base_version=2, owner="alice"
        )
    backend.clock.advance(-LIMITS.ttl)
    loaded = await backend.store.load(thread.id, owner="alice")
    assert loaded is not None
    assert (loaded.version, loaded.summary) == (2, None)


async def test_save_summary_refuses_a_point_that_is_not_a_seq(backend: Backend) -> None:
    thread = await make_thread(backend, 2)
    for covers, base in ((0, 2), (-1, 2), (True, 2), (1, 0), (3, 2)):
        with pytest.raises(InvalidInputError):
            await backend.store.save_summary(
                thread.id, summary(), covers_to_seq=covers, base_version=base, owner=None
            )
    loaded = await backend.store.load(thread.id, owner=None)
    assert loaded is not None
    assert (loaded.version, loaded.summary) == (2, None)
