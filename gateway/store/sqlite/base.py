"""The handle of the SQLite backend, shared by its features, and their common pieces.

:class:`SqliteHandle` owns the connections of one database file: one writer
connection carries every write, serialised by a lock and wrapped in
``BEGIN IMMEDIATE ... COMMIT``; a second connection serves reads, which WAL lets run
beside a write. Both locks hand the connection to urgent work first
(:class:`~gateway.store.priority.PriorityLock`). A feature (``tenants.py``,
``deliveries.py``, ...) is a :class:`SqliteFeature` built with the handle: it declares
its tables in ``SCHEMA`` and reaches the database only through
:meth:`SqliteHandle.write` and :meth:`SqliteHandle.read` (or, for a hot batch that
needs no await in between, :meth:`SqliteHandle.transact`: the whole transaction in one
call to the writer's thread). Every public coroutine of a
feature maps SQLite's errors to :class:`~gateway.errors.StoreError` (installed by
:class:`SqliteFeature` itself, so no feature can miss it), whether they come from a
query or from binding its parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import aiosqlite

from gateway.constants import JOB_WEBHOOK_FANOUT
from gateway.errors import StoreError
from gateway.models import Job
from gateway.store.encoding import dumps, us
from gateway.store.lanes import order_at
from gateway.store.mapping import map_public, mapping
from gateway.store.priority import PriorityLock

T = TypeVar("T")

# WAL pages after which a commit checkpoints (SqliteHandle.open says why not 1,000).
WAL_AUTOCHECKPOINT_PAGES = 10_000

# A set of ids passed as one JSON array (``id_list``) and expanded in SQL.
IDS = "(SELECT value FROM json_each(?))"

# What SQLite and its driver raise: sqlite3.Error, and OverflowError for an integer
# wider than SQLite's 64 bits (the Redis backend refuses the same value with an error).
mapped = mapping((sqlite3.Error, OverflowError), "the SQLite store failed")


def id_list(ids: Iterable[str]) -> str:
    """Ids as one JSON array, expanded in SQL with ``json_each``."""
    return json.dumps(list(ids))


class SqliteHandle:
    """The connections of one SQLite file (WAL): what every feature is built with."""

    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        # Urgent work (an absence alert during a broadcast) waits for the transaction in
        # progress only, not for every outcome and plan batch queued before it.
        self._write_lock = PriorityLock()
        self._read_lock = PriorityLock()

    async def open(self, prepare: Callable[[aiosqlite.Connection], Awaitable[None]]) -> None:
        """Open both connections, switch to WAL and ``prepare`` (the schema) on the writer."""
        if self._writer is not None:
            return
        memory = self.path == ":memory:"
        try:
            if not memory:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot open the SQLite store {self.path}: {exc.strerror}") from exc
        try:
            writer = await self._connect()
            self._writer = writer
            await writer.execute("PRAGMA journal_mode = WAL")
            # The writer checkpoints (copies the WAL into the file, two fsyncs) when the
            # WAL passes this many pages, at the end of a commit on its thread. SQLite's
            # 1,000 means a checkpoint every few outcome batches of a broadcast; at
            # 10,000 (40 MB of WAL at 4 KiB pages) each copies a hot page (a queue
            # index's, a table's tail) once for ten times the commits (issue 18). Commits
            # are as durable either way (synchronous = NORMAL: the WAL is the record).
            await writer.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            await prepare(writer)
            if memory:
                # Two connections would see two databases: share one, and its lock.
                self._reader = writer
                self._read_lock = self._write_lock
            else:
                self._reader = await self._connect()
                await self._reader.execute("PRAGMA query_only = ON")
        except BaseException as exc:
            await self.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open the SQLite store {self.path}: {exc}") from exc
            raise

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: no implicit transactions, we say BEGIN ourselves.
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA temp_store = MEMORY")
            await db.execute("PRAGMA cache_size = -32000")
            await db.execute("PRAGMA foreign_keys = OFF")  # apply_directory checks references
        except BaseException:
            await db.close()
            raise
        return db

    async def close(self) -> None:
        """Wait for the running read and write, then close both connections."""
        async with self._write_lock:
            writer, reader = self._writer, self._reader
            self._writer = self._reader = None
            if reader is not None and reader is not writer:
                async with self._read_lock:
                    await reader.close()
            if writer is not None:
                try:
                    await writer.execute("PRAGMA optimize")
                except sqlite3.Error:
                    pass  # only a hint for the query planner; closing matters more
                finally:
                    await writer.close()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction on the writer connection; rolled back on any error."""
        async with self._write_lock:
            db = self._writer
            if db is None:
                raise StoreError("the store is not open")
            try:
                await db.execute("BEGIN IMMEDIATE")
                yield db
                await db.execute("COMMIT")
            except BaseException as exc:
                await settle(db)
                if isinstance(exc, sqlite3.Error):
                    raise StoreError("store write failed") from exc
                raise

    async def transact(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` as one write transaction run whole on the writer's thread: one round
        trip to it instead of one per statement (BEGIN, each statement, COMMIT), for the
        hot path's batches (issue 18). ``work`` may not await; a caller cancelled while
        it runs does not stop it (it commits or rolls back on its own, before any later
        write, since the thread runs calls in order)."""
        async with self._write_lock:
            db = self._writer
            if db is None:
                raise StoreError("the store is not open")
            try:
                # aiosqlite has no public call for this; _execute queues a function to its
                # thread (the one every statement of this connection runs on).
                result: T = await db._execute(  # type: ignore[no-untyped-call]
                    _in_transaction, db._conn, work
                )
            except sqlite3.Error as exc:
                raise StoreError("store write failed") from exc
            return result

    @asynccontextmanager
    async def read(self, *, snapshot: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """The read connection; ``snapshot`` wraps several reads in one transaction."""
        async with self._read_lock:
            db = self._reader
            if db is None:
                raise StoreError("the store is not open")
            try:
                if snapshot:
                    await db.execute("BEGIN")
                yield db
            except sqlite3.Error as exc:
                raise StoreError("store read failed") from exc
            finally:
                if snapshot:
                    await settle(db)


class SqliteFeature:
    """A part of the SQLite store: its tables (``SCHEMA``) and queries on the handle."""

    # CREATE TABLE/INDEX IF NOT EXISTS statements separated by ";", run when opening.
    SCHEMA: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every public coroutine method of a feature maps SQLite errors to StoreError.
        super().__init_subclass__(**kwargs)
        map_public(cls, mapped)

    def __init__(self, db: SqliteHandle) -> None:
        self._db = db


def _in_transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return result


async def _rollback(db: aiosqlite.Connection) -> None:
    # Unconditional: the connection's worker runs calls in order, so this comes after
    # any statement of a cancelled caller. "No transaction is active" is fine too.
    with contextlib.suppress(sqlite3.Error):
        await db.execute("ROLLBACK")


async def settle(db: aiosqlite.Connection) -> None:
    """Roll back and wait for it, even through repeated cancellation, so the lock is
    never released over an open transaction; a cancellation is passed on afterwards."""
    rollback = asyncio.ensure_future(_rollback(db))
    cancelled = False
    while not rollback.done():
        try:
            await asyncio.shield(rollback)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


_INSERT_JOB = (
    "INSERT OR IGNORE INTO jobs (id, tenant_id, kind, ref, due_at, visible_at, leased_until, "
    "attempts, last_error, urgent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _job_rows(jobs: Sequence[Job]) -> list[tuple[Any, ...]]:
    return [
        (
            j.id,
            j.tenant_id,
            j.kind,
            j.ref,
            us(j.due_at),
            order_at(j),  # visible_at: its place in its lane (lanes.order_at)
            us(j.due_at) if j.attempts else None,  # leased_until
            j.attempts,
            j.last_error,
            int(j.urgent),
        )
        for j in jobs
    ]


async def insert_jobs(db: aiosqlite.Connection, jobs: Sequence[Job]) -> None:
    """Queue jobs inside the caller's write transaction (a job that exists stays). A job
    with an attempt counted is stored as claimed, leased until it is due (work handed
    over in its process, gateway/urgent_handoff.py): not waiting in queue_stats."""
    if jobs:
        await db.executemany(_INSERT_JOB, _job_rows(jobs))


def insert_jobs_now(conn: sqlite3.Connection, jobs: Sequence[Job]) -> None:
    """:func:`insert_jobs` inside a :meth:`SqliteHandle.transact` transaction."""
    if jobs:
        conn.executemany(_INSERT_JOB, _job_rows(jobs))


async def feed_change(
    db: aiosqlite.Connection, tenant_id: str, event_type: str, data: dict[str, Any], at: datetime
) -> int | None:
    """Record a change in the webhook feed inside the caller's write transaction (so it
    commits with the fact it reports) and make sure the fan-out job exists; its seq, or
    None (nothing written) when the tenant has no enabled endpoint."""
    stamp = us(at)
    rows = list(
        await db.execute_fetchall(
            "INSERT INTO webhook_feed (tenant_id, type, data, at) "
            "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM webhook_endpoints "
            "WHERE tenant_id = ? AND enabled = 1) RETURNING seq",
            (tenant_id, event_type, dumps(data), stamp, tenant_id),
        )
    )
    if not rows:
        return None
    await db.execute(
        "INSERT OR IGNORE INTO jobs (id, tenant_id, kind, ref, due_at, visible_at, "
        "leased_until, attempts, last_error) VALUES (?, '', ?, '', ?, ?, NULL, 0, NULL)",
        (JOB_WEBHOOK_FANOUT, JOB_WEBHOOK_FANOUT, stamp, stamp),
    )
    return int(rows[0][0])
