"""The store contract of ``update``: a thread's metadata replaced in one versioned write.

Run on every store, plain and sealed (``conftest.py``), round trips counted on the wire.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from convmem.errors import StaleUpdateError, ThreadExpiredError, ThreadNotFoundError
from tests.conftest import LIMITS, Backend
from tests.contract.test_store_contract import Trips, make_thread, user


async def test_an_update_replaces_the_metadata_in_one_round_trip_and_keeps_the_turns(
    backend: Backend,
) -> None:
    thread = await make_thread(backend, 3, owner="alice")
    backend.clock.advance(timedelta(seconds=5))
    trips = Trips(backend)
    updated = await backend.store.update(
        thread.id, {"title": "über 🧵 'quoted' \\ %s", "tags": ["a"]}, owner="alice"
    )
    assert trips.count == 1
    assert (updated.base_version, updated.version) == (3, 4)
    assert dict(updated.metadata) == {"title": "über 🧵 'quoted' \\ %s", "tags": ["a"]}
    # a rename is activity (lists put it first) but extends no lifetime
    assert updated.updated_at == backend.clock.now
    assert updated.expires_at == thread.expires_at
    loaded = await backend.store.load(thread.id, owner="alice")
    assert loaded is not None
    assert loaded.version == 4
    assert loaded.turns == thread.turns
    assert dict(loaded.metadata) == {"title": "über 🧵 'quoted' \\ %s", "tags": ["a"]}
    assert updated.applied_to(thread) == loaded
    assert updated.applied_to(loaded) is None  # not the version it was made on


async def test_a_copy_older_than_an_update_is_sent_the_whole_thread(backend: Backend) -> None:
    """No turn takes the update's seq, so a delta after it is the whole thread, with the
    new metadata; the next append's turns follow it."""
    thread = await make_thread(backend, 2)
    await backend.store.update(thread.id, {"title": "renamed"}, owner=None)
    appended = await backend.store.append(thread.id, [user("after")], owner=None)
    assert [t.seq for t in appended.new_turns] == [4]
    delta = await backend.store.load_since(thread.id, 2, owner=None)
    assert delta is not None
    assert delta.whole
    refreshed = delta.applied_to(thread)
    assert refreshed == await backend.store.load(thread.id, owner=None)
    assert dict(refreshed.metadata) == {"title": "renamed"}


async def test_an_update_made_on_an_older_version_is_refused_with_the_version(
    backend: Backend,
) -> None:
    thread = await make_thread(backend, 2)
    await backend.store.append(thread.id, [user("meanwhile")], owner=None)
    with pytest.raises(StaleUpdateError) as refused:
        await backend.store.update(thread.id, {"title": "late"}, owner=None, base_version=2)
    assert refused.value.version == 3
    loaded = await backend.store.load(thread.id, owner=None)
    assert loaded is not None
    assert (loaded.version, dict(loaded.metadata)) == (3, {})
    on_time = await backend.store.update(thread.id, {"title": "now"}, owner=None, base_version=3)
    assert on_time.version == 4


async def test_update_is_owner_scoped_and_refuses_expired_threads(backend: Backend) -> None:
    thread = await make_thread(backend, 1, owner="alice")
    with pytest.raises(ThreadNotFoundError):
        await backend.store.update(thread.id, {"title": "x"}, owner="bob")
    with pytest.raises(ThreadNotFoundError):
        await backend.store.update(str(uuid.uuid4()), {"title": "x"}, owner="alice")
    backend.clock.advance(LIMITS.ttl + timedelta(seconds=1))
    with pytest.raises(ThreadExpiredError):
        await backend.store.update(thread.id, {"title": "x"}, owner="alice")
    backend.clock.advance(-LIMITS.ttl)
    loaded = await backend.store.load(thread.id, owner="alice")
    assert loaded is not None
    assert (loaded.version, dict(loaded.metadata)) == (1, {})
