"""Shared pieces of the SQLite backend, so features can live in their own mixin modules.

``SqliteStore`` (in ``sqlite/store.py``) owns the connections. A feature (tracking,
webhooks, absence, ...) adds its tables and queries in a module of its own as a
mixin subclassing :class:`SqliteParts`; its ``SCHEMA`` is created in ``open()``
with the rest, and it reaches the database through ``_write()`` and ``_read()``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, ClassVar

import aiosqlite

from gateway.constants import JOB_WEBHOOK_FANOUT
from gateway.store.encoding import dumps, us
from gateway.store.mapping import map_public, mapping


def id_list(ids: Iterable[str]) -> str:
    """Ids as one JSON array, expanded in SQL with ``json_each``."""
    return json.dumps(list(ids))


# What SQLite and its driver raise: sqlite3.Error, and OverflowError for an integer
# wider than SQLite's 64 bits (the Redis backend refuses the same value with an error).
_mapped = mapping((sqlite3.Error, OverflowError), "the SQLite store failed")


class SqliteParts:
    """Base of SqliteStore's feature mixins: their schema and database access."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every public coroutine method of the backend maps SQLite errors to StoreError.
        super().__init_subclass__(**kwargs)
        map_public(cls, _mapped)

    # CREATE TABLE/INDEX IF NOT EXISTS statements separated by ";", run in open().
    SCHEMA: ClassVar[str] = ""

    def _write(self) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, rollback on error)."""
        raise NotImplementedError  # provided by SqliteStore

    def _read(self, *, snapshot: bool = False) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        """The read connection; ``snapshot`` wraps several reads in one transaction."""
        raise NotImplementedError  # provided by SqliteStore

    @classmethod
    def feature_schemas(cls) -> list[str]:
        """The SCHEMA of every mixin in the class hierarchy, base classes first."""
        return [k.__dict__["SCHEMA"] for k in reversed(cls.__mro__) if k.__dict__.get("SCHEMA")]


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
