"""SqliteStore: the embedded default, a single file in WAL mode.

The standard library's ``sqlite3`` runs on one worker thread per store; each
contract call is one hop to that thread (its "round trip") and runs as one
transaction there. ``BEGIN IMMEDIATE`` takes SQLite's write lock up front, so
appends from several processes sharing the file serialise instead of deadlocking.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Self, TypeVar

import orjson

from convmem.changes import Appended, Created, Deleted, Removed, Replaced, Summarised, Updated
from convmem.clocks import WallClock, utc_now
from convmem.errors import ConfigurationError, StoreError, StoreUnavailableError
from convmem.records import (
    THREAD_COLUMNS,
    TURN_COLUMNS,
    from_micros,
    stored_turn,
    summary_from_values,
    thread_from_values,
    to_micros,
    turn_from_values,
    turn_params,
)
from convmem.stores import common
from convmem.stores.base import MetadataSwap, NewThread, Resealed, SnapshotStore, Unannounced
from convmem.stores.migrations import migrations_for, pending
from convmem.validation import (
    validate_count,
    validate_fork_point,
    validate_seq_or_zero,
    validate_summary_point,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime

    from convmem.limits import ThreadLimits
    from convmem.models import Thread, ThreadPage, ThreadSummary, Turn

T = TypeVar("T")

_THREAD_SELECT = ", ".join(THREAD_COLUMNS)
_TURN_SELECT = ", ".join(TURN_COLUMNS)
_TURN_INSERT = (
    "INSERT INTO convmem_turns (thread_id, seq, role, content, tool_name, model_provider,"
    " model_name, files, images, metadata, key, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SUMMARY_UPSERT = (
    "INSERT OR REPLACE INTO convmem_summaries (thread_id, seq, role, content, tool_name,"
    " model_provider, model_name, files, images, metadata, key, created_at, version)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


_HOUR_US = 3_600_000_000  # an hour in microseconds: how long a fenced record is kept


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


class SqliteStore(SnapshotStore):
    """The embedded store: ``sqlite:///relative/path.db``, ``sqlite:////abs/path.db``."""

    scheme = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        limits: ThreadLimits | None = None,
        clock: WallClock = utc_now,
        busy_timeout_ms: int = 10_000,
    ) -> None:
        super().__init__(limits=limits, clock=clock)
        self.path = str(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.round_trips = 0  # hops to the worker thread: the embedded equivalent of a round trip
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        scheme, sep, rest = url.partition("://")
        if scheme.lower() != "sqlite" or not sep or not rest.startswith("/") or rest == "/":
            raise ConfigurationError(
                f"invalid SQLite URL {url!r}: use sqlite:///relative/file.db or sqlite:////abs/file.db"
            )
        return cls(rest[1:], **options)

    # -- lifetime --------------------------------------------------------------

    async def open(self, *, migrate: bool = True) -> None:
        if self._conn is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convmem-sqlite")
        try:
            self._conn = await self._run(self._connect)
            if migrate:
                await self.migrate()
        except BaseException:
            await self.aclose()
            raise

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # durable in WAL mode up to a power cut
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StoreUnavailableError(
                f"cannot open SQLite database {self.path!r}: {exc}"
            ) from exc
        return conn

    async def aclose(self) -> None:
        conn, executor = self._conn, self._executor
        self._conn = self._executor = None
        if conn is not None and executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        if executor is not None:
            executor.shutdown(wait=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise StoreError("the SQLite store is not open: use 'async with' or call open() first")
        self.round_trips += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailableError(f"SQLite {self.path!r}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite {self.path!r}: {exc}") from exc

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the SQLite store is closed")
        return self._conn

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in one write transaction on the worker thread."""
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    # -- schema ----------------------------------------------------------------

    async def migrate(self) -> list[str]:
        def apply(conn: sqlite3.Connection) -> list[str]:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS convmem_schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
            )
            applied = {
                row[0] for row in conn.execute("SELECT version FROM convmem_schema_migrations")
            }
            names = []
            for migration in pending(migrations_for("sqlite"), applied):
                # executescript would commit our transaction; run statements one by one.
                for statement in _split_sql(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO convmem_schema_migrations VALUES (?, ?, ?)",
                    (migration.version, migration.name, to_micros(self.clock())),
                )
                names.append(migration.name)
            return names

        return await self._run(lambda: self._transaction(apply))

    async def ping(self) -> None:
        await self._run(lambda: self._db().execute("SELECT 1").fetchone())

    # -- reads -----------------------------------------------------------------

    async def _read(
        self, thread_id: str, owner: str | None, since: int
    ) -> tuple[dict[str, Any], tuple[Turn, ...]] | None:
        return await self._run(lambda: self._read_on_worker(thread_id, owner, since))

    def _read_on_worker(
        self, thread_id: str, owner: str | None, since: int
    ) -> tuple[dict[str, Any], tuple[Turn, ...]] | None:
        conn = self._db()
        # One read transaction, so the header and the turns are one snapshot.
        conn.execute("BEGIN")
        try:
            return _snapshot(conn, thread_id, owner, since, self.clock())
        finally:
            conn.execute("COMMIT")

    async def list(
        self, *, owner: str | None, limit: int = 50, cursor: str | None = None
    ) -> ThreadPage:
        return await self._page("owner IS ?", [owner], limit, cursor)

    async def list_every_owner(self, *, limit: int = 50, cursor: str | None = None) -> ThreadPage:
        return await self._page("1", [], limit, cursor)

    async def find_any_owner(self, thread_id: str) -> ThreadSummary | None:
        now = to_micros(self.clock())

        def find() -> Any:
            return (
                self._db()
                .execute(
                    f"SELECT {_THREAD_SELECT} FROM convmem_threads WHERE id = ? AND expires_at > ?",
                    (thread_id, now),
                )
                .fetchone()
            )

        row = await self._run(find)
        return None if row is None else summary_from_values(_header(row))

    async def _page(
        self, condition: str, values: Sequence[Any], limit: int, cursor: str | None
    ) -> ThreadPage:
        common.check_list_limit(limit)
        after = common.decode_cursor(cursor) if cursor is not None else None

        def page() -> list[Any]:
            sql = (
                f"SELECT {_THREAD_SELECT} FROM convmem_threads WHERE {condition} AND expires_at > ?"
            )
            params: list[Any] = [*values, to_micros(self.clock())]
            if after is not None:
                sql += " AND (updated_at, id) < (?, ?)"
                params += [to_micros(after[0]), after[1]]
            sql += " ORDER BY updated_at DESC, id DESC LIMIT ?"
            params.append(limit + 1)
            return self._db().execute(sql, params).fetchall()

        rows = await self._run(page)
        return common.page_of([summary_from_values(_header(r)) for r in rows], limit)

    # -- writes ----------------------------------------------------------------

    async def create(self, thread: NewThread, turns: Sequence[Turn] = ()) -> Created:
        if len(turns) > self.limits.max_turns:
            raise common.full(
                thread.id, version=0, fresh=len(turns), max_turns=self.limits.max_turns
            )
        now = self.clock()
        expires = now + self.limits.ttl

        def insert(conn: sqlite3.Connection) -> None:
            _insert_thread(conn, thread, len(turns), None, now, expires)
            conn.executemany(
                _TURN_INSERT, [_turn_row(thread.id, seq, t, now) for seq, t in enumerate(turns, 1)]
            )

        await self._run(lambda: self._transaction(insert))
        stored = tuple(stored_turn(turn, seq, now) for seq, turn in enumerate(turns, 1))
        return Created(_new_thread(thread, stored, len(turns), None, now, expires))

    async def append(
        self,
        thread_id: str,
        turns: Sequence[Turn],
        *,
        owner: str | None,
        seqs_bound: bool = False,
    ) -> Appended:
        now = self.clock()
        expires = now + self.limits.ttl
        max_turns = self.limits.max_turns

        def write(conn: sqlite3.Connection) -> Appended:
            version, count, *_ = self._writable(conn, thread_id, owner, now)
            keys = [t.key for t in turns if t.key is not None]
            existing: list[Turn] = []
            if keys:
                marks = ",".join("?" * len(keys))
                existing = [
                    _turn(r)
                    for r in conn.execute(
                        f"SELECT {_TURN_SELECT} FROM convmem_turns"
                        f" WHERE thread_id = ? AND key IN ({marks})",
                        (thread_id, *keys),
                    )
                ]
            known = {t.key: t for t in existing}
            for turn in turns:
                prior = known.get(turn.key) if turn.key is not None else None
                if prior is not None and (prior.role, prior.content) != (turn.role, turn.content):
                    raise common.key_conflict(thread_id, turn.key)
            fresh = [t for t in turns if t.key is None or t.key not in known]
            if seqs_bound:
                common.check_seqs(thread_id, fresh, first=version + 1, version=version)
            if count + len(fresh) > max_turns:
                raise common.full(thread_id, version=count, fresh=len(fresh), max_turns=max_turns)
            conn.executemany(
                _TURN_INSERT,
                [_turn_row(thread_id, version + i, t, now) for i, t in enumerate(fresh, 1)],
            )
            conn.execute(
                "UPDATE convmem_threads SET version = ?, turn_count = ?, updated_at = ?,"
                " expires_at = ? WHERE id = ?",
                (
                    version + len(fresh),
                    count + len(fresh),
                    to_micros(now),
                    to_micros(expires),
                    thread_id,
                ),
            )
            stored = common.appended_turns(turns, existing, base=version, now=now)
            return Appended(thread_id, version + len(fresh), len(fresh), stored, now, expires)

        return await self._run(lambda: self._transaction(write))

    def _writable(
        self, conn: sqlite3.Connection, thread_id: str, owner: str | None, now: datetime
    ) -> _Writable:
        """The header of a thread a write may change, or the refusal."""
        row = conn.execute(
            "SELECT version, turn_count, rewritten_at, updated_at, expires_at"
            " FROM convmem_threads WHERE id = ? AND owner IS ?",
            (thread_id, owner),
        ).fetchone()
        if row is None:
            raise common.not_found(thread_id)
        if row[4] <= to_micros(now):
            raise common.expired(thread_id)
        return _Writable(row[0], row[1], row[2], from_micros(row[3]), from_micros(row[4]))

    async def pop(self, thread_id: str, *, owner: str | None, count: int = 1) -> Removed:
        validate_count(count, "count")
        return await self._remove(thread_id, owner, count)

    async def clear(self, thread_id: str, *, owner: str | None) -> Removed:
        return await self._remove(thread_id, owner, None)

    async def _remove(self, thread_id: str, owner: str | None, count: int | None) -> Removed:
        """Pop the newest ``count`` turns, or clear them all (``None``)."""
        now = self.clock()
        expires = now + self.limits.ttl

        def remove(conn: sqlite3.Connection) -> Removed:
            header = self._writable(conn, thread_id, owner, now)
            version, turn_count = header.version, header.turn_count
            if count is None:
                seqs = [
                    int(r[0])
                    for r in conn.execute(
                        "DELETE FROM convmem_turns WHERE thread_id = ? RETURNING seq",
                        (thread_id,),
                    )
                ]
                removed: tuple[Turn, ...] = ()
            else:
                removed = tuple(
                    reversed(
                        [
                            _turn(r)
                            for r in conn.execute(
                                f"SELECT {_TURN_SELECT} FROM convmem_turns WHERE thread_id = ?"
                                " ORDER BY seq DESC LIMIT ?",
                                (thread_id, count),
                            )
                        ]
                    )
                )
                seqs = [t.seq for t in removed]
                if seqs:
                    conn.execute(
                        "DELETE FROM convmem_turns WHERE thread_id = ? AND seq >= ?",
                        (thread_id, seqs[0]),
                    )
            if not seqs:
                return Removed(thread_id, version, (), (), header.updated_at, header.expires_at)
            # a summary that covered a removed turn no longer stands for them
            conn.execute(
                "DELETE FROM convmem_summaries WHERE thread_id = ? AND seq >= ?",
                (thread_id, min(seqs)),
            )
            conn.execute(
                "UPDATE convmem_threads SET version = ?, rewritten_at = ?, turn_count = ?,"
                " updated_at = ?, expires_at = ? WHERE id = ?",
                (
                    version + 1,
                    version + 1,
                    turn_count - len(seqs),
                    to_micros(now),
                    to_micros(expires),
                    thread_id,
                ),
            )
            return Removed(thread_id, version + 1, tuple(sorted(seqs)), removed, now, expires)

        return await self._run(lambda: self._transaction(remove))

    async def save_summary(
        self,
        thread_id: str,
        summary: Turn,
        *,
        covers_to_seq: int,
        base_version: int,
        owner: str | None,
    ) -> Summarised:
        validate_summary_point(covers_to_seq, base_version)
        now = self.clock()

        def save(conn: sqlite3.Connection) -> Summarised:
            header = self._writable(conn, thread_id, owner, now)
            version = header.version
            covered = conn.execute(
                "SELECT 1 FROM convmem_turns WHERE thread_id = ? AND seq = ?",
                (thread_id, covers_to_seq),
            ).fetchone()
            if header.rewritten_at > base_version or base_version > version or covered is None:
                raise common.stale_summary(thread_id, covers_to_seq)
            conn.execute(
                _SUMMARY_UPSERT, (*_turn_row(thread_id, covers_to_seq, summary, now), version + 1)
            )
            conn.execute(
                "UPDATE convmem_threads SET version = ?, rewritten_at = ? WHERE id = ?",
                (version + 1, version + 1, thread_id),
            )
            return Summarised(
                thread_id,
                version + 1,
                stored_turn(summary, covers_to_seq, now),
                header.updated_at,
                header.expires_at,
            )

        return await self._run(lambda: self._transaction(save))

    async def update(
        self,
        thread_id: str,
        metadata: Mapping[str, Any],
        *,
        owner: str | None,
        base_version: int | None = None,
    ) -> Updated:
        now = self.clock()

        def write(conn: sqlite3.Connection) -> Updated:
            header = self._writable(conn, thread_id, owner, now)
            version = header.version
            if base_version is not None and version != base_version:
                raise common.stale_update(thread_id, version)
            conn.execute(
                "UPDATE convmem_threads SET version = ?, rewritten_at = ?, metadata = ?,"
                " updated_at = ? WHERE id = ?",
                (version + 1, version + 1, _json(dict(metadata)), to_micros(now), thread_id),
            )
            return Updated(thread_id, version + 1, metadata, now, header.expires_at)

        return await self._run(lambda: self._transaction(write))

    async def rewrite(
        self,
        thread_id: str,
        turns: Sequence[Turn],
        *,
        after_seq: int,
        owner: str | None,
        metadata: Mapping[str, Any] | None = None,
        seqs_bound: bool = False,
    ) -> Replaced:
        validate_seq_or_zero(after_seq, "after_seq")
        now = self.clock()
        expires = now + self.limits.ttl
        max_turns = self.limits.max_turns

        def write(conn: sqlite3.Connection) -> Replaced:
            version, count, *_ = self._writable(conn, thread_id, owner, now)
            if (
                after_seq
                and not conn.execute(
                    "SELECT 1 FROM convmem_turns WHERE thread_id = ? AND seq = ?",
                    (thread_id, after_seq),
                ).fetchone()
            ):
                raise common.no_turn(thread_id, after_seq)
            removed = conn.execute(
                "DELETE FROM convmem_turns WHERE thread_id = ? AND seq > ?", (thread_id, after_seq)
            ).rowcount
            conn.execute(
                "DELETE FROM convmem_summaries WHERE thread_id = ? AND seq > ?",
                (thread_id, after_seq),
            )
            keys = [t.key for t in turns if t.key is not None]
            if keys:
                taken = conn.execute(
                    f"SELECT key FROM convmem_turns WHERE thread_id = ?"
                    f" AND key IN ({','.join('?' * len(keys))})",
                    (thread_id, *keys),
                ).fetchone()
                if taken is not None:
                    raise common.key_conflict(thread_id, taken[0])
            kept = count - removed
            if kept + len(turns) > max_turns:
                raise common.full(thread_id, version=kept, fresh=len(turns), max_turns=max_turns)
            if seqs_bound:
                common.check_seqs(thread_id, turns, first=version + 2, version=version)
            conn.executemany(
                _TURN_INSERT,
                [_turn_row(thread_id, version + 1 + i, t, now) for i, t in enumerate(turns, 1)],
            )
            conn.execute(
                "UPDATE convmem_threads SET version = ?, rewritten_at = ?, turn_count = ?,"
                " metadata = coalesce(?, metadata), updated_at = ?, expires_at = ? WHERE id = ?",
                (
                    version + 1 + len(turns),
                    version + 1,
                    kept + len(turns),
                    None if metadata is None else _json(dict(metadata)),
                    to_micros(now),
                    to_micros(expires),
                    thread_id,
                ),
            )
            found = _snapshot(conn, thread_id, owner, 0, now)
            assert found is not None  # written in this transaction
            return Replaced(thread_from_values(*found))

        return await self._run(lambda: self._transaction(write))

    async def fork(self, thread: NewThread, *, at_seq: int | None = None) -> Created:
        validate_fork_point(at_seq)
        parent_id = thread.parent_id
        if parent_id is None:
            raise ValueError("a fork needs the parent's id in NewThread.parent_id")
        now = self.clock()
        expires = now + self.limits.ttl

        def insert(conn: sqlite3.Connection) -> int:
            self._writable(conn, parent_id, thread.owner, now)
            if at_seq is None:
                cut = conn.execute(
                    "SELECT coalesce(max(seq), 0) FROM convmem_turns WHERE thread_id = ?",
                    (parent_id,),
                ).fetchone()[0]
            else:
                cut = at_seq
                if (
                    at_seq
                    and not conn.execute(
                        "SELECT 1 FROM convmem_turns WHERE thread_id = ? AND seq = ?",
                        (parent_id, at_seq),
                    ).fetchone()
                ):
                    raise common.no_turn(parent_id, at_seq)
            _insert_thread(conn, thread, 0, int(cut), now, expires)
            return int(cut)

        cut = await self._run(lambda: self._transaction(insert))
        return Created(_new_thread(thread, (), 0, cut, now, expires))

    async def delete(self, thread_id: str, *, owner: str | None) -> Deleted | None:
        def remove(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "DELETE FROM convmem_threads WHERE id = ? AND owner IS ?", (thread_id, owner)
            )
            return cursor.rowcount > 0

        removed = await self._run(lambda: self._transaction(remove))
        return Deleted(thread_id) if removed else None

    async def record_unannounced(self, thread_id: str, version: int) -> None:
        now = to_micros(self.clock())

        def record(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM convmem_unannounced WHERE fenced_at < ?", (now - _HOUR_US,))
            conn.execute(
                "INSERT OR IGNORE INTO convmem_unannounced (thread_id, version, recorded_at)"
                " VALUES (?, ?, ?)",
                (thread_id, version, now),
            )

        await self._run(lambda: self._transaction(record))

    async def unannounced(self, *, fenced_within: float) -> tuple[Unannounced, ...]:
        since = to_micros(self.clock()) - int(fenced_within * 1_000_000)

        def read() -> list[Any]:
            return (
                self._db()
                .execute(
                    "SELECT thread_id, version, fenced_at IS NOT NULL FROM convmem_unannounced"
                    " WHERE fenced_at IS NULL OR fenced_at > ?",
                    (since,),
                )
                .fetchall()
            )

        return tuple((str(i), int(v), bool(f)) for i, v, f in await self._run(read))

    async def mark_fenced(self, writes: Sequence[tuple[str, int]]) -> None:
        now = to_micros(self.clock())

        def mark(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE convmem_unannounced SET fenced_at = ?"
                " WHERE thread_id = ? AND version = ? AND fenced_at IS NULL",
                [(now, thread_id, version) for thread_id, version in writes],
            )

        await self._run(lambda: self._transaction(mark))

    async def restore(self, thread: Thread, *, replace: bool = False) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            if replace:
                conn.execute("DELETE FROM convmem_threads WHERE id = ?", (thread.id,))
            inserted = conn.execute(
                "INSERT OR IGNORE INTO convmem_threads (id, version, turn_count, tool_name,"
                " parent_id, parent_seq, owner, metadata, created_at, updated_at, expires_at,"
                " rewritten_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    thread.id,
                    thread.version,
                    len(thread.turns),
                    thread.tool_name,
                    thread.parent_id,
                    thread.parent_seq,
                    thread.owner,
                    _json(dict(thread.metadata)),
                    to_micros(thread.created_at),
                    to_micros(thread.updated_at),
                    to_micros(thread.expires_at),
                    thread.version,
                ),
            ).rowcount
            if not inserted:
                return False
            conn.executemany(
                _TURN_INSERT,
                [
                    _turn_row(thread.id, t.seq, t, t.created_at or thread.created_at)
                    for t in thread.turns
                ],
            )
            summary = thread.summary
            if summary is not None:
                when = summary.created_at or thread.updated_at
                conn.execute(
                    _SUMMARY_UPSERT,
                    (*_turn_row(thread.id, summary.seq, summary, when), thread.version),
                )
            return True

        return await self._run(lambda: self._transaction(write))

    async def sealing_keys(
        self, current: str | None, known: Sequence[str], *, only: bool = False
    ) -> tuple[str, ...]:
        now = to_micros(self.clock())

        def record(conn: sqlite3.Connection) -> tuple[str, ...]:
            recorded = {row[0] for row in conn.execute("SELECT key_id FROM convmem_sealing_keys")}
            if current is not None and (not recorded or recorded & set(known)):
                conn.execute(
                    "INSERT OR IGNORE INTO convmem_sealing_keys (key_id, recorded_at)"
                    " VALUES (?, ?)",
                    (current, now),
                )
                if only:
                    conn.execute("DELETE FROM convmem_sealing_keys WHERE key_id <> ?", (current,))
                recorded = {current} if only else recorded | {current}
            return tuple(sorted(recorded))

        return await self._run(lambda: self._transaction(record))

    async def purge_expired(self) -> int:
        now = to_micros(self.clock())

        def purge(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM convmem_threads WHERE expires_at <= ?", (now,)
            ).rowcount

        return await self._run(lambda: self._transaction(purge))

    async def scan(self, *, after: str | None, limit: int) -> tuple[tuple[str, str | None], ...]:
        common.check_list_limit(limit)

        def scan(conn: sqlite3.Connection) -> tuple[tuple[str, str | None], ...]:
            return tuple(
                (str(row[0]), row[1])
                for row in conn.execute(
                    "SELECT id, owner FROM convmem_threads WHERE ? IS NULL OR id > ?"
                    " ORDER BY id LIMIT ?",
                    (after, after, limit),
                )
            )

        return await self._run(lambda: scan(self._db()))

    async def reseal(
        self,
        thread_id: str,
        turns: Sequence[Resealed],
        metadata: MetadataSwap | None = None,
    ) -> int:
        rows = [(r.summary, (*_payload(r.turn), thread_id, r.turn.seq, r.expected)) for r in turns]

        def reseal(conn: sqlite3.Connection) -> int:
            changed = 0
            for summary, row in rows:
                table = "convmem_summaries" if summary else "convmem_turns"
                changed += conn.execute(
                    f"UPDATE {table} SET content = ?, tool_name = ?, model_provider = ?,"
                    " model_name = ?, files = ?, images = ?, metadata = ?"
                    " WHERE thread_id = ? AND seq = ? AND content = ?",
                    row,
                ).rowcount
            if metadata is not None:
                found = conn.execute(
                    "SELECT metadata FROM convmem_threads WHERE id = ?", (thread_id,)
                ).fetchone()
                if found is not None and orjson.loads(found[0]) == dict(metadata[0]):
                    changed += conn.execute(
                        "UPDATE convmem_threads SET metadata = ? WHERE id = ?",
                        (_json(dict(metadata[1])), thread_id),
                    ).rowcount
            return changed

        return await self._run(lambda: self._transaction(reseal))


class _Writable(NamedTuple):
    """What writes read of a thread's header before changing it."""

    version: int
    turn_count: int
    rewritten_at: int
    updated_at: datetime
    expires_at: datetime


def _snapshot(
    conn: sqlite3.Connection, thread_id: str, owner: str | None, since: int, now: datetime
) -> tuple[dict[str, Any], tuple[Turn, ...]] | None:
    """The live thread's header (with its summary) and the turns appended after ``since``
    (every turn, ``whole``, when a pop, clear or summary came after it), inside the
    caller's transaction."""
    row = conn.execute(
        f"SELECT {_THREAD_SELECT}, rewritten_at FROM convmem_threads"
        " WHERE id = ? AND owner IS ? AND expires_at > ?",
        (thread_id, owner, to_micros(now)),
    ).fetchone()
    if row is None:
        return None
    header = _header(row[:-1])
    # Turns removed after `since`: the reader's copy cannot be extended, send all.
    whole = since < row[-1] or since > header["version"]
    header["whole"] = whole
    rows = conn.execute(
        f"SELECT {_TURN_SELECT} FROM convmem_turns WHERE thread_id = ? AND seq > ? ORDER BY seq",
        (thread_id, 0 if whole else since),
    ).fetchall()
    summary = conn.execute(
        f"SELECT {_TURN_SELECT} FROM convmem_summaries WHERE thread_id = ?", (thread_id,)
    ).fetchone()
    header["summary"] = None if summary is None else _turn(summary)
    return header, tuple(_turn(r) for r in rows)


def _insert_thread(
    conn: sqlite3.Connection,
    thread: NewThread,
    turn_count: int,
    parent_seq: int | None,
    now: datetime,
    expires: datetime,
) -> None:
    """Insert a new thread's row (version = its first turns' count); a taken id is refused."""
    try:
        conn.execute(
            "INSERT INTO convmem_threads (id, version, turn_count, tool_name, parent_id,"
            " parent_seq, owner, metadata, created_at, updated_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                thread.id,
                turn_count,
                turn_count,
                thread.tool_name,
                thread.parent_id,
                parent_seq,
                thread.owner,
                _json(dict(thread.metadata)),
                to_micros(now),
                to_micros(now),
                to_micros(expires),
            ),
        )
    except sqlite3.IntegrityError:
        raise common.exists(thread.id) from None


def _new_thread(
    thread: NewThread,
    turns: tuple[Turn, ...],
    version: int,
    parent_seq: int | None,
    now: datetime,
    expires: datetime,
) -> Thread:
    """The thread ``_insert_thread`` stored, built without reading it back."""
    header = {
        "id": thread.id,
        "tool_name": thread.tool_name,
        "parent_id": thread.parent_id,
        "owner": thread.owner,
        "metadata": thread.metadata,
        "created_at": now,
        "updated_at": now,
        "expires_at": expires,
        "version": version,
        "parent_seq": parent_seq,
    }
    return thread_from_values(header, turns)


def _header(row: Sequence[Any]) -> dict[str, Any]:
    header = dict(zip(THREAD_COLUMNS, row, strict=True))
    header["metadata"] = orjson.loads(header["metadata"])
    for name in ("created_at", "updated_at", "expires_at"):
        header[name] = from_micros(header[name])
    return header


def _turn(row: Sequence[Any]) -> Turn:
    seq, role, content, tool, provider, model, files, images, metadata, key, created = row
    return turn_from_values(
        (
            seq,
            role,
            content,
            tool,
            provider,
            model,
            orjson.loads(files),
            orjson.loads(images),
            orjson.loads(metadata),
            key,
            from_micros(created),
        )
    )


def _turn_row(thread_id: str, seq: int, turn: Turn, now: datetime) -> tuple[Any, ...]:
    return (thread_id, seq, turn.role, *_payload(turn), turn.key, to_micros(now))


def _payload(turn: Turn) -> tuple[Any, ...]:
    """The columns from ``content`` to ``metadata``: what sealing replaces."""
    p = turn_params(turn)
    return (
        p["content"],
        p["tool_name"],
        p["model_provider"],
        p["model_name"],
        _json(p["files"]),
        _json(p["images"]),
        _json(p["metadata"]),
    )


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements; comments never contain ';' in our files."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
