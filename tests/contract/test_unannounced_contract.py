"""Writes no instance could announce (``Store.record_unannounced``, ``unannounced``,
``mark_fenced``): one round trip each, on every store."""

from __future__ import annotations

import uuid

from convmem.changes import DELETED
from tests.conftest import Backend
from tests.contract.test_store_contract import Trips


async def test_unannounced_writes_are_read_until_fenced_then_for_a_while(
    raw_backend: Backend,
) -> None:
    store = raw_backend.store
    one, two = str(uuid.uuid4()), str(uuid.uuid4())
    assert await store.unannounced(fenced_within=60) == ()
    for thread_id, version in ((one, 4), (two, DELETED), (one, 4)):  # (the repeat: once)
        trips = Trips(raw_backend)
        await store.record_unannounced(thread_id, version)
        assert trips.count == 1
    trips = Trips(raw_backend)
    assert sorted(await store.unannounced(fenced_within=60)) == sorted(
        [(one, 4, False), (two, DELETED, False)]
    )
    assert trips.count == 1
    trips = Trips(raw_backend)
    await store.mark_fenced([(two, DELETED)])
    assert trips.count == 1
    assert sorted(await store.unannounced(fenced_within=60)) == sorted(
        [(one, 4, False), (two, DELETED, True)]
    )
    assert await store.unannounced(fenced_within=0) == ((one, 4, False),)
    await store.mark_fenced([(one, 4), (one, 5)])  # (one never recorded: nothing)
    assert await store.unannounced(fenced_within=0) == ()
