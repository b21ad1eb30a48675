"""``convmem copy``: every thread moves between stores as it was, a kill mid-copy loses
nothing and a run after it finishes the job, and keys never get mixed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from convmem import Memory
from convmem.encryption import Encryption, new_key
from convmem.errors import ConfigurationError
from convmem.key_check import check_sealing_keys
from convmem.models import Thread, Turn
from convmem.store_copy import Payloads, copy_threads
from convmem.stores.base import NewThread, Store
from convmem.stores.postgres import PostgresStore
from convmem.stores.sqlite import SqliteStore
from tests.conftest import LIMITS, Backend
from tests.support.sealed import SealedStore
from tests.support.services import pg_url


def user(content: str, **fields: object) -> Turn:
    return Turn(role="user", content=content, **fields)  # type: ignore[arg-type]


async def seed(store: Store, owners: tuple[str | None, ...] = ("ann", "bob", None)) -> list[str]:
    """Threads of every shape: per owner, one keyed and filed, one popped and summarised,
    and a fork of it; returns their ids (an expired thread is made by the caller)."""
    ids: list[str] = []
    for owner in owners:
        plain = NewThread(str(uuid.uuid4()), "chat", None, owner, {"title": f"{owner}'s"})
        await store.create(plain, [user("hello", key="k1", files=("a.py",), model_name="m")])
        await store.append(plain.id, [Turn(role="assistant", content="hi", key="k2")], owner=owner)
        grown = NewThread(str(uuid.uuid4()), "review", None, owner, {})
        await store.create(grown, [user(f"turn {i}") for i in range(1, 5)])
        await store.pop(grown.id, owner=owner)
        await store.save_summary(
            grown.id,
            Turn(role="system", content="turns 1-2"),
            covers_to_seq=2,
            base_version=5,
            owner=owner,
        )
        fork = NewThread(str(uuid.uuid4()), "review", grown.id, owner, {"forked": True})
        await store.fork(fork, at_seq=2)
        await store.append(fork.id, [user("the fork's own")], owner=owner)
        ids += [plain.id, grown.id, fork.id]
    return ids


async def every_thread(store: Store) -> dict[str, Thread]:
    found: dict[str, Thread] = {}
    after: str | None = None
    while page := await store.scan(after=after, limit=100):
        for thread_id, owner in page:
            thread = await store.load(thread_id, owner=owner)
            if thread is not None:
                found[thread_id] = thread
        after = page[-1][0]
    return found


async def test_every_thread_moves_as_it_was_into_every_store(
    backend: Backend, tmp_path: Path
) -> None:
    async with SqliteStore.from_url(
        f"sqlite:///{tmp_path}/source.db", limits=LIMITS, clock=backend.clock
    ) as source:
        doomed = NewThread(str(uuid.uuid4()), "chat", None, "ann", {})
        await source.create(doomed, [user("soon gone")])
        backend.clock.advance(LIMITS.ttl - timedelta(minutes=1))
        ids = await seed(source)
        backend.clock.advance(timedelta(minutes=2))  # the first thread has expired
        trips = backend.round_trips()
        report = await copy_threads(source, backend.store)
        assert (report.total, report.copied, report.gone, report.turns) == (10, 9, 1, 18)
        assert (report.verified, report.ok) == (9, True)
        # Per thread one restore and one load to verify; and reading the destination's
        # keys (recording none) and whether it is empty. On direct PostgreSQL, psycopg
        # prepares a statement on its sixth use, which costs one more round trip once.
        prepared = 2 if backend.name == "postgres" else 0
        assert 9 * 2 + 2 <= backend.round_trips() - trips <= 9 * 2 + 2 + prepared
        copied = await every_thread(backend.store)
        assert copied == await every_thread(source)
        assert set(copied) == set(ids)

        again = await copy_threads(source, backend.store)
        assert (again.copied, again.present, again.verified, again.ok) == (0, 9, 9, True)

        # Served by a Memory over the destination: the fork's history is its parent's
        # turns up to the fork point, then its own; continuing takes the next seq.
        async with Memory(backend.store) as memory:
            fork = copied[ids[2]]
            ancestors = await memory.get_ancestors(fork, owner="ann")
            history = [t.content for thread in (*ancestors, fork) for t in thread.turns]
            assert history == ["turn 1", "turn 2", "the fork's own"]
            grown = copied[ids[1]]
            added = await memory.add_turns(grown.id, [user("five")], owner="ann")
            assert added.turns[-1].seq == grown.version + 1


async def test_a_copy_back_from_postgres_to_sqlite_is_identical(
    clean_pg: str, tmp_path: Path
) -> None:
    async with (
        PostgresStore.from_url(pg_url(clean_pg), limits=LIMITS) as source,
        SqliteStore.from_url(f"sqlite:///{tmp_path}/back.db", limits=LIMITS) as destination,
    ):
        await seed(source)
        report = await copy_threads(source, destination)
        assert (report.copied, report.verified, report.ok) == (9, 9, True)
        assert await every_thread(destination) == await every_thread(source)


async def test_sealed_threads_move_sealed_or_resealed_or_opened(tmp_path: Path) -> None:
    old_key, new = new_key(), new_key()
    old, both, new_only = Encryption([old_key]), Encryption([new, old_key]), Encryption([new])
    urls = {name: f"sqlite:///{tmp_path}/{name}.db" for name in ("src", "same", "re", "open")}
    stores = {name: SqliteStore.from_url(url, limits=LIMITS) for name, url in urls.items()}
    for store in stores.values():
        await store.open()
    try:
        await check_sealing_keys(stores["src"], old)
        ids = await seed(SealedStore(stores["src"], old))
        clear = await every_thread(SealedStore(stores["src"], old))

        report = await copy_threads(stores["src"], stores["same"])
        assert (report.copied, report.ok) == (9, True)
        assert await stores["same"].sealing_keys(None, ()) == old.key_ids
        assert len(ids) == 9
        assert await every_thread(stores["same"]) == await every_thread(stores["src"])

        report = await copy_threads(
            stores["src"], stores["re"], payloads=Payloads.RESEAL, sealing=both
        )
        assert (report.copied, report.ok) == (9, True)
        assert await stores["re"].sealing_keys(None, ()) == both.key_ids[:1]
        assert await every_thread(SealedStore(stores["re"], new_only)) == clear
        stored = (await stores["re"].load(ids[0], owner="ann")).turns  # type: ignore[union-attr]
        assert all(t.content.startswith(f"cm2.{new_only.key_ids[0]}.") for t in stored)

        report = await copy_threads(
            stores["src"], stores["open"], payloads=Payloads.UNSEAL, sealing=old
        )
        assert (report.copied, report.ok) == (9, True)
        assert await stores["open"].sealing_keys(None, ()) == ()
        assert await every_thread(stores["open"]) == clear

        # Sealed threads never land beside clear ones, nor clear beside sealed: refused
        # before anything is written.
        with pytest.raises(ConfigurationError, match="in clear"):
            await copy_threads(stores["same"], stores["open"])
        with pytest.raises(ConfigurationError, match="lacks"):
            await copy_threads(
                stores["src"], stores["open"], payloads=Payloads.UNSEAL, sealing=new_only
            )
        assert len(await every_thread(stores["open"])) == 9
    finally:
        for store in stores.values():
            await store.aclose()


def convmem_copy(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "convmem", "copy", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})},
    )


@pytest.fixture
def copy_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/target.db"
    return pg_url(request.getfixturevalue("clean_pg"))


@pytest.mark.parametrize("copy_target", ["sqlite", "postgres"], indirect=True)
async def test_a_copy_killed_midway_resumes_and_ends_verified(
    copy_target: str, tmp_path: Path
) -> None:
    source_url = f"sqlite:///{tmp_path}/many.db"
    async with SqliteStore.from_url(source_url) as source:
        for i in range(1500):
            spec = NewThread(str(uuid.uuid4()), "chat", None, f"owner-{i % 7}", {"i": i})
            await source.create(spec, [user(f"q{i}"), Turn(role="assistant", content=f"a{i}")])
        expected = await every_thread(source)

    # SIGKILL once the copy is well under way, wherever it is then (inside a write or not).
    running = convmem_copy("--from", source_url, "--to", copy_target)
    assert running.stderr is not None
    for line in running.stderr:
        if line.startswith("copy: 300/"):
            break
    else:
        out, _ = running.communicate()
        pytest.fail(f"the copy never got under way (exit {running.returncode}): {out}")
    running.send_signal(signal.SIGKILL)
    running.communicate()  # reaps it and closes its pipes
    assert running.returncode == -signal.SIGKILL

    async with _store(copy_target) as target:
        partial = await every_thread(target)
    assert 300 <= len(partial) < 1500, "the kill did not land mid-copy"
    assert all(expected[thread_id] == thread for thread_id, thread in partial.items())

    resumed = convmem_copy("--from", source_url, "--to", copy_target)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    said = " ".join(out.split())
    assert f"copied {1500 - len(partial)} thread(s) ({2 * (1500 - len(partial))} turn(s))" in said
    assert f"{len(partial)} already there" in said
    assert "verified 1500 of 1500" in said
    async with _store(copy_target) as target:
        assert await every_thread(target) == expected

    again = convmem_copy("--from", source_url, "--to", copy_target)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "copied 0 thread(s) (0 turn(s))" in out
    assert "1500 already there" in " ".join(out.split())


def _store(url: str) -> Store:
    if url.startswith("sqlite"):
        return SqliteStore.from_url(url)
    return PostgresStore.from_url(url)


async def test_a_thread_with_other_content_is_reported_and_only_replaced_when_asked(
    tmp_path: Path,
) -> None:
    source_url, target_url = (f"sqlite:///{tmp_path}/{n}.db" for n in ("s", "t"))
    async with (
        SqliteStore.from_url(source_url) as source,
        SqliteStore.from_url(target_url) as target,
    ):
        ids = await seed(source, owners=("ann",))
        theirs = await source.load(ids[0], owner="ann")
        assert theirs is not None
        await target.restore(replace(theirs, turns=theirs.turns[:1], version=1))

    first = convmem_copy("--from", source_url, "--to", target_url)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 1
    assert f"differs: {ids[0]} is in the destination with other content" in " ".join(err.split())
    assert "copied 2 thread(s)" in out

    replaced = convmem_copy("--from", source_url, "--to", target_url, "--replace")
    out, err = replaced.communicate(timeout=120)
    assert replaced.returncode == 0, err
    assert "2 already there, 1 replaced" in " ".join(out.split())
    assert "verified 3 of 3" in " ".join(out.split())


def test_copy_refuses_unclear_requests(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    same = convmem_copy("--from", url, "--to", url)
    _, err = same.communicate(timeout=60)
    assert same.returncode == 1
    assert "--from and --to name the same store" in err
    both = convmem_copy("--from", url, "--to", f"{url}2", "--reseal", "--unseal")
    _, err = both.communicate(timeout=60)
    assert both.returncode == 1
    assert "choose one of --reseal and --unseal" in err
    missing = convmem_copy("--from", f"{url}-typo", "--to", f"{url}2")
    _, err = missing.communicate(timeout=60)
    assert missing.returncode == 1
    assert f"there is no SQLite file at {tmp_path}/x.db-typo to copy from" in " ".join(err.split())
    assert not Path(f"{tmp_path}/x.db-typo").exists()
    subprocess.run([sys.executable, "-m", "convmem", "migrate", "--store", url], check=True)
    keyless = convmem_copy("--from", url, "--to", f"{url}2", "--reseal")
    _, err = keyless.communicate(timeout=60)
    assert keyless.returncode == 1
    assert "needs CONVMEM_ENCRYPTION_KEYS" in err
