"""Staff sign-in links used once and staff sessions ended by a sign-out, in the SQLite
backend (the ``StaffSessionStore`` port).

A used link is a row until its expiry (rows of expired links go at the next use of
any link); a staff member's session generation is one row, written at sign-out.

A composed feature: :class:`SqliteStaffSessions` gets the store's handle by
constructor injection and knows nothing else of the store."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import ClassVar

from gateway.store.encoding import us
from gateway.store.sqlite.base import SqliteFeature


class SqliteStaffSessions(SqliteFeature):
    """The ``StaffSessionStore`` port for the embedded backend."""

    SCHEMA: ClassVar[str] = """
    CREATE TABLE IF NOT EXISTS used_signin_links (
        tenant_id TEXT NOT NULL,
        link_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, link_id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS used_signin_links_by_expiry ON used_signin_links (expires_at);
    CREATE TABLE IF NOT EXISTS staff_sessions (
        tenant_id TEXT NOT NULL,
        staff_id TEXT NOT NULL,
        generation TEXT NOT NULL,
        PRIMARY KEY (tenant_id, staff_id)
    ) WITHOUT ROWID
    """

    async def use_signin_link(
        self, tenant_id: str, link_id: str, now: datetime, expires_at: datetime
    ) -> bool:
        # One write transaction: the single writer makes two uses at once take turns.
        async with self._db.write() as db:
            await db.execute("DELETE FROM used_signin_links WHERE expires_at <= ?", (us(now),))
            cursor = await db.execute(
                "INSERT INTO used_signin_links (tenant_id, link_id, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (tenant_id, link_id, us(expires_at)),
            )
            return cursor.rowcount == 1

    async def staff_session_generation(self, tenant_id: str, staff_id: str) -> str:
        async with self._db.read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT generation FROM staff_sessions WHERE tenant_id = ? AND staff_id = ?",
                    (tenant_id, staff_id),
                )
            )
        return str(rows[0][0]) if rows else ""

    async def end_staff_sessions(self, tenant_id: str, staff_id: str) -> str:
        generation = secrets.token_urlsafe(12)
        async with self._db.write() as db:
            await db.execute(
                "INSERT INTO staff_sessions (tenant_id, staff_id, generation) VALUES (?, ?, ?)"
                " ON CONFLICT (tenant_id, staff_id) DO UPDATE SET generation = excluded.generation",
                (tenant_id, staff_id, generation),
            )
        return generation
