"""SQLite table of the phone numbers absence alerts went to (SMS answers are matched
against them across tenants). Rows live two days: an answer counts for 24 hours."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import ClassVar

from gateway.models import AlertPhone
from gateway.store.encoding import from_us, us
from gateway.store.sqlite.base import SqliteFeature

KEEP = timedelta(days=2)


class SqliteAlertPhones(SqliteFeature):
    """The alert-phone part of :class:`gateway.store.Store` on SQLite."""

    SCHEMA: ClassVar[str] = """
    CREATE TABLE IF NOT EXISTS alert_phones (
        phone TEXT NOT NULL, tenant_id TEXT NOT NULL, message_id TEXT NOT NULL,
        person_id TEXT NOT NULL, at INTEGER NOT NULL,
        PRIMARY KEY (phone, tenant_id, message_id, person_id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS alert_phones_at ON alert_phones (at)
    """

    async def add_alert_phones(self, rows: Sequence[AlertPhone]) -> None:
        if not rows:
            return
        async with self._db.write() as db:
            await db.execute(
                "DELETE FROM alert_phones WHERE at < ?", (us(max(r.at for r in rows) - KEEP),)
            )
            await db.executemany(
                "INSERT OR IGNORE INTO alert_phones (phone, tenant_id, message_id, person_id, at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(r.phone, r.tenant_id, r.message_id, r.person_id, us(r.at)) for r in rows],
            )

    async def alert_phones(self, phone: str, since: datetime) -> list[AlertPhone]:
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT phone, tenant_id, message_id, person_id, at FROM alert_phones "
                "WHERE phone = ? AND at >= ? ORDER BY at, tenant_id, message_id, person_id",
                (phone, us(since)),
            )
        return [
            AlertPhone(
                phone=r[0], tenant_id=r[1], message_id=r[2], person_id=r[3], at=from_us(r[4])
            )
            for r in rows
        ]
