"""SQLite part of scheduled messages (gateway/store/schedules.py)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from gateway.store.encoding import from_us, from_us_opt, us
from gateway.store.schedules import CancelResult, Schedule
from gateway.store.sqlite.base import SqliteFeature


class SqliteSchedules(SqliteFeature):
    """:class:`gateway.store.schedules.Schedules` on the store's handle."""

    SCHEMA: ClassVar[str] = """
CREATE TABLE IF NOT EXISTS schedules (
    tenant_id TEXT NOT NULL, message_id TEXT NOT NULL, send_at INTEGER NOT NULL,
    cancelled_at INTEGER,
    PRIMARY KEY (tenant_id, message_id)
) WITHOUT ROWID
"""

    async def add_schedule(self, schedule: Schedule) -> None:
        async with self._db.write() as db:
            await db.execute(
                "INSERT OR IGNORE INTO schedules (tenant_id, message_id, send_at) VALUES (?, ?, ?)",
                (schedule.tenant_id, schedule.message_id, us(schedule.send_at)),
            )

    async def get_schedule(self, tenant_id: str, message_id: str) -> Schedule | None:
        async with self._db.read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT send_at, cancelled_at FROM schedules "
                    "WHERE tenant_id = ? AND message_id = ?",
                    (tenant_id, message_id),
                )
            )
        if not rows:
            return None
        return Schedule(tenant_id, message_id, from_us(rows[0][0]), from_us_opt(rows[0][1]))

    async def cancel_scheduled(
        self, tenant_id: str, message_id: str, plan_job_id: str, at: datetime
    ) -> CancelResult:
        async with self._db.write() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT cancelled_at FROM schedules WHERE tenant_id = ? AND message_id = ?",
                    (tenant_id, message_id),
                )
            )
            if not rows:
                return CancelResult.unknown
            if rows[0][0] is not None:
                return CancelResult.cancelled
            cursor = await db.execute(
                "DELETE FROM jobs WHERE id = ? AND tenant_id = ? AND attempts = 0 "
                "AND leased_until IS NULL",
                (plan_job_id, tenant_id),
            )
            if cursor.rowcount != 1:
                return CancelResult.started
            await db.execute(
                "UPDATE schedules SET cancelled_at = ? WHERE tenant_id = ? AND message_id = ?",
                (us(at), tenant_id, message_id),
            )
        return CancelResult.cancelled
