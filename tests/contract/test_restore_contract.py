"""``Store.restore``: a thread written exactly as another store held it (``convmem copy``),
on every store, on stored payloads."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from convmem.errors import StaleSummaryError
from convmem.models import Thread, Turn
from convmem.stores.base import NewThread
from tests.conftest import Backend
from tests.contract.test_store_contract import Trips, user


async def _grown(backend: Backend) -> tuple[Thread, Thread]:
    """A thread that was popped (its version above its newest seq) and summarised, with
    keyed, filed turns and metadata, and a fork of it: each as the store loads it."""
    store = backend.store
    parent = NewThread(str(uuid.uuid4()), "chat", None, "ann", {"title": "grown", "n": [1, 2]})
    await store.create(parent, [user("one", key="k1", files=("a.py",), model_name="m")])
    await store.append(parent.id, [user("two"), user("three"), user("four")], owner="ann")
    await store.pop(parent.id, owner="ann")
    summary = Turn(role="system", content="one to two", metadata={"by": "test"})
    await store.save_summary(parent.id, summary, covers_to_seq=2, base_version=5, owner="ann")
    child = NewThread(str(uuid.uuid4()), "chat", parent.id, "ann", {})
    await store.fork(child, at_seq=2)
    await store.append(child.id, [user("fork's own")], owner="ann")
    loaded = [await store.load(t.id, owner="ann") for t in (parent, child)]
    assert loaded[0] is not None
    assert loaded[1] is not None
    return loaded[0], loaded[1]


async def test_a_restored_thread_loads_exactly_as_it_was_stored(raw_backend: Backend) -> None:
    store = raw_backend.store
    parent, child = await _grown(raw_backend)
    assert parent.version > parent.newest_seq
    assert parent.summary is not None
    assert (child.parent_id, child.parent_seq) == (parent.id, 2)
    for thread in (child, parent):  # a child may come first: the link is only an id
        assert await store.delete(thread.id, owner="ann") is not None
    for thread in (child, parent):
        trips = Trips(raw_backend)
        assert await store.restore(thread) is True
        assert trips.count == 1
        assert await store.load(thread.id, owner="ann") == thread
    listed = await store.list(owner="ann")
    assert {t.id: t.turns for t in listed.threads} == {parent.id: 3, child.id: 1}


async def test_restoring_over_a_thread_writes_nothing_unless_told_to_replace(
    raw_backend: Backend,
) -> None:
    store = raw_backend.store
    parent, _ = await _grown(raw_backend)
    other = replace(
        parent,
        owner="bob",
        turns=(replace(parent.turns[0], content="another one"),),
        summary=None,
        version=7,
    )
    assert await store.restore(other) is False
    assert await store.load(parent.id, owner="ann") == parent
    assert await store.restore(other, replace=True) is True
    assert await store.load(parent.id, owner="ann") is None
    assert await store.load(parent.id, owner="bob") == other


async def test_a_restored_thread_goes_on_from_its_version(raw_backend: Backend) -> None:
    """Readers with an older copy get it whole, a summary made before it is stale, and
    the next append takes the seq after its version."""
    store = raw_backend.store
    parent, _ = await _grown(raw_backend)
    await store.delete(parent.id, owner="ann")
    await store.restore(parent)
    delta = await store.load_since(parent.id, parent.version - 1, owner="ann")
    assert delta is not None
    assert delta.whole
    current = await store.load_since(parent.id, parent.version, owner="ann")
    assert current is not None
    assert not current.whole
    assert current.turns == ()
    with pytest.raises(StaleSummaryError):
        await store.save_summary(
            parent.id,
            Turn(role="system", content="late"),
            covers_to_seq=2,
            base_version=parent.version - 1,
            owner="ann",
        )
    appended = await store.append(parent.id, [user("five")], owner="ann")
    assert (appended.version, appended.turns[0].seq) == (parent.version + 1, parent.version + 1)
